"""The server's database writer: one thread with its own connection that writes what requests
queue (feedback, traces) in group commits.

Each commit costs a disk flush; with many clients posting at once, one transaction per
request would queue them behind each other's flushes. Instead the thread takes everything
queued, writes each item inside its own savepoint (an item refused by a check leaves no row
and does not spoil the others) and commits once; then each caller gets its result. A
generation in progress never delays a write: generating runs on another thread.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from ragloop.core.workspace import Workspace, write_transaction

MAX_BATCH = 256


class Writer:
    def __init__(self, home):
        self._home = home
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ragloop-writer", daemon=True)
        self._opened: Future = Future()

    def start(self) -> None:
        """Start the thread and open its connection (migrations applied); errors raise here."""
        self._thread.start()
        self._opened.result()

    def submit(self, fn, *args, **kwargs) -> Future:
        """`fn(db, *args, **kwargs)` in the next commit; the future holds its result or its
        error."""
        future: Future = Future()
        self._queue.put((future, lambda db: fn(db, *args, **kwargs)))
        return future

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        try:
            ws = Workspace(self._home)
            db = ws.db
        except BaseException as exc:
            self._opened.set_exception(exc)
            return
        self._opened.set_result(None)
        try:
            while True:
                batch = [self._queue.get()]
                while batch[-1] is not None and len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = batch[-1] is None
                self._write(db, [item for item in batch if item is not None])
                if stop:
                    return
        finally:
            ws.close()

    @staticmethod
    def _write(db, batch) -> None:
        done = []
        try:
            with write_transaction(db):
                for future, job in batch:
                    db.conn.execute("SAVEPOINT item")
                    try:
                        done.append((future, job(db), None))
                    except Exception as exc:
                        db.conn.execute("ROLLBACK TO item")
                        done.append((future, None, exc))
                    db.conn.execute("RELEASE item")
        except Exception as exc:       # the commit failed: nothing of the batch was written
            for future, _ in batch:
                future.set_exception(exc)
            return
        for future, value, exc in done:
            if exc is None:
                future.set_result(value)
            else:
                future.set_exception(exc)
