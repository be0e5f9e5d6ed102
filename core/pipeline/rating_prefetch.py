"""Generating the next item's answers while the person reads the current one.

`rate` with an interactive rater starts a `Prefetch` for item i+1 just before it hands item
i to the rater. What runs where:

- Retrieval and the prompt are built on the main thread before the prefetch starts: the
  vector store (FAISS) and the main database connection stay in the thread that made them.
- The two answers are generated on a background thread, which stores them (and drops the
  pair claim the main thread took for it) in one transaction on its own database
  connection. Measured here under load with one torch thread, a background thread decodes
  as fast as the main one (0.96x); the main thread meanwhile only waits for a key.
- The main thread, when it gets to item i+1, waits for the thread (saying so only if it
  is still running), then finds the stored pair the usual way.

A kill -9 at any moment loses no committed rating: every rating is its own transaction, and
a half-generated pair is simply not stored; its claim's lock dies with the process, so the
next session takes it over. Ctrl-C, `q` or an error ends the session, and `cancel` stops the
generation at its next token.

`RAGLOOP_TEST_PREFETCH_PAUSE=PATH` (for tests) makes the thread write PATH and wait, before
generating, until PATH is removed or the prefetch is cancelled: a test can kill the session
at exactly that point.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

PAUSE_ENV = "RAGLOOP_TEST_PREFETCH_PAUSE"
CANCEL_WAIT_SECONDS = 30      # a decode step of a large model on a slow CPU, with margin


class Prefetch:
    """One background generation: `work(cancelled)` returns rows to store, or None when it
    stopped because `cancelled()` became true; `store(rows)` writes them (in the thread)."""

    def __init__(self, question_hash: str, work: Callable, store: Callable[[list], None]):
        self.question_hash = question_hash
        self.error: BaseException | None = None
        self.stored = False
        self.started = time.perf_counter()
        self.seconds: float | None = None
        self._cancel = threading.Event()
        self._work, self._store = work, store
        self._thread = threading.Thread(target=self._run, name="ragloop-prefetch", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _pause_for_tests(self) -> None:
        path = os.environ.get(PAUSE_ENV)
        if not path:
            return
        Path(path).write_text(str(os.getpid()))
        while Path(path).exists() and not self._cancel.is_set():
            time.sleep(0.05)

    def _run(self) -> None:
        try:
            self._pause_for_tests()
            if self._cancel.is_set():
                return
            rows = self._work(self._cancel.is_set)
            if rows is not None and not self._cancel.is_set():
                self._store(rows)
                self.stored = True
        except BaseException as exc:       # handed to the main thread by wait()
            self.error = exc
        finally:
            self.seconds = round(time.perf_counter() - self.started, 3)

    def wait(self) -> None:
        """Until the thread is done; re-raises what it raised."""
        while self._thread.is_alive():
            # A timeout, so Ctrl-C (delivered to the main thread) is not held up by join.
            self._thread.join(0.1)
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Stop the generation at its next token and wait for the thread to end."""
        self._cancel.set()
        self._thread.join(CANCEL_WAIT_SECONDS)
