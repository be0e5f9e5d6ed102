"""Progress bars on stderr, so stdout stays clean for answers and --json."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeRemainingColumn)

stderr = Console(stderr=True)


@contextmanager
def progress_bar(quiet: bool = False):
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=stderr, transient=True,
                        disable=quiet or not stderr.is_terminal)
    with progress:
        yield progress
