"""`ragloop train` with a tiny random model: each method, data selection, lineage, bad input.

Every run is a couple of optimizer steps on 64-token sequences; the helpers at the top are
imported by the other test_train*/test_adapters modules too."""

import errno
import json
import math
from pathlib import Path

import pytest
from cli_helpers import run
from tiny_models import tiny_causal_lm

from ragloop.core.pipeline.prefs import build_rows, dataset_hash
from ragloop.core.pipeline.training import TrainSettings, prepare_training
from ragloop.core.workspace import Workspace

FAST = ["--max-steps", "2", "--lr", "1e-3", "-o", "max_length=64"]



def tiny():
    return ["-o", f"model={tiny_causal_lm()}"]


def render(question: str) -> str:
    """The prompt the way `ask` stores it: the chat template with the generation prompt."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_causal_lm())
    return tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                   add_generation_prompt=True)


def rows(kind: str, n: int = 8) -> list[dict]:
    out = []
    for i in range(n):
        base = {"prompt": render(f"what is the capital of france {i}"),
                "question": f"what is the capital of france {i}"}
        if kind == "pairs":
            out.append({**base, "chosen": f"paris {i}", "rejected": f"london berlin {i}",
                        "comparison_id": f"C{i}"})
        elif kind == "kto":
            out.append({**base, "completion": f"paris {i}" if i % 2 else f"rome {i}",
                        "label": bool(i % 2)})
        else:
            out.append({**base, "completion": f"paris {i}"})
    return out


def write(path: Path, kind: str, n: int = 8) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(kind, n)))
    return path


def one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()       # notes may come first
    message = lines[-1]
    assert message.startswith("Error: ") and sum("Error" in x for x in lines) == 1, lines
    for needle in needles:
        assert needle in message, message
    return message


def nothing_written(home: Path):
    for folder in ("runs", "adapters"):
        assert not (home / folder).exists() or not any((home / folder).iterdir()), folder


# ---- each method ------------------------------------------------------------------------

@pytest.mark.parametrize("method,kind", [("dpo", "pairs"), ("kto", "kto"), ("orpo", "pairs"),
                                         ("sft", "sft")])
def test_each_method_trains_a_lora_adapter_that_the_generator_loads(method, kind, tmp_path,
                                                                    ragloop_home):
    from safetensors.torch import load_file

    from ragloop.plugins.generators.transformers import (
        TransformersConfig,
        TransformersGenerator,
        model_identity,
    )
    data = write(tmp_path / "data.jsonl", kind)
    out = run("train", "--method", method, "--data", data, *FAST, *tiny(), "--name", "a",
              "--json").stdout
    result = json.loads(out)
    record = json.loads((Path(result["run_dir"]) / "run.json").read_text())
    losses = [e["loss"] for e in record["log_history"] if "loss" in e]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert record["status"] == "succeeded" and record["method"] == method
    assert (Path(result["run_dir"]) / "loss.png").stat().st_size > 1000
    folder = ragloop_home / "adapters" / "a"
    weights = load_file(folder / "adapter_model.safetensors")
    # LoRA's B matrices start at zero, so any non-zero B means training moved the weights.
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert lora_b and max(float(w.abs().max()) for w in lora_b) > 0
    meta = json.loads((folder / "ragloop-adapter.json").read_text())
    assert (meta["method"], meta["kind"], meta["run_id"]) == (method, "lora", result["run_id"])
    assert meta["base_model_id"] == model_identity(tiny_causal_lm())
    generator = TransformersGenerator(TransformersConfig(model=str(tiny_causal_lm()), adapter="a"),
                                      workspace=Workspace(ragloop_home))
    text = "".join(generator.generate([{"role": "user", "content": "capital?"}], max_new_tokens=3))
    assert generator.adapter_id.startswith("a@") and isinstance(text, str)


def test_the_generator_names_the_checkpoint_training_loads():
    from ragloop.plugins.generators.transformers import (
        TransformersConfig,
        TransformersGenerator,
        model_identity,
    )
    generator = TransformersGenerator(TransformersConfig(model=str(tiny_causal_lm())))
    assert generator.checkpoint() == str(Path(tiny_causal_lm()).resolve())
    assert generator.model_id == model_identity(tiny_causal_lm())


def test_orpo_import_path_is_pinned():
    from ragloop.plugins.training.orpo import ORPO, TRL_MODULE
    config_cls, trainer_cls = ORPO().trl_classes()
    assert TRL_MODULE == "trl.experimental.orpo"
    assert (config_cls.__name__, trainer_cls.__name__) == ("ORPOConfig", "ORPOTrainer")


def test_full_training_saves_a_whole_model_and_cannot_be_used_as_an_adapter(tmp_path,
                                                                           ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs", 4)
    run("train", "--data", data, "--full", "--max-steps", "1", "-o", "max_length=64", *tiny(),
        "--name", "whole")
    folder = ragloop_home / "adapters" / "whole"
    assert (folder / "config.json").exists() and not (folder / "adapter_config.json").exists()
    one_line_error(run("adapters", "use", "whole", ok=False), "full model", "-o model=")


# ---- which data, which method, what is recorded ----------------------------------------

def test_without_method_the_ratings_decide_and_lineage_is_recorded(tmp_path, ragloop_home):
    run("prefs", "import", write(tmp_path / "p.jsonl", "pairs", 4))
    result = json.loads(run("train", "--max-steps", "1", "-o", "max_length=64", *tiny(),
                            "--name", "auto", "--json").stdout)
    ws = Workspace(ragloop_home)
    expected = build_rows(ws, "pairs")
    meta = json.loads((ragloop_home / "adapters" / "auto" / "ragloop-adapter.json").read_text())
    assert meta["method"] == "dpo" and meta["lineage"]["source"] == "workspace"
    assert meta["dataset_hash"] == dataset_hash(expected)
    assert meta["lineage"]["comparison_ids"] == [r["comparison_id"] for r in expected]
    assert meta["run_id"] == result["run_id"]
    trained = [json.loads(line) for line in
               (Path(result["run_dir"]) / "train.jsonl").read_text().splitlines()]
    assert trained == expected


def test_only_good_and_bad_answers_select_kto_and_files_select_by_shape(tmp_path, ragloop_home):
    run("prefs", "import", write(tmp_path / "k.jsonl", "kto", 4))
    ws = Workspace(ragloop_home)
    assert prepare_training(ws, options=["max_length=64", *tiny()[1:]]).method == "kto"
    job = prepare_training(ws, data=write(tmp_path / "s.jsonl", "sft", 3), options=tiny()[1:])
    assert (job.method, job.data_kind, len(job.data.train)) == ("sft", "sft", 3)
    # The trainers get the rendered prompt as plain text, so none applies the template again.
    from trl.data_utils import is_conversational
    first = job.dataset[0]
    assert first == {"prompt": render("what is the capital of france 0"),
                     "completion": "paris 0"} and not is_conversational(first)
    # Pairs feed kto as good (chosen) and bad (rejected) answers.
    job = prepare_training(ws, method="kto", data=write(tmp_path / "p.jsonl", "pairs", 3),
                           options=tiny()[1:])
    assert [r["label"] for r in job.data.train] == [True, False] * 3
    nothing_written(ragloop_home)


def test_eval_split_holds_out_rows_and_config_file_sets_options(tmp_path, ragloop_home):
    config = tmp_path / "train.yaml"
    config.write_text(f"max-steps: 2\neval_split: 0.25\nsave_steps: 1\nbeta: 0.25\n"
                      f"max_length: 64\nmodel: {tiny_causal_lm()}\nname: from-yaml\n")
    data = write(tmp_path / "p.jsonl", "pairs")
    out = run("train", "--data", data, "--config", config, "--json", "--max-steps", "3").stdout
    record = json.loads((Path(json.loads(out)["run_dir"]) / "run.json").read_text())
    assert record["settings"]["max_steps"] == 3          # the command line wins
    assert record["options"]["beta"] == 0.25 and record["name"] == "from-yaml"
    lineage = record["data"]
    assert (lineage["train_rows"], lineage["eval_rows"]) == (6, 2)
    assert not set(lineage["comparison_ids"]) & set(lineage["eval_comparison_ids"])
    assert sum("eval_loss" in e for e in record["log_history"]) == 3
    assert record["metrics"]["final_eval_loss"] > 0


# ---- bad input: one line, non-zero exit, nothing written ---------------------------------

def test_no_ratings_yet(ragloop_home):
    one_line_error(run("train", *tiny(), ok=False), "run `ragloop rate` first")
    nothing_written(ragloop_home)


def test_too_few_pairs_for_the_eval_split(tmp_path, ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs", 5)
    one_line_error(run("train", "--data", data, "--eval-split", "0.1", *tiny(), ok=False),
                   "--eval-split 0.1 of 5 pairs leaves 0 for evaluation", "at least 10 pairs")
    nothing_written(ragloop_home)


def test_data_of_the_wrong_shape_for_the_method(tmp_path, ragloop_home):
    data = write(tmp_path / "k.jsonl", "kto")
    one_line_error(run("train", "--method", "dpo", "--data", data, *tiny(), ok=False),
                   "trains on pairs but the data holds kto rows")
    nothing_written(ragloop_home)


def test_unknown_option_lists_the_valid_ones(tmp_path, ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs")
    message = one_line_error(run("train", "--data", data, "-o", "betta=2", *tiny(), ok=False),
                             "unknown option 'betta' for method dpo")
    assert "beta" in message and "target_modules" in message and "model" in message
    nothing_written(ragloop_home)


def test_prompts_longer_than_max_length_are_refused_before_anything_runs(tmp_path, ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs")
    one_line_error(run("train", "--data", data, "-o", "max_length=4", *tiny(), ok=False),
                   "every one of the 8 train pairs", "-o max_length")
    nothing_written(ragloop_home)


def test_a_full_disk_while_saving_leaves_no_adapter(tmp_path, ragloop_home, monkeypatch):
    import ragloop.core.workspace as workspace     # adapters are written by atomic_folder

    def full(folder):
        raise OSError(errno.ENOSPC, "No space left on device")

    data = write(tmp_path / "p.jsonl", "pairs", 4)
    with monkeypatch.context() as patch:
        patch.setattr(workspace, "fsync_tree", full)
        one_line_error(run("train", "--data", data, "--max-steps", "1", "-o", "max_length=64",
                           *tiny(), "--name", "x", ok=False), "disk is full", "--resume")
    assert list((ragloop_home / "adapters").iterdir()) == []      # no folder, no temp folder
    # With space again, --resume registers the weights the failed run kept.
    run("train", "--resume")
    assert (ragloop_home / "adapters" / "x" / "adapter_model.safetensors").exists()


def test_settings_are_checked():
    with pytest.raises(Exception, match="not both"):
        TrainSettings(max_steps=2, epochs=1)
    settings = TrainSettings(early_stopping=2)
    assert (settings.epochs, settings.eval_split) == (1.0, 0.1)


def test_early_stopping_stops_when_the_held_out_loss_stops_improving(tmp_path):
    # A step size this small leaves the held-out loss exactly where it was.
    data = write(tmp_path / "p.jsonl", "pairs")
    out = run("train", "--data", data, "--early-stopping", "1", "--eval-split", "0.25",
              "--save-steps", "1",
              "--max-steps", "6", "--lr", "1e-12", "-o", "max_length=64", *tiny(), "--json")
    metrics = json.loads(out.stdout)["metrics"]
    assert metrics["global_step"] == 2 and metrics["best_eval_loss"] == pytest.approx(math.log(2))


def test_trainer_arguments_follow_the_settings_and_the_device(tmp_path):
    from ragloop.plugins.training.trl_base import lora_config, training_args
    job = prepare_training(Workspace(), data=write(tmp_path / "p.jsonl", "pairs"),
                           options=[*tiny()[1:], "target_modules=q_proj,k_proj"],
                           settings=TrainSettings(grad_accum=4, lora_r=4, seed=7))
    args = training_args(job)
    assert (args["gradient_accumulation_steps"], args["seed"], args["data_seed"]) == (4, 7, 7)
    assert args["activation_checkpointing"] is False and args["fp16"] is False
    import torch
    if not torch.cuda.is_available():      # on a CPU: fp32, not TRL's default bf16 autocast
        assert (job.device, job.precision) == ("cpu", "fp32") and "fp32" in " ".join(job.notes)
        assert (args["bf16"], args["use_cpu"]) == (False, True)
    lora = lora_config(job)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (4, 8, 0.05)
    assert set(lora.target_modules) == {"q_proj", "k_proj"}


def test_filters_run_over_the_rows_before_training_and_shape_the_lineage(tmp_path, ragloop_home):
    pairs = rows("pairs", 4)
    pairs.append(dict(pairs[0]))                         # an exact duplicate to drop
    data = tmp_path / "dup.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    result = run("train", "--data", str(data), "--max-steps", "1", "-o", "max_length=64",
                 *tiny(), "--name", "dedup", "--filter", "exact-dedup", "--json")
    out = json.loads(result.stdout)
    trained = (Path(out["run_dir"]) / "train.jsonl").read_text().splitlines()
    assert len(trained) == 4
    meta = json.loads((ragloop_home / "adapters" / "dedup" / "ragloop-adapter.json").read_text())
    assert meta["dataset_hash"] == dataset_hash([json.loads(line) for line in trained])
    bad = run("train", "--data", str(data), *tiny(), "--filter", "nope", ok=False)
    one_line_error(bad, "unknown filter 'nope'")
