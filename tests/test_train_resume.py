"""`ragloop train --resume`: an interrupted run continues from its last checkpoint with the
same optimizer state and data order, and ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import one_line_error, run, tiny, write
from tiny_models import tiny_causal_lm

from ragloop.core.pipeline.training import (
    TrainSettings,
    prepare_resume,
    prepare_training,
    run_training,
)
from ragloop.core.pipeline.training_runs import KILL_AT, list_runs, this_process
from ragloop.core.workspace import Workspace

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


def killed_run(tmp_path, ragloop_home, point: str, name: str = "killed"):
    """Run `ragloop train` in a child process that kills itself (SIGKILL) at `point`;
    returns the run folder."""
    data = write(tmp_path / "p.jsonl", "pairs")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), KILL_AT: point}
    process = subprocess.run(
        [sys.executable, "-c", "from ragloop.core.cli import main; main()", "train", "--data",
         str(data), "--max-steps", "4", "--save-steps", "2", "--lr", "5e-3",
         *[x for o in OPTIONS for x in ("-o", o)], "--name", name],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    return next(ragloop_home.glob("runs/*/run.json")).parent


def test_resume_after_kill_9(tmp_path, ragloop_home):
    run_dir = killed_run(tmp_path, ragloop_home, "after-checkpoint-2")
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "running"            # nobody was left to say otherwise
    # ... but the listing sees that its process is gone.
    assert [r["status"] for r in list_runs(Workspace(ragloop_home))] == ["killed"]
    run("train", "--resume")
    assert (ragloop_home / "adapters" / "killed" / "adapter_model.safetensors").exists()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "succeeded" and record["metrics"]["global_step"] == 4


def test_a_run_killed_after_saving_its_adapter_resumes_by_finishing_its_record(tmp_path,
                                                                               ragloop_home):
    run_dir = killed_run(tmp_path, ragloop_home, "after-adapter-saved")
    adapter = ragloop_home / "adapters" / "killed"
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    out = run("train", "--resume")
    assert "already saved adapter 'killed'" in out.output
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "succeeded" and record["adapter"]["name"] == "killed"
    assert record["metrics"]["global_step"] == 4 and record["metrics"]["final_loss"] is not None
    assert [e["step"] for e in record["log_history"] if "loss" in e] == [1, 2, 3, 4]
    assert (adapter / "adapter_model.safetensors").read_bytes() == weights
    one_line_error(run("train", "--resume", ok=False), "no unfinished run")


def test_a_run_killed_before_its_first_checkpoint_is_marked_killed(tmp_path, ragloop_home):
    run_dir = killed_run(tmp_path, ragloop_home, "after-step-1")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    one_line_error(run("train", "--resume", ok=False), "was killed before its first checkpoint")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "killed" and "pid" in record["error"]
    # A run whose process is alive is not resumed under its feet.
    record.update(status="running", process=this_process())
    (run_dir / "run.json").write_text(json.dumps(record))
    assert [r["status"] for r in list_runs(Workspace(ragloop_home))] == ["running"]
    one_line_error(run("train", "--resume", ok=False), "is still running")


def test_resume_from_the_last_checkpoint_inside_an_epoch_trains_no_extra_step(tmp_path,
                                                                              ragloop_home):
    # 10 pairs in batches of 2: an epoch is 5 steps, so max_steps 4 ends inside it; stopped
    # after the final checkpoint (before the adapter was saved), transformers would run step 5.
    ws = Workspace(ragloop_home)
    data = write(tmp_path / "p.jsonl", "pairs", n=10)

    def stop_after_checkpoint_4(event):
        if event["event"] == "save" and event["step"] == 4:
            raise Stop

    job = prepare_training(ws, data=data, options=OPTIONS, settings=TrainSettings(**SETTINGS),
                           name="resumed")
    with pytest.raises(Stop):
        run_training(ws, job, listeners=[stop_after_checkpoint_4])
    result = run_training(ws, prepare_resume(ws, job.run_id))
    assert result.metrics["global_step"] == 4
    assert sorted(p.name for p in job.output_dir.glob("checkpoint-*")) == ["checkpoint-2",
                                                                          "checkpoint-4"]
    run_training(ws, prepare_training(ws, data=data, options=OPTIONS, name="whole",
                                      settings=TrainSettings(**SETTINGS)))
    assert_same(lora(ragloop_home / "adapters" / "resumed"),
                lora(ragloop_home / "adapters" / "whole"))
