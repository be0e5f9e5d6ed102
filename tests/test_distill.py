"""`ragloop distill`: a tiny teacher (2 layers, 48 wide) into a tinier student (1 layer, 32
wide) that shares its tokenizer; logits and sequences; lineage; the teacher loaded once per
run; bad input."""

import json
from pathlib import Path

import pytest
from cli_helpers import emb
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


@pytest.fixture
def model_loads(monkeypatch):
    """The folders `AutoModelForCausalLM.from_pretrained` loads, one entry per load."""
    from transformers import AutoModelForCausalLM
    loads, real = [], AutoModelForCausalLM.from_pretrained

    def counted(path, *args, **kwargs):
        loads.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counted)
    return loads


@pytest.mark.parametrize("source", ["questions", "data"])
def test_the_teacher_loads_once_per_run(source, models, tmp_path, ragloop_home, model_loads):
    """Building the prompts (questions: the generator loads the teacher for its context
    length), answering them and the logits trainer all use one load of the teacher."""
    teacher, student = models
    if source == "questions":
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "a.txt").write_text("Paris is the capital of France. Berlin is in Germany.\n")
        run("index", docs, *emb())
        questions = tmp_path / "questions.txt"
        questions.write_text("What is the capital of France?\nWhere is Berlin?\n")
        given = ["--questions", questions]
    else:
        given = ["--data", write(tmp_path / "sft.jsonl", "sft", 2)]
    model_loads.clear()
    run("distill", "--teacher", teacher, "--student", student, *given, "--max-steps", "1",
        "--max-new-tokens", "4", "-o", "max_length=256", "--name", "once")
    assert model_loads.count(teacher) == 1, model_loads
    assert model_loads.count(student) >= 1, model_loads


def test_a_teacher_taken_from_the_generator_is_the_teacher_it_would_load(models, tmp_path):
    """A LoRA teacher's weights as the generator loaded them (a PeftModel) are merged as a
    fresh load merges them: the answers are the same either way."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragloop.plugins.distillation.common import Teacher
    from ragloop.plugins.hf.loader import load_causal_lm

    base = AutoModelForCausalLM.from_pretrained(models[0])
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(models[0]).save_pretrained(tmp_path / "adapter")  # as runs do
    adapter = str(tmp_path / "adapter")

    taken, _ = Teacher("t", models[0], adapter).load(load_causal_lm(models[0], adapter=adapter))
    fresh, _ = Teacher("t", models[0], adapter).load()
    plain = load_causal_lm(models[0])
    ids = torch.tensor([[5, 17, 42, 9, 3]])
    with torch.no_grad():
        assert torch.equal(taken(input_ids=ids).logits, fresh(input_ids=ids).logits)
        assert not torch.allclose(fresh(input_ids=ids).logits, plain(input_ids=ids).logits)
    assert type(taken) is type(fresh) is type(plain)        # merged: no PeftModel left


def test_a_teacher_loads_once_and_lets_go(models):
    from ragloop.plugins.distillation.common import Teacher
    teacher = Teacher("t", models[0])
    first = teacher.load()
    assert teacher.load() is first
    teacher.unload()
    assert teacher.load() is not first
