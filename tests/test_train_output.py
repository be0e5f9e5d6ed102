"""What `ragloop train` tells the user: the set-up's phases and the progress lines when
stderr is not a terminal, the summary after early stopping (the kept step's numbers), a
reward model's and an rlhf run's summaries, the loss plot, the notes about the rows, the
--method help, and the options line of an evaluation report."""

import json
import math
from pathlib import Path

import pytest
from test_eval import gen, indexed, rated, report_folder  # noqa: F401 (fixtures)
from test_prefs import compare, item, score
from test_train import nothing_written, one_line_error, run, tiny, write
from test_train_reward import train_reward

from ragloop.core.pipeline.training_data import select
from ragloop.core.pipeline.training_runs import plot_losses
from ragloop.core.workspace import Workspace


@pytest.fixture
def plain_progress(monkeypatch):
    """A progress line for every update: the lines appear without waiting on a clock."""
    monkeypatch.setenv("RAGLOOP_PROGRESS_SECONDS", "0")


def test_early_stopping_reports_the_kept_steps_loss_and_says_it_stopped(tmp_path,
                                                                        ragloop_home,
                                                                        plain_progress):
    data = write(tmp_path / "p.jsonl", "pairs")
    # A step size this large overshoots: the held-out loss is best at step 3, worse at 4.
    out = run("train", "--data", data, "--early-stopping", "1", "--eval-split", "0.25",
              "--save-steps", "1", "--max-steps", "6", "--lr", "5e-2", "-o", "max_length=64",
              *tiny(), "--name", "es")
    record = json.loads(next(ragloop_home.glob("runs/*/run.json")).read_text())
    m, log = record["metrics"], record["log_history"]
    assert m["stopped_early"] is True and m["global_step"] == 4 and m["kept_step"] == 3
    loss = {e["step"]: e["loss"] for e in log if "loss" in e}
    held = {e["step"]: e["eval_loss"] for e in log if "eval_loss" in e}
    assert held[3] < held[4] and loss[3] != loss[4]
    assert m["final_loss"] == loss[3] and m["last_step_loss"] == loss[4]
    assert m["final_eval_loss"] == held[3] == m["best_eval_loss"]
    assert f"-> {loss[3]:.4f} at the kept step 3, held-out loss {held[3]:.4f}" in out.stdout
    assert "Stopped early at step 4" in out.stdout and "holds step 3's weights" in out.stdout
    meta = json.loads((ragloop_home / "adapters" / "es" / "ragloop-adapter.json").read_text())
    assert meta["metrics"]["final_loss"] == loss[3] and meta["metrics"]["stopped_early"]
    listed = " ".join(run("adapters", "list").stdout.split())
    assert f"steps 4 (stopped early, kept 3) loss {loss[3]:.4f}" in listed, listed
    # The set-up is no longer a silent "0/None preparing": each phase says what it does,
    # the reference pass with its own count, before the steps start.
    lines = out.stderr.splitlines()
    phases = ["Training dpo: loading model", "Training dpo: tokenizing 8 pairs",
              "Training dpo: precomputing reference log-probs (train rows): 3/3 (100%)",
              "Training dpo: 0/6"]
    at = [next(i for i, x in enumerate(lines) if x.startswith(p)) for p in phases]
    assert at == sorted(at), lines
    assert all("elapsed" in lines[i] for i in at)


def test_a_reward_model_says_what_it_is_for_and_rlhf_reports_rewards(tmp_path, ragloop_home,
                                                                     plain_progress):
    data = write(tmp_path / "pairs.jsonl", "pairs", 4)
    out = run("train", "--method", "reward", "--data", data, "--max-steps", 1,
              "-o", "max_length=64", *tiny(), "--name", "rm")
    assert "ragloop train --method rlhf -o reward_adapter=rm" in out.stdout
    assert "ask --adapter" not in out.stdout and "adapters use" not in out.stdout
    out = run("train", "--method", "rlhf", "--data", data, "--max-steps", 2, "--lr", "1e-2",
              "-o", "reward_adapter=rm", "-o", "max_completion_length=4",
              "-o", "max_length=128", *tiny(), "--name", "policy")
    records = [json.loads(p.read_text()) for p in ragloop_home.glob("runs/*/run.json")]
    m = next(r for r in records if r["method"] == "rlhf")["metrics"]
    assert (f"reward {m['first_reward']:+.4f} -> {m['final_reward']:+.4f}" in out.stdout), out.stdout
    assert "loss 0.0000" not in out.stdout
    assert "Training rlhf: loading reward model rm" in out.stderr
    assert any(x.startswith("Training rlhf  reward ") for x in out.stderr.splitlines())


def test_a_one_point_loss_curve_is_drawn(tmp_path):
    from matplotlib.image import imread
    png = plot_losses([{"step": 1, "loss": 0.69}], tmp_path / "loss.png")
    pixels = imread(png)[..., :3]
    height, width = pixels.shape[:2]
    # A one-point line draws nothing; the point must show where the axes put it, the
    # middle (the legend's own sample sits in the upper-left corner).
    middle = pixels[height // 2 - 40:height // 2 + 40, width // 2 - 40:width // 2 + 40]
    blue = (abs(middle - [0.122, 0.467, 0.706]).max(axis=-1) < 0.1).sum()
    assert blue > 10


def test_method_help_names_every_built_in_method():
    help_text = " ".join(run("train", "--help").output.split())
    for method in ("dpo", "kto", "orpo", "sft", "reward", "rlhf"):
        assert method in help_text


def test_min_agreement_notes_only_rows_it_left_out(ragloop_home):
    ws = Workspace(ragloop_home)
    p = item(ws, "p")
    for rid, choice in [("alice", "a"), ("bob", "b"), ("carol", "a")]:
        compare(ws, p, choice, rater_id=rid)     # agreement 2/3: below 0.7
    score(ws, p[1], 5)                           # ...but alice's scores label both answers
    score(ws, p[2], 1)
    assert len(select(ws, "kto", min_agreement=0.7).rows) == len(select(ws, "kto").rows) == 2
    assert not [n for n in select(ws, "kto", min_agreement=0.7).notes if "left out" in n]
    q = item(ws, "q")
    for rid, choice in [("alice", "a"), ("bob", "b"), ("carol", "a")]:
        compare(ws, q, choice, rater_id=rid)     # 2/3 again, and no scores: its rows go
    notes = select(ws, "kto", min_agreement=0.7).notes
    assert "2 kto rows left out: below --min-agreement" in notes, notes


def test_training_takes_no_option_that_runs_code(tmp_path, ragloop_home):
    # Neither a method nor `train` itself takes trust_remote_code, so no run record can
    # hold it for --resume to apply again.
    data = write(tmp_path / "p.jsonl", "pairs", 4)
    one_line_error(run("train", "--data", data, "-o", "trust_remote_code=true", *tiny(),
                       ok=False), "unknown option 'trust_remote_code'")
    nothing_written(ragloop_home)


def test_the_eval_report_prints_the_beta_it_used(rated, ragloop_home):
    out = run("eval", "--adapter", "a", *gen(), "--evaluators", "reward", "-n", "2")
    report = (report_folder(out.stdout) / "report.md").read_text()
    assert "| beta | 0.1000 |" in report and "`beta=0.1`" in report
    assert "`beta=0.0`" not in report
