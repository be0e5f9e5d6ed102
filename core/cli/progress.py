"""Progress on stderr, so stdout stays clean for answers and --json.

On a terminal: rich bars and spinners. Elsewhere (a log file, a pipe, CI) rich shows
nothing, so the same calls print plain lines instead, for work that lasts: once a task has
run RAGLOOP_PROGRESS_SECONDS (default 5), a line at most every such interval while it moves,
a heartbeat at that interval while it does not (model loading, TRL's set-up), and one when
it completes. Work done sooner prints nothing. 0 prints a line for every update, including
the start, which tests use to see the lines without waiting on a clock.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr = Console(stderr=True)
DEFAULT_SECONDS = 5.0


def plain_interval() -> float:
    try:
        return max(0.0, float(os.environ.get("RAGLOOP_PROGRESS_SECONDS", DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


class _Task:
    def __init__(self, description: str, total, fields: dict):
        self.description, self.total, self.fields = description, total, fields
        self.completed = 0
        self.started = self.last_line = time.monotonic()
        self.done = False
        self.shown = False           # a line was printed: its end is worth a line too


class PlainProgress:
    """The part of rich's Progress that ragloop uses, printing plain lines to stderr."""

    def __init__(self, interval: float | None = None, stream=None):
        self.interval = plain_interval() if interval is None else interval
        self.stream = stream
        self.tasks: dict[int, _Task] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = None

    # -- context: a heartbeat thread while there is an interval to keep ---------------

    def __enter__(self):
        if self.interval > 0:
            self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                            name="ragloop-progress")
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return False

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            with self._lock:
                for task in list(self.tasks.values()):
                    if not task.done and now - task.last_line >= self.interval:
                        self._line(task)

    # -- rich's API ---------------------------------------------------------------------

    def add_task(self, description: str, total=None, completed=0, **fields) -> int:
        with self._lock:
            task_id = len(self.tasks)
            task = self.tasks[task_id] = _Task(description, total, fields)
            task.completed = completed
            if self.interval == 0:
                self._line(task)
            return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        with self._lock:
            task = self.tasks[task_id]
            task.completed += advance
            self._maybe_line(task)

    def update(self, task_id: int, *, total=None, completed=None, advance=None,
               description=None, **fields) -> None:
        with self._lock:
            task = self.tasks[task_id]
            if total is not None:
                task.total = total
            if completed is not None:
                task.completed = completed
            if advance is not None:
                task.completed += advance
            if description is not None:
                task.description = description
            task.fields.update({k: v for k, v in fields.items() if k != "visible"})
            self._maybe_line(task)

    def remove_task(self, task_id: int) -> None:
        with self._lock:
            self.tasks.pop(task_id, None)

    @property
    def console(self):
        return stderr

    # -- lines ----------------------------------------------------------------------------

    def _maybe_line(self, task: _Task) -> None:
        if task.done:
            return
        finished = task.total is not None and task.completed >= task.total
        if (finished and task.shown) or time.monotonic() - task.last_line >= self.interval:
            self._line(task)
        task.done = finished

    def _line(self, task: _Task) -> None:
        now = time.monotonic()
        task.last_line, task.shown = now, True
        elapsed = now - task.started
        parts = [task.description or "Working"]
        if task.total:
            count = f"{task.completed:g}/{task.total:g} ({100 * task.completed / task.total:.0f}%)"
            parts.append(count)
            if 0 < task.completed < task.total and elapsed > 0:
                left = elapsed * (task.total - task.completed) / task.completed
                parts.append(f"~{_clock(left)} left")
        elif task.completed:
            parts.append(f"{task.completed:g}")
        parts += [str(v) for v in task.fields.values() if v not in (None, "")]
        parts.append(f"{_clock(elapsed)} elapsed")
        stream = self.stream or sys.stderr
        print(f"{parts[0]}: {', '.join(parts[1:])}", file=stream, flush=True)


@contextmanager
def progress_bar(quiet: bool = False):
    """A rich bar on a terminal, plain lines elsewhere, nothing when `quiet`."""
    if quiet or stderr.is_terminal:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=stderr,
                            transient=True, disable=quiet)
    else:
        progress = PlainProgress()
    with progress:
        yield progress


@contextmanager
def status(text: str, quiet: bool = False):
    """A spinner on a terminal; elsewhere a line with `text` every interval until the work
    is done."""
    if quiet:
        yield
    elif stderr.is_terminal:
        with stderr.status(text, spinner="dots"):
            yield
    else:
        with PlainProgress() as plain:
            plain.add_task(text.rstrip(". ").rstrip("…"))
            yield
