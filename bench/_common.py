"""Shared bits of the bench scripts: a throwaway workspace, timing helpers, progress lines and
the saved report."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
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


def temp_workspace() -> Workspace:
    return Workspace(Path(tempfile.mkdtemp(prefix="ragloop-bench-")))


@contextmanager
def timer(out: dict, key: str):
    start = time.perf_counter()
    yield
    out[key] = time.perf_counter() - start


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered), p95
