"""Claims that keep rating sessions running at the same time from doing one job twice.

A claim is one row of `rating_claims`, keyed by a question's hash and one of two kinds:

- pair (scope: the settings fingerprint): a session is generating the question's candidate
  pair. Another session that needs the same pair waits for it instead of generating its
  own, so every rater sees the same pair and their agreement can be measured.
- rater (scope: the rater id): a session is showing the question to that rater id. Another
  session of the same rater id skips the question, so nobody rates it twice.

SQLite is the arbiter: a claim is taken inside a write transaction (BEGIN IMMEDIATE), so of
two sessions only one gets it. Whether the holder still runs is asked of the operating
system: every session holds an exclusive lock on its own file under `<workspace>/locks/`
while it lives, and the kernel drops that lock when the process ends, however it ends
(kill -9 included). A claim whose holder's lock is free is stale and is taken over, so a
killed session never blocks the others, and nobody waits on a clock to find that out.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

from ragloop.core.workspace import utcnow

try:
    import fcntl
except ImportError:                  # Windows: msvcrt's byte-range locks die with the process too
    fcntl = None
    import msvcrt

LOCKS = "locks"
PAIR, RATER = "pair", "rater"


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on `fd` without waiting; False when another holds it."""
    try:
        if fcntl is not None:
            # flock, not fcntl's lockf: a second open of the file in this same process
            # conflicts too, so two sessions in one process see each other as alive.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _let_go(fd: int, path: Path) -> None:
    os.close(fd)                     # closing drops the lock
    try:
        path.unlink(missing_ok=True)
    except OSError:                  # held open elsewhere (Windows): a later check tidies it
        pass


class Claims:
    """One session's claims. `take` and `release` run inside the caller's write transaction
    (the first `take` also tidies up after dead sessions)."""

    def __init__(self, ws, session: str):
        self.db, self.session = ws.db, session
        self.folder = ws.home / LOCKS
        self.held: set[tuple[str, str, str]] = set()
        self._finalizer = None

    def _hold_lock(self) -> None:
        """Lock this session's file before its first claim row exists, so no other session
        ever sees a claim of ours while the lock is not yet held."""
        if self._finalizer is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.session}.lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):    # session ids are unique: only a reused id gets here
                os.close(fd)
                raise RuntimeError(f"rating session {self.session} is already running")
            try:                     # a sweep may have removed the file before we locked it
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._finalizer = weakref.finalize(self, _let_go, fd, path)
        self._sweep()

    def _sweep(self) -> None:
        """Tidy up after sessions that died: their claim rows and their lock files."""
        sessions = {r[0] for r in self.db.execute("select distinct session from rating_claims")}
        sessions |= {path.stem for path in self.folder.glob("*.lock")}
        for session in sessions:
            if not self.alive(session):          # also removes its lock file
                self.db.execute("delete from rating_claims where session = ?", [session])

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    def alive(self, session: str) -> bool:
        """Whether `session` still runs: its lock file exists and its lock is held."""
        if session == self.session:
            return True
        path = self.folder / f"{session}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            if not _try_lock(fd):
                return True
            try:                     # its holder is gone: tidy the file away
                path.unlink(missing_ok=True)
            except OSError:
                pass
            return False
        finally:
            os.close(fd)

    def holder(self, question_hash: str, kind: str, scope: str) -> tuple[str, int] | None:
        """(session, pid) of the claim's holder, or None; a plain read."""
        return self.db.execute(
            "select session, pid from rating_claims where question_hash = ? and kind = ? "
            "and scope = ?", [question_hash, kind, scope]).fetchone()

    def take(self, question_hash: str, kind: str, scope: str) -> tuple[str, int] | None:
        """Claim it for this session (taking over a dead holder's claim): None when this
        session holds it now, else the live holder's (session, pid)."""
        self._hold_lock()
        row = self.holder(question_hash, kind, scope)
        if row is not None and self.alive(row[0]):
            return None if row[0] == self.session else row
        self.db.execute(
            "insert or replace into rating_claims (question_hash, kind, scope, session, pid, "
            "created_at) values (?, ?, ?, ?, ?, ?)",
            [question_hash, kind, scope, self.session, os.getpid(), utcnow()])
        self.held.add((question_hash, kind, scope))
        return None

    def release(self, question_hash: str, kind: str, scope: str) -> None:
        if (question_hash, kind, scope) in self.held:
            self.db.execute(
                "delete from rating_claims where question_hash = ? and kind = ? and scope = ? "
                "and session = ?", [question_hash, kind, scope, self.session])
            self.held.discard((question_hash, kind, scope))

    def held_for(self, question_hash: str) -> list[tuple[str, str, str]]:
        return [c for c in self.held if c[0] == question_hash]


def drop_claim(db, session: str, question_hash: str, kind: str, scope: str) -> None:
    """Delete `session`'s claim row through `db`, another connection than the session's
    own (the prefetch thread's); the session forgets the claim when it collects the work."""
    db.execute("delete from rating_claims where question_hash = ? and kind = ? and scope = ? "
               "and session = ?", [question_hash, kind, scope, session])
