"""`ragloop train --resume`: an interrupted run continues from its last checkpoint with the
same optimizer state and data order, and ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragloop.core.training import TrainSettings, prepare_training, run_training
from ragloop.core.workspace import Workspace
from test_train import one_line_error, run, tiny, write
from tiny_models import tiny_causal_lm

OPTIONS = [f"model={tiny_causal_lm()}", "max_length=64"]
# A large step size, so that a resume that lost the optimizer state or the data order lands
# visibly elsewhere.
SETTINGS = dict(max_steps=4, save_steps=2, learning_rate=5e-3, batch_size=2)


class Stop(Exception):
    pass


def stop_after_checkpoint_2(event):
    if event["event"] == "save" and event["step"] == 2:
        raise Stop


def lora(folder: Path) -> dict:
    from safetensors.torch import load_file
    return {k: v for k, v in load_file(folder / "adapter_model.safetensors").items()
            if "lora_" in k}


def assert_same(a: dict, b: dict, atol=1e-6):
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max() <= atol, key


@pytest.fixture
def interrupted(tmp_path, ragloop_home):
    """(workspace, data file, job) of a dpo run stopped right after its step-2 checkpoint."""
    ws = Workspace(ragloop_home)
    data = write(tmp_path / "p.jsonl", "pairs")
    job = prepare_training(ws, data=data, options=OPTIONS, settings=TrainSettings(**SETTINGS),
                           name="resumed")
    with pytest.raises(Stop):
        run_training(ws, job, listeners=[stop_after_checkpoint_2])
    return ws, data, job


def test_resume_ends_at_the_same_weights_as_an_uninterrupted_run(interrupted, ragloop_home):
    ws, data, job = interrupted
    record = json.loads((job.run_dir / "run.json").read_text())
    assert record["status"] == "failed" and not (ragloop_home / "adapters" / "resumed").exists()
    assert sorted(p.name for p in job.output_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    run("train", "--resume", job.run_id)
    whole = prepare_training(ws, data=data, options=OPTIONS, settings=TrainSettings(**SETTINGS),
                             name="whole")
    run_training(ws, whole)
    resumed = lora(ragloop_home / "adapters" / "resumed")
    assert_same(resumed, lora(ragloop_home / "adapters" / "whole"))
    halfway = lora(job.output_dir / "checkpoint-2")
    assert max(float((resumed[k] - halfway[k]).abs().max()) for k in resumed) > 1e-3
    record = json.loads((job.run_dir / "run.json").read_text())
    assert record["status"] == "succeeded" and record["resumed"][0]["checkpoint"].endswith("-2")
    assert [e["step"] for e in record["log_history"] if "loss" in e] == [1, 2, 3, 4]


def test_resume_refuses_another_method_base_model_or_setting(interrupted):
    _, _, job = interrupted
    one_line_error(run("train", "--resume", job.run_id, "--method", "kto", ok=False),
                   "trained dpo, not kto")
    one_line_error(run("train", "--resume", str(job.run_dir), "--model",
                       tiny_causal_lm(seed=1), ok=False), "trained base model")
    one_line_error(run("train", "--resume", job.run_id, "--lr", "0.1", ok=False),
                   "learning_rate=0.005, not 0.1")
    one_line_error(run("train", "--resume", "nope", ok=False), "no run 'nope'")


def test_resume_after_kill_9(tmp_path, ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, "-c", "from ragloop.core.cli import main; main()", "train", "--data", str(data), "--max-steps",
         "4", "--save-steps", "2", "--lr", "5e-3", *[x for o in OPTIONS for x in ("-o", o)],
         "--name", "killed"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(ragloop_home.glob("runs/*/checkpoints/checkpoint-2/trainer_state.json")):
        assert process.poll() is None and time.time() < deadline, "training ended early"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    record = json.loads(next(ragloop_home.glob("runs/*/run.json")).read_text())
    assert record["status"] == "running"            # nobody was left to say otherwise
    run("train", "--resume")
    assert (ragloop_home / "adapters" / "killed" / "adapter_model.safetensors").exists()
