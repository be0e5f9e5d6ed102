"""`ragloop distill`: a tiny teacher (2 layers, 48 wide) into a tinier student (1 layer, 32
wide) that shares its tokenizer; logits and sequences; lineage; bad input."""

import json
from pathlib import Path

import pytest
from test_train import nothing_written, one_line_error, run, write
from tiny_models import make_tiny_causal_lm, tiny_causal_lm

from ragloop.plugins.generators.transformers import model_identity


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill-models")
    return (str(make_tiny_causal_lm(root / "teacher", 0)),
            str(make_tiny_causal_lm(root / "student", 1, hidden=32, layers=1)))


def distill(models, tmp_path, *extra):
    teacher, student = models
    data = write(tmp_path / "sft.jsonl", "sft", 8)
    out = run("distill", "--teacher", teacher, "--student", student, "--data", data,
              "--max-steps", "10", "--lr", "3e-3", "--max-new-tokens", "16", "--full",
              "-o", "max_length=96", "--json", *extra).stdout
    result = json.loads(out)
    record = json.loads((Path(result["run_dir"]) / "run.json").read_text())
    return result, [e["loss"] for e in record["log_history"] if "loss" in e]


@pytest.mark.parametrize("method", ["logits", "sequences"])
def test_the_students_loss_against_the_teacher_falls(method, models, tmp_path, ragloop_home):
    result, losses = distill(models, tmp_path, "--method", method, "--name", "student")
    assert len(losses) == 10
    # Single steps are noisy on 8 rows; the last three against the first two.
    assert sum(losses[-3:]) / 3 < min(losses[:2]) - 0.05, losses
    meta = json.loads((ragloop_home / "adapters" / "student" / "ragloop-adapter.json").read_text())
    lineage = meta["distillation"]
    assert lineage["teacher"] == models[0] and lineage["method"] == method
    assert lineage["run_id"] == result["run_id"] and lineage["prompts"] == 8
    assert meta["kind"] == "full" and meta["base_model_id"] == model_identity(models[1])
    assert meta["method"] == ("distill-logits" if method == "logits" else "sft")


def test_logits_refuses_different_tokenizers(models, tmp_path, ragloop_home):
    from transformers import AutoTokenizer
    other = tmp_path / "other-student"
    tok = AutoTokenizer.from_pretrained(models[1])
    tok.add_tokens(["zebra-token"])
    tok.save_pretrained(other)
    data = write(tmp_path / "sft.jsonl", "sft", 2)
    result = run("distill", "--teacher", models[0], "--student", other, "--data", data, ok=False)
    one_line_error(result, "different tokenizers", "--method sequences")
    nothing_written(ragloop_home)


def test_unknown_method_lists_the_valid_ones(models, tmp_path, ragloop_home):
    data = write(tmp_path / "sft.jsonl", "sft", 2)
    result = run("distill", "--teacher", models[0], "--student", models[1], "--data", data,
                 "--method", "magic", ok=False)
    one_line_error(result, "unknown distiller 'magic'", "logits", "sequences")


def test_a_workspace_without_questions_says_what_to_do(models, ragloop_home):
    result = run("distill", "--teacher", models[0], "--student", models[1], ok=False)
    one_line_error(result, "no asks are logged yet", "--questions FILE")
    nothing_written(ragloop_home)


def test_distill_logits_is_a_training_method_that_needs_a_teacher(tmp_path, ragloop_home):
    data = write(tmp_path / "sft.jsonl", "sft", 2)
    result = run("train", "--method", "distill-logits", "--data", data,
                 "-o", f"model={tiny_causal_lm()}", ok=False)
    one_line_error(result, "needs -o teacher=MODEL")
