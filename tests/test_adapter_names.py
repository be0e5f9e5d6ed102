"""Adapter names: `adapters rm|show|use|export` take the names `train --name` accepts and mean
<workspace>/adapters/NAME, so no path leads them (and above all `rm`) outside the workspace;
and a reward model (a score head) is refused wherever a chat adapter is expected."""

import json
from pathlib import Path

import pytest
from cli_helpers import emb, run
from test_train import one_line_error
from tiny_models import tiny_causal_lm

from ragloop.core.pipeline.ask import ADAPTER_SETTING
from ragloop.core.workspace import Workspace
from ragloop.plugins.generators.transformers import model_identity

TINY = ["-o", f"model={tiny_causal_lm()}"]


def fake_adapter(folder: Path, **record) -> Path:
    """An adapter folder with a record (no weights: every refusal here comes first)."""
    folder.mkdir(parents=True)
    (folder / "ragloop-adapter.json").write_text(json.dumps(
        {"name": folder.name, "kind": "lora", "method": "dpo", "base_model": str(tiny_causal_lm()),
         "base_model_id": model_identity(tiny_causal_lm()), **record}))
    (folder / "adapter_config.json").write_text("{}")
    return folder


@pytest.fixture
def ws(ragloop_home):
    workspace = Workspace(ragloop_home)
    fake_adapter(workspace.adapters_dir / "adp")
    (workspace.runs_dir / "R1").mkdir(parents=True)
    yield workspace
    workspace.close()


@pytest.mark.parametrize("command", ["rm", "use", "export"])
def test_a_path_or_a_bad_name_is_refused_and_nothing_is_touched(command, ws, tmp_path):
    outside = fake_adapter(tmp_path / "elsewhere")
    more = ["--out", tmp_path / "copy"] if command == "export" else []
    for name in (str(outside), "adp/../../runs", "../runs", "adp/"):
        message = one_line_error(run("adapters", command, name, *more, ok=False))
        assert f"adapter name {name!r} must start with a letter or digit" in message
        assert message.endswith("give the name of one of the workspace's adapters: adp")
    assert (outside / "ragloop-adapter.json").is_file() and (ws.runs_dir / "R1").is_dir()
    assert (ws.adapters_dir / "adp").is_dir() and not (tmp_path / "copy").exists()
    assert ws.get_setting(ADAPTER_SETTING) is None


def test_rm_of_a_link_removes_the_link_and_not_what_it_points_at(ws, tmp_path):
    target = fake_adapter(tmp_path / "precious")
    (ws.adapters_dir / "linked").symlink_to(target, target_is_directory=True)
    assert run("adapters", "rm", "linked").output == "Removed 'linked'.\n"
    assert sorted(p.name for p in ws.adapters_dir.iterdir()) == ["adp"]
    assert sorted(p.name for p in target.iterdir()) == ["adapter_config.json",
                                                        "ragloop-adapter.json"]


def test_show_reads_a_folder_given_as_a_path_but_a_bare_name_is_the_workspaces(
        ws, tmp_path, monkeypatch):
    """Reading is harmless, so `show` (like `ask --adapter`) takes a folder given as a path."""
    monkeypatch.chdir(tmp_path)
    fake_adapter(tmp_path / "mine", method="kto")
    assert json.loads(run("adapters", "show", "./mine").output)["method"] == "kto"
    one_line_error(run("adapters", "show", "mine", ok=False), "no adapter named 'mine'")
    (tmp_path / "plain").mkdir()
    one_line_error(run("adapters", "show", "./plain", ok=False), "is not an adapter folder")
    one_line_error(run("adapters", "show", "./missing", ok=False), "no adapter folder ./missing")
    one_line_error(run("adapters", "show", "bad name", ok=False), "must start with a letter")


# ---- reward models are not chat adapters ------------------------------------------------

REWARD = "'rm' is a reward model (a score head), not a chat adapter, so it cannot be"
RLHF = "`ragloop train --method rlhf -o reward_adapter=rm`"


@pytest.fixture
def reward(ws):
    return fake_adapter(ws.adapters_dir / "rm", method="reward")


def test_use_and_merge_refuse_a_reward_model(reward, ws, tmp_path):
    one_line_error(run("adapters", "use", "rm", *TINY, ok=False), REWARD, "used by `ask`", RLHF)
    one_line_error(run("adapters", "merge", "rm", "--out", tmp_path / "m", *TINY, ok=False),
                   REWARD, "merged", RLHF)
    assert ws.get_setting(ADAPTER_SETTING) is None and not (tmp_path / "m").exists()


def test_ask_rate_eval_and_compress_refuse_a_reward_model(reward, ws, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nThe zebrafish tool listens on port 8742.\n")
    run("index", docs, *emb())
    for args in (["ask", "port?", "--adapter", "rm"], ["ask", "port?", "-o", "adapter=rm"],
                 ["ask", "port?", "--adapter", reward]):
        one_line_error(run(*args, *TINY, ok=False), REWARD, "used to generate answers", RLHF)
    ws.set_setting(ADAPTER_SETTING, "rm")         # chosen before ragloop refused it
    one_line_error(run("ask", "port?", *TINY, ok=False), REWARD, RLHF)
    ws.set_setting(ADAPTER_SETTING, None)
    questions = tmp_path / "q.txt"
    questions.write_text("port?\n")
    one_line_error(run("rate", "--rater", "judge", "--questions", questions, "--candidates",
                       "base-vs-adapter:rm", *TINY, ok=False), REWARD, RLHF)
    one_line_error(run("eval", "--adapter", "rm", *TINY, ok=False), REWARD,
                   "evaluated against its base model", RLHF)
    one_line_error(run("compress", "--method", "prune-magnitude", "--model", tiny_causal_lm(),
                       "--adapter", "rm", "--out", tmp_path / "c", "--eval-tokens", "0",
                       ok=False), REWARD, "merged before compressing", RLHF)
    assert not (tmp_path / "c").exists()
    assert ws.db["asks"].count == 0 and ws.db["comparisons"].count == 0


def test_a_hand_copied_peft_score_head_is_a_reward_model(ws, tmp_path):
    folder = ws.adapters_dir / "copied-rm"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(
        {"task_type": "SEQ_CLS", "base_model_name_or_path": str(tiny_causal_lm())}))
    one_line_error(run("adapters", "use", "copied-rm", *TINY, ok=False),
                   "'copied-rm' is a reward model (a score head)", "reward_adapter=copied-rm")
