"""`ragloop adapters list | show | use | merge | export | rm` on one trained tiny adapter."""

import json
import shutil
import warnings

import pytest
from test_ask import indexed  # noqa: F401  (fixture: a tiny index for `ask`)
from test_train import one_line_error, run, tiny, write
from tiny_models import tiny_causal_lm

from ragloop.core.pipeline.ask import ADAPTER_SETTING
from ragloop.core.pipeline.training import TrainSettings, train
from ragloop.core.workspace import Workspace


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An adapter folder trained once for the module (3 dpo steps on the tiny model)."""
    home = tmp_path_factory.mktemp("trained-home")
    ws = Workspace(home)
    data = write(tmp_path_factory.mktemp("data") / "p.jsonl", "pairs")
    result = train(ws, data=data, options=[f"model={tiny_causal_lm()}", "max_length=64"],
                   settings=TrainSettings(max_steps=3, learning_rate=1e-2), name="tuned")
    ws.close()
    return result.adapter_dir


@pytest.fixture
def ws(trained, ragloop_home):
    workspace = Workspace(ragloop_home)
    shutil.copytree(trained, workspace.adapters_dir / "tuned")
    yield workspace
    workspace.close()


def test_list_and_show(ws):
    out = run("adapters", "list").output
    assert out.startswith("  tuned  dpo  lora  base ") and "steps 3" in out
    meta = json.loads(run("adapters", "show", "tuned").output)
    assert meta["lineage"]["comparison_ids"] == [f"C{i}" for i in range(8)]
    assert len(meta["dataset_hash"]) == 64 and meta["metrics"]["global_step"] == 3
    one_line_error(run("adapters", "show", "nope", ok=False), "no adapter named 'nope'", "tuned")


def test_list_aligns_its_columns(ws):
    folder = ws.adapters_dir / "a-much-longer-name"
    folder.mkdir()
    (folder / "ragloop-adapter.json").write_text(json.dumps(
        {"name": folder.name, "kind": "lora", "method": "reward", "base_model_id": "x/y",
         "metrics": {"global_step": 120, "final_loss": 0.5}, "created_at": "9"}))
    lines = run("adapters", "list").output.splitlines()
    assert [line.split()[0] for line in lines] == ["tuned", "a-much-longer-name"]
    assert lines[0].index(" dpo ") == lines[1].index(" reward "), lines
    for field in (" lora ", " base ", " steps ", " loss "):
        assert lines[0].index(field) == lines[1].index(field), (field, lines)


def test_a_name_means_the_workspace_adapter_and_a_path_the_folder(ws, tmp_path, monkeypatch):
    from ragloop.core.errors import RagloopError
    from ragloop.core.pipeline.adapters import find_adapter
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ws.adapters_dir / "tuned", tmp_path / "tuned")
    assert find_adapter(ws, "tuned")["path"] == str(ws.adapters_dir / "tuned")
    assert find_adapter(ws, "./tuned")["path"] == str(tmp_path / "tuned")
    assert find_adapter(ws, str(tmp_path / "tuned"))["path"] == str(tmp_path / "tuned")
    with pytest.raises(RagloopError, match="no adapter named 'nope'; adapters: tuned"):
        find_adapter(ws, "nope")


def test_use_makes_ask_pick_the_adapter_and_none_clears_it(ws, indexed):  # noqa: F811
    run("adapters", "use", "tuned", *tiny())
    assert ws.get_setting(ADAPTER_SETTING) == "tuned"
    assert run("adapters", "list").output.startswith("* tuned")
    answer = json.loads(run("ask", "max widgets?", *tiny(), "--max-new-tokens", "3",
                            "--json").stdout)
    assert answer["adapter"] == str(ws.adapters_dir / "tuned")
    run("adapters", "use", "--none")
    answer = json.loads(run("ask", "max widgets?", *tiny(), "--max-new-tokens", "3",
                            "--json").stdout)
    assert answer["adapter"] is None


def test_an_adapter_for_another_base_model_is_refused(ws):
    other = ["-o", f"model={tiny_causal_lm(seed=1)}"]
    one_line_error(run("adapters", "use", "tuned", *other, ok=False), "was trained on")
    # The default model is not even loaded to say so.
    one_line_error(run("adapters", "use", "tuned", ok=False), "not on the default model",
                   f"-o model={tiny_causal_lm()}")
    assert not (ws.models_dir / "SmolLM2-135M-Instruct").exists()
    one_line_error(run("adapters", "merge", "tuned", "--out", ws.home / "m", *other, ok=False),
                   "was trained on")
    assert ws.get_setting(ADAPTER_SETTING) is None and not (ws.home / "m").exists()


def test_merge_writes_a_model_with_the_same_logits_as_base_plus_adapter(ws, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    run("adapters", "merge", "tuned", "--out", tmp_path / "merged", *tiny())
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    assert list((tmp_path / "merged").glob("*.safetensors"))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_causal_lm())
    with warnings.catch_warnings():       # peft calls a deprecated transformers alias
        warnings.simplefilter("ignore", FutureWarning)
        with_adapter = PeftModel.from_pretrained(base, ws.adapters_dir / "tuned").eval()
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        expected, got = with_adapter(ids).logits, merged(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_causal_lm()).eval()(ids).logits
    assert torch.allclose(expected, got, atol=1e-5)
    assert not torch.allclose(plain, got, atol=1e-4)     # the adapter did change something
    one_line_error(run("adapters", "merge", "tuned", "--out", tmp_path / "merged", *tiny(),
                       ok=False), "already exists")


def test_export_copies_the_folder_and_rm_removes_it(ws, tmp_path):
    run("adapters", "use", "tuned", *tiny())
    run("adapters", "export", "tuned", "--out", tmp_path / "copy")
    names = sorted(p.name for p in (tmp_path / "copy").iterdir())
    assert names == sorted(p.name for p in (ws.adapters_dir / "tuned").iterdir())
    assert "ragloop-adapter.json" in names and "adapter_model.safetensors" in names
    assert run("adapters", "rm", "tuned").output == "Removed 'tuned'; no default adapter now.\n"
    assert list(ws.adapters_dir.iterdir()) == [] and ws.get_setting(ADAPTER_SETTING) is None
    assert run("adapters", "list").output.startswith("No adapters yet")


def test_training_onto_an_existing_name_is_refused(ws, tmp_path):
    data = write(tmp_path / "p.jsonl", "pairs")
    one_line_error(run("train", "--data", data, "--name", "tuned", *tiny(), ok=False),
                   "an adapter named 'tuned' exists")


def test_ask_refuses_an_adapter_trained_on_another_base_model(tmp_path, ragloop_home):
    import json as _json

    from click.testing import CliRunner
    from tiny_models import tiny_causal_lm, tiny_embedder

    from ragloop.core.cli import cli
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nThe zebrafish tool listens on port 8742.\n")
    runner = CliRunner()
    assert runner.invoke(cli, ["index", str(docs), "-o", f"embedder.model={tiny_embedder()}"]).exit_code == 0
    folder = ragloop_home / "adapters" / "other"
    folder.mkdir(parents=True)
    (folder / "ragloop-adapter.json").write_text(_json.dumps(
        {"name": "other", "kind": "lora", "base_model_id": "some/other-model"}))
    result = runner.invoke(cli, ["ask", "port?", "--adapter", "other", "-o", f"model={tiny_causal_lm()}"])
    assert result.exit_code == 1
    assert "adapter 'other' was trained on some/other-model, not on" in result.output
