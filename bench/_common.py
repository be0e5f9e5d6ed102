"""Shared bits of the bench scripts: a throwaway workspace, timing helpers, progress lines and
the saved report.

Throwaway folders (a workspace holds ~350 MB: the converted model, its exports, the index)
are removed when the bench exits, whether normally, by an exception, by Ctrl-C or by SIGTERM;
a bench that lets the user keep one takes the user's folder instead (bench_loop's --home,
bench_retrieval's --workdir). A SIGKILL leaves them behind, as ragloop-bench-* in the temp
folder."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ragloop.core.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "examples" / "corpus"
QUESTIONS = REPO / "examples" / "questions.jsonl"
STARTED = time.perf_counter()


def say(message: str) -> None:
    """A progress line on stderr, stamped with the seconds since the bench started."""
    print(f"[{time.perf_counter() - STARTED:6.0f}s] {message}", file=sys.stderr, flush=True)


def finish(report: dict, path: Path | None) -> None:
    """Record the run's seconds in `report`, say so, and save it as JSON at `path`."""
    report["seconds"] = round(time.perf_counter() - STARTED, 1)
    say(f"done in {report['seconds']:.0f}s")
    if path:
        path.write_text(json.dumps(report, indent=1, default=str))
        say(f"numbers saved to {path}")


def temp_folder(prefix: str = "ragloop-bench-") -> Path:
    """A new folder in the temp folder, removed when this process exits."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(_remove, folder, os.getpid())
    _exit_on_sigterm()
    return folder


def _exit_on_sigterm() -> None:
    """SIGTERM (`timeout`, `kill`) ends the bench through Python, so exit handlers run; by
    default it kills the process outright. A handler the bench set itself is left alone."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _remove(folder: Path, pid: int) -> None:
    # A forked child that exits through Python inherits the handler: only the process that
    # made the folder removes it.
    if os.getpid() == pid:
        shutil.rmtree(folder, ignore_errors=True)


def temp_workspace() -> Workspace:
    """A throwaway workspace, removed when the bench exits."""
    return Workspace(temp_folder())


@contextmanager
def timer(out: dict, key: str):
    start = time.perf_counter()
    yield
    out[key] = time.perf_counter() - start


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered), p95
