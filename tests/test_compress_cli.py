"""`ragloop compress` and `--compress` on ask and rate, with tiny random models."""

import json
import re
import sys

import pytest

pytest.importorskip("torchao")

from cli_helpers import run  # noqa: E402
from tiny_models import tiny_causal_lm, tiny_embedder  # noqa: E402

from ragloop.core.workspace import Workspace  # noqa: E402
from ragloop.plugins.hf.compressed import RECIPE  # noqa: E402

NO_CUDA = "Error: bitsandbytes 4-bit/8-bit loading needs a CUDA GPU; this machine has none\n"



@pytest.fixture
def indexed(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"doc{i}.md").write_text(f"# Part {i}\n\nThe zebrafish tool reads zebra.toml. " * 3)
    run("index", docs, "-o", f"embedder.model={tiny_embedder()}")


def compress(out, method, *more, ok=True):
    return run("compress", "--method", method, "--model", tiny_causal_lm(), "--out", out,
               "--eval-tokens", "300", *more, ok=ok)


def ask(*more):
    out = run("ask", "zebrafish?", "--max-new-tokens", "4", "-k", "1", "--json", *more).stdout
    return json.loads(out)


def test_quantized_folder_holds_int8_weights_and_a_recipe_and_ask_loads_it(tmp_path, indexed):
    out = tmp_path / "int8"
    report = json.loads(compress(out, "torchao-int8-dynamic", "--json").stdout)
    assert report["kind"] == "quantize" and report["eval_tokens"] == 298
    assert report["perplexity_after"] == pytest.approx(report["perplexity_before"], rel=0.05)
    files = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in files and RECIPE in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert files == sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert report["stored"].startswith("quantized weights of 14 layers (Int8Tensor")
    assert report["weights_bytes"] < report["source_weights_bytes"]
    recipe = json.loads((out / RECIPE).read_text())
    assert (recipe["method"], recipe["config"]) == ("torchao-int8-dynamic",
                                                    {"include_lm_head": False, "kernel": "auto"})
    # The folder alone brings its quantization back: ask records what it applied.
    data = ask("-o", f"model={out}")
    assert data["answer"] and data["params"]["compressed"].startswith(
        "torchao-int8-dynamic: 14 Linear layers to int8 weights")


def test_ask_compress_quantizes_on_load_and_logs_it(indexed, ragloop_home):
    data = ask("-o", f"model={tiny_causal_lm()}", "--compress", "torchao-int8")
    assert data["params"]["compressed"].startswith("torchao-int8: 14 Linear layers")
    row = Workspace(ragloop_home).db.execute("select params_json from asks").fetchone()
    assert "torchao-int8" in json.loads(row[0])["compressed"]
    plain = ask("-o", f"model={tiny_causal_lm()}")
    assert "compressed" not in plain["params"]


def test_pruned_folder_is_a_smaller_model_that_generates(tmp_path, indexed):
    out = tmp_path / "pruned"
    held_out = tmp_path / "held.txt"          # the 3 indexed chunks are too short to calibrate
    held_out.write_text("the quick brown fox jumps over the lazy dog " * 200)
    text = compress(out, "prune-structured", "-o", "sparsity=0.5", "--eval-text",
                    held_out).output
    # 48 of 96 neurons x (gate row + up row + down column, 48 wide) x 2 layers
    assert "parameters   66,288 -> 52,464 (13,824 removed)" in text
    assert re.search(rf"perplexity   [\d.]+ -> [\d.]+ \(298 tokens of {held_out}\)", text)
    config = json.loads((out / "config.json").read_text())
    assert config["intermediate_size"] == 48
    data = ask("-o", f"model={out}")
    assert data["answer"] and "compressed" not in data["params"]   # nothing to redo on load


def test_magnitude_report_counts_zeros(tmp_path):
    text = compress(tmp_path / "m", "prune-magnitude", "-o", "sparsity=0.5").output
    assert "(prune-magnitude: zeroed 20,736 of 41,472 Linear weights (50.0%))" in text
    assert re.search(r"zero weights \d+ -> 2\d,\d{3} of 66,048 Linear weights", text)


def test_perplexity_uses_eval_text_and_can_be_skipped(tmp_path):
    held_out = tmp_path / "held.txt"
    held_out.write_text("the quick brown fox jumps over the lazy dog " * 40)
    report = json.loads(compress(tmp_path / "a", "prune-magnitude", "--eval-text", held_out,
                                 "--json").stdout)
    assert report["eval_source"] == str(held_out)
    skipped = json.loads(compress(tmp_path / "b", "prune-magnitude", "--eval-tokens", "0",
                                  "--json").stdout)
    assert "perplexity_before" not in skipped


@pytest.mark.filterwarnings("ignore::FutureWarning")   # peft and transformers about each other
def test_adapter_is_merged_before_compressing(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(tiny_causal_lm())
    peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    unmerged = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    merged = peft.merge_and_unload().state_dict()["model.layers.0.self_attn.q_proj.weight"]
    out = tmp_path / "c"
    compress(out, "torchao-int8", "--adapter", tmp_path / "adapter", "--eval-tokens", "0")
    # The folder holds int8 data and a scale per row: the merged weight within half a step.
    saved = load_file(out / "model.safetensors")
    qdata = saved["model.layers.0.self_attn.q_proj._weight_qdata"]
    scale = saved["model.layers.0.self_attn.q_proj._weight_scale"]
    assert qdata.dtype == torch.int8 and scale.shape == (qdata.shape[0], 1)
    assert ((qdata.float() * scale - merged).abs() <= scale / 2 * 1.001).all()
    assert (merged - unmerged).abs().max() > scale.max(), "the adapter moved the weights"
    recipe = json.loads((out / RECIPE).read_text())
    assert recipe["adapter"]["path"] == str((tmp_path / "adapter").resolve())
    assert recipe["dtype"] == "float32"


@pytest.mark.parametrize("args, message", [
    (["compress", "--method", "int3", "--out", "x"], r"Error: unknown compressor 'int3'; "
     r"available: torchao-int8, torchao-int8-dynamic, torchao-int4, prune-magnitude, "
     r"prune-structured, bnb-nf4, bnb-int8.*\n"),
    (["ask", "q", "--compress", "int3"], r"Error: unknown compressor 'int3'; available: .*\n"),
    (["rate", "--compress", "int3"], r"Error: unknown compressor 'int3'; available: .*\n"),
    (["ask", "q", "--compress", "prune-magnitude", "-o", "model=TINY"], r"Error: --compress "
     r"quantizes as the model loads, and prune-magnitude is a prune method; write a pruned "
     r"folder with `ragloop compress --method prune-magnitude --out DIR` and load that\n"),
    (["compress", "--method", "prune-magnitude", "-o", "sparsity=1", "--out", "x"],
     r"Error: invalid options for prune-magnitude: sparsity must be between 0 and 1 \(both "
     r"excluded\), got 1.0\n"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, message, tmp_path, indexed, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*[f"model={tiny_causal_lm()}" if a == "model=TINY" else a for a in args], ok=False)
    assert result.exit_code == 1 and re.fullmatch(message, result.output)
    assert not (tmp_path / "x").exists()


def test_bitsandbytes_on_cpu_is_one_line_and_never_imported(tmp_path, indexed, monkeypatch):
    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)
    result = compress(tmp_path / "b", "bnb-nf4", ok=False)
    assert (result.exit_code, result.output) == (1, NO_CUDA)
    result = run("ask", "zebrafish?", "-o", f"model={tiny_causal_lm()}", "--compress",
                 "bnb-int8", ok=False)
    assert (result.exit_code, result.output) == (1, NO_CUDA)
    assert "bitsandbytes" not in sys.modules and not (tmp_path / "b").exists()


def test_out_that_exists_is_refused_before_loading(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("mine")
    result = compress(tmp_path / "taken", "prune-magnitude", ok=False)
    assert result.output == (f"Error: {tmp_path / 'taken'} already exists; choose another --out "
                             f"or remove it first\n")
    assert (tmp_path / "taken" / "file").read_text() == "mine"


def test_a_failed_save_leaves_nothing_half_written(tmp_path, monkeypatch):
    import errno

    from transformers import PreTrainedModel

    def full_disk(self, folder, **kwargs):
        (folder / "model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    tiny_causal_lm()                  # built (and saved) before saving starts failing
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_disk)
    out = tmp_path / "models" / "out"
    result = compress(out, "prune-magnitude", ok=False)
    assert result.exit_code == 1       # progress lines, then the one-line error
    assert result.output.endswith(f"...\nError: the disk is full while writing {out}; "
                                  f"nothing was kept\n")
    assert list(out.parent.iterdir()) == []     # neither the folder nor its temp sibling


def test_without_a_method_the_compressors_and_options_are_listed():
    out = run("compress").output
    assert out.startswith("torchao-int8 (quantize): torchao int8 weight-only")
    assert "\nprune-structured (prune): " in out and "\n  sparsity = 0.25: Share of " in out
    assert "\n  kernel = auto: " in out and "\nbnb-nf4 (quantize): " in out
    result = run("compress", "--method", "prune-magnitude", ok=False)
    assert result.output == "Error: give --out DIR, the folder to write the compressed model to\n"


def test_too_little_text_to_calibrate_is_one_line_and_writes_nothing(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("a few words only " * 5)
    result = compress(tmp_path / "p", "prune-structured", "--eval-text", short, ok=False)
    assert result.output.splitlines()[-1] == (
        f"Error: prune-structured needs sample text beyond the 300 tokens perplexity is "
        f"measured on, and {short} has 51 in all; give --eval-text FILE with more text, or "
        f"lower --eval-tokens")
    assert not (tmp_path / "p").exists()


def test_eval_refuses_an_unknown_compress_method_before_loading_anything():
    from click.testing import CliRunner

    from ragloop.core.cli import cli
    result = CliRunner().invoke(cli, ["eval", "--compress", "nope"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown compressor 'nope'; available: ")
