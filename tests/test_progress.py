"""Plain progress lines when stderr is not a terminal (logs, pipes, CI)."""

import io
import time

from ragloop.core.cli import progress as progress_mod
from ragloop.core.cli.progress import PlainProgress, progress_bar, status


def test_plain_lines_for_start_moves_and_end():
    out = io.StringIO()
    with PlainProgress(interval=0, stream=out) as bar:
        task = bar.add_task("Embedding", total=4)
        bar.advance(task, 1)
        bar.update(task, completed=4, stats="loss 0.5")
        bar.advance(task, 1)                 # past the end: no more lines
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Embedding: 0/4 (0%)")
    assert lines[1].startswith("Embedding: 1/4 (25%), ~")          # an estimate of time left
    assert lines[2].startswith("Embedding: 4/4 (100%), loss 0.5")
    assert len(lines) == 3


def test_work_done_within_the_interval_prints_nothing():
    out = io.StringIO()
    with PlainProgress(interval=3600, stream=out) as bar:
        task = bar.add_task("Files", total=1000)
        for _ in range(1000):
            bar.advance(task)
    assert out.getvalue() == ""


def test_lines_are_spaced_by_the_interval_and_a_shown_task_shows_its_end():
    out = io.StringIO()
    with PlainProgress(interval=3600, stream=out) as bar:
        task = bar.add_task("Files", total=1000)
        bar.tasks[task].last_line -= 3600          # as if the interval had passed
        for _ in range(999):
            bar.advance(task)
        assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]
        assert out.getvalue().startswith("Files: 1/1000 (0%), ~")
        bar.advance(task)
    assert out.getvalue().splitlines()[-1].startswith("Files: 1000/1000 (100%)")
    assert len(out.getvalue().splitlines()) == 2


def test_heartbeat_while_nothing_moves():
    out = io.StringIO()
    with PlainProgress(interval=0.01, stream=out) as bar:
        bar.add_task("Loading the model")
        deadline = time.monotonic() + 60
        while len(out.getvalue().splitlines()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("Loading the model: ") for line in lines)
    assert lines[-1].endswith("elapsed")


def test_not_a_terminal_gets_plain_lines(monkeypatch, capsys):
    monkeypatch.setenv("RAGLOOP_PROGRESS_SECONDS", "0")
    assert not progress_mod.stderr.is_terminal        # pytest captures stderr
    with progress_bar() as bar:
        task = bar.add_task("Rating", total=2)
        bar.advance(task, 2)
    with status("Loading the model..."):
        pass
    with progress_bar(quiet=True) as bar:
        bar.add_task("Hidden", total=1)
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err] == ["Rating", "Rating", "Loading the model"]


def test_library_progress_bars_stay_out_of_ragloops_output(tmp_path):
    """transformers' tqdm bars ("Writing model shards") would print over ragloop's own
    progress, or as debris in a log; they are off in a fresh `ragloop` process."""
    import os
    import subprocess
    import sys

    from tiny_models import tiny_causal_lm
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    env["RAGLOOP_HOME"] = str(tmp_path / "home")
    from pathlib import Path
    ragloop = str(Path(sys.executable).with_name("ragloop"))
    out = subprocess.run([ragloop, "compress", "--method",
                          "prune-magnitude", "--model", str(tiny_causal_lm()), "--out",
                          str(tmp_path / "pruned"), "--eval-tokens", "0"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "pruned" / "config.json").exists()
    assert "Writing model shards" not in out.stderr and "it/s]" not in out.stderr
