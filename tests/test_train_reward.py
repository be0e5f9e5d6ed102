"""`ragloop train --method reward` with a tiny random model: the head and LoRA weights are
saved together, load again, and score chosen above rejected after training on them."""

import json
from pathlib import Path

from safetensors.torch import load_file
from test_train import run, tiny, write

from ragloop.core.workspace import Workspace


def train_reward(tmp_path, name="rm", steps=8, n=4):
    data = write(tmp_path / "pairs.jsonl", "pairs", n)
    out = run("train", "--method", "reward", "--data", data, "--max-steps", steps, "--lr", "5e-3",
              "-o", "max_length=64", *tiny(), "--name", name, "--json").stdout
    return json.loads(out), data


def test_reward_trains_saves_head_and_adapter_and_scores_chosen_above_rejected(tmp_path,
                                                                           ragloop_home):
    from ragloop.plugins.training.reward import load_reward_model
    result, data = train_reward(tmp_path)
    folder = ragloop_home / "adapters" / "rm"
    weights = load_file(folder / "adapter_model.safetensors")
    assert any("lora_B" in k for k in weights) and any(".score." in k for k in weights), list(weights)
    meta = json.loads((folder / "ragloop-adapter.json").read_text())
    assert meta["method"] == "reward" and meta["kind"] == "lora"
    record = json.loads((Path(result["run_dir"]) / "run.json").read_text())
    assert [e for e in record["log_history"] if "accuracy" in e]
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    scorer = load_reward_model(Workspace(ragloop_home), "rm")
    chosen = scorer.score([(r["prompt"], r["chosen"]) for r in rows])
    rejected = scorer.score([(r["prompt"], r["rejected"]) for r in rows])
    assert sum(c > r for c, r in zip(chosen, rejected)) == len(rows), (chosen, rejected)


def test_reward_records_held_out_accuracy(tmp_path, ragloop_home):
    data = write(tmp_path / "pairs.jsonl", "pairs", 8)
    out = run("train", "--method", "reward", "--data", data, "--max-steps", 2,
              "--eval-split", "0.25", "-o", "max_length=64", *tiny(), "--json").stdout
    metrics = json.loads(out)["metrics"]
    assert 0 <= metrics["eval_accuracy"] <= 1


def test_scoring_needs_a_reward_adapter(tmp_path, ragloop_home):
    import pytest

    from ragloop.core.errors import RagloopError
    from ragloop.plugins.training.reward import load_reward_model
    data = write(tmp_path / "pairs.jsonl", "pairs", 4)
    run("train", "--method", "sft", "--data", data, "--max-steps", 1, "-o", "max_length=64",
        *tiny(), "--name", "s")
    with pytest.raises(RagloopError, match="not a reward model"):
        load_reward_model(Workspace(ragloop_home), "s")


def test_reward_early_stopping_stops_when_the_held_out_loss_stops_improving(tmp_path,
                                                                           ragloop_home):
    # A step size this small leaves the held-out loss exactly where it was.
    data = write(tmp_path / "pairs.jsonl", "pairs", 8)
    out = run("train", "--method", "reward", "--data", data, "--early-stopping", "1",
              "--eval-split", "0.25", "--save-steps", "1", "--max-steps", "6", "--lr", "1e-12",
              "-o", "max_length=64", *tiny(), "--json").stdout
    metrics = json.loads(out)["metrics"]
    assert metrics["global_step"] == 2 and metrics["stopped_early"] is True
    assert metrics["steps_this_run"] == 2 and metrics["best_eval_loss"] > 0


def test_a_resumed_reward_run_counts_only_its_own_steps(tmp_path, ragloop_home):
    import pytest
    from test_train_resume import OPTIONS, SETTINGS, Stop, stop_after_checkpoint_2

    from ragloop.core.pipeline.training import TrainSettings, prepare_training, run_training
    ws = Workspace(ragloop_home)
    data = write(tmp_path / "pairs.jsonl", "pairs")
    job = prepare_training(ws, method="reward", data=data, options=OPTIONS,
                           settings=TrainSettings(**SETTINGS), name="rm")
    with pytest.raises(Stop):
        run_training(ws, job, listeners=[stop_after_checkpoint_2])
    run("train", "--resume", job.run_id)
    record = json.loads((job.run_dir / "run.json").read_text())
    assert record["status"] == "succeeded"
    assert (record["metrics"]["global_step"], record["metrics"]["steps_this_run"]) == (4, 2)
