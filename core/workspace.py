"""The workspace: one folder holding the SQLite database, indexes, models, adapters and runs.

Chosen by ``--home DIR``, else ``RAGLOOP_HOME``, else the platform's user-data folder.
Opening it creates the folders, opens ``ragloop.db`` with WAL and a busy timeout, and
applies the core's migrations; plugins that own tables apply their own set with
``workspace.migrate(their_migrations)``.

Writes that must be all or nothing go through one helper each: a file through
`atomic_write_bytes`, a folder through `atomic_folder` (or `replace_folder`), and rows
through `write_transaction`, which holds Ctrl-C until the commit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ragloop.core.errors import RagloopError
from ragloop.core.ids import new_id

FOLDERS = ("indexes", "models", "adapters", "runs")
BUSY_TIMEOUT_MS = 30_000


def default_home() -> Path:
    env = os.environ.get("RAGLOOP_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_data_dir("ragloop", appauthor=False))


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then os.replace: all or nothing."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder`, and the folder itself, to disk."""
    for p in Path(folder).rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:             # Windows cannot open a folder to flush it
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_folder(tmp: Path, target: Path) -> None:
    """Put the complete folder `tmp` in `target`'s place. A folder cannot be renamed onto a
    non-empty one, so an existing `target` is moved aside first and removed after: a crash
    leaves the old folder or the new one under the name, never a mix. When the rename fails
    the old one is put back, unless another process put a folder there meanwhile."""
    tmp, target = Path(tmp), Path(target)
    old = None
    if target.exists():
        # Named like a temp folder (.NAME.*.tmp), so a sweep of stale temps finds it too.
        old = target.with_name(f".{target.name}.{new_id()}.old.tmp")
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            if target.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_folder(target: Path):
    """Yield a new temp folder beside `target` to write into; when the block ends without
    an error it is flushed to disk and swapped into place (`replace_folder`). Any error,
    Ctrl-C included, removes it and leaves `target` as it was."""
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        fsync_tree(tmp)
        replace_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)      # gone already once swapped in


class _Held:
    """A SIGINT handler that only remembers the signal, to deliver it later."""

    def __init__(self):
        self.received = []

    def __call__(self, signum, frame):
        self.received.append((signum, frame))


@contextmanager
def _interrupt_held():
    """Hold Ctrl-C (SIGINT) until the block is over, then deliver it as it would have been.
    Only the main thread can set signal handlers (elsewhere nothing is held, and Python
    delivers signals to the main thread anyway); nested blocks hold it for the outermost."""
    if isinstance(signal.getsignal(signal.SIGINT), _Held):
        yield
        return
    held = _Held()
    try:
        previous = signal.signal(signal.SIGINT, held)
    except ValueError:          # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held.received:
            if callable(previous):
                previous(*held.received[0])     # the default handler raises KeyboardInterrupt
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt


@contextmanager
def write_transaction(db, immediate: bool = True):
    """One write transaction on a sqlite_utils Database: committed when the block ends,
    rolled back on any error, with Ctrl-C held until the commit or rollback is done, so
    rows are stored whole or not at all.

    `immediate` (BEGIN IMMEDIATE) takes the write lock up front, waiting out the busy
    timeout, so another session committing meanwhile cannot make it fail half-way (a
    deferred transaction that reads first fails with SQLITE_BUSY at once). Inside another
    transaction the block is a savepoint of it."""
    with _interrupt_held():
        if db.conn.in_transaction:
            with db.atomic():
                yield db
            return
        db.conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield db
            db.conn.execute("COMMIT")
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise


def _corrupt(exc: sqlite3.Error) -> bool:
    """SQLITE_CORRUPT (with its extended codes) and SQLITE_NOTADB: damage, not misuse."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (11, 26)
    text = str(exc)
    return "malformed" in text or "not a database" in text or "vtable constructor" in text


class _Translated:
    """Turns damage found by a statement into the workspace's one-line message: damage
    may lie anywhere (a full-text index page) and show only when that part is read."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, sqlite3.DatabaseError) and _corrupt(exc):
            unreadable = getattr(self.conn, "unreadable", None)
            if unreadable is not None:
                raise RagloopError(unreadable(exc)) from None
        return False


class _Cursor(sqlite3.Cursor):
    def execute(self, *args):
        with _Translated(self.connection):
            return super().execute(*args)

    def executemany(self, *args):
        with _Translated(self.connection):
            return super().executemany(*args)

    def executescript(self, *args):
        with _Translated(self.connection):
            return super().executescript(*args)

    def fetchone(self):
        with _Translated(self.connection):
            return super().fetchone()

    def fetchmany(self, *args):
        with _Translated(self.connection):
            return super().fetchmany(*args)

    def fetchall(self):
        with _Translated(self.connection):
            return super().fetchall()

    def __next__(self):
        with _Translated(self.connection):
            return super().__next__()


class _Connection(sqlite3.Connection):
    """A connection whose statements and rows go through _Translated."""

    def cursor(self, factory=_Cursor):
        return super().cursor(factory)

    def execute(self, *args):
        return self.cursor().execute(*args)

    def executemany(self, *args):
        return self.cursor().executemany(*args)

    def executescript(self, *args):
        return self.cursor().executescript(*args)

    def commit(self):
        with _Translated(self):
            return super().commit()


class Workspace:
    def __init__(self, home: Path | str | None = None):
        self.home = Path(home).expanduser() if home else default_home()
        self._db = None

    @property
    def db_path(self) -> Path:
        return self.home / "ragloop.db"

    def folder(self, name: str) -> Path:
        return self.home / name

    @property
    def indexes_dir(self) -> Path: return self.folder("indexes")
    @property
    def models_dir(self) -> Path: return self.folder("models")
    @property
    def adapters_dir(self) -> Path: return self.folder("adapters")
    @property
    def runs_dir(self) -> Path: return self.folder("runs")

    @property
    def db(self):
        """The workspace database, opened (and migrated) on first use."""
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self):
        import sqlite_utils
        try:
            for name in FOLDERS:
                self.folder(name).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RagloopError(f"cannot create the workspace at {self.home} "
                               f"({exc.strerror}); choose another with --home or RAGLOOP_HOME")
        if not os.access(self.home, os.W_OK):
            raise RagloopError(f"the workspace {self.home} is not writable; "
                               f"fix its permissions or choose another with --home")
        if self._emptied():
            raise RagloopError(self.unreadable("it is empty, yet indexes/ holds a vector index"))
        try:
            conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000,
                                   factory=_Connection)
            conn.unreadable = self.unreadable
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            db = sqlite_utils.Database(conn)
            from ragloop.core.migrations import core_migrations
            self.migrate(core_migrations, db)
        except sqlite3.DatabaseError as exc:
            raise RagloopError(self.unreadable(exc))
        return db

    def unreadable(self, detail) -> str:
        return (f"the workspace database {self.db_path} is unreadable ({detail}); "
                f"move it aside or choose another --home (`ragloop index --rebuild PATH...` "
                f"moves it aside and indexes PATH again, keeping the ratings it can read)")

    def _emptied(self) -> bool:
        """A 0-byte database next to a vector index was truncated, not just created (a new
        database in WAL mode may stay 0 bytes while its -wal file holds the data)."""
        wal = self.db_path.with_name(self.db_path.name + "-wal")
        try:
            if self.db_path.stat().st_size or (wal.exists() and wal.stat().st_size):
                return False
        except FileNotFoundError:
            return False
        return any(p.is_file() for p in self.indexes_dir.rglob("*"))

    # -- a damaged database: check it, set it aside, keep what can still be read -------------

    def damage(self) -> str | None:
        """Why the database is damaged, or None when SQLite's full check and the full-text
        index's own check find nothing (it is read through, so this takes a while)."""
        try:
            db = self.db
            problems = [r[0] for r in db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                return problems[0]
            if "chunks_fts" in db.table_names():
                db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('integrity-check')")
            return None
        except (RagloopError, sqlite3.DatabaseError) as exc:
            return str(exc)
        finally:
            self.close()

    def set_aside(self) -> Path:
        """Move the database (with its -wal and -shm files) and the vector indexes that go
        with its chunk ids to `*.damaged-STAMP` names in the workspace; returns the database's."""
        self.close()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.home / f"{self.db_path.name}.damaged-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            source = self.home / (self.db_path.name + suffix)
            if source.exists():
                os.replace(source, self.home / (aside.name + suffix))
        if self.indexes_dir.exists():
            os.replace(self.indexes_dir, self.home / f"{self.indexes_dir.name}.damaged-{stamp}")
        return aside

    def carry_over(self, old: Path, skip=()) -> tuple[list[str], list[str]]:
        """Copy every table of `old` that this database also has, except those in `skip`,
        table by table: (copied, unreadable). A damaged table is left out whole."""
        db = self.db
        copied, failed = [], []
        try:
            db.execute("ATTACH DATABASE ? AS old", [str(old)])
        except sqlite3.DatabaseError:
            return copied, ["all tables (the file cannot be opened)"]
        try:
            there = {r[0] for r in db.execute(
                "select name from old.sqlite_master where type = 'table'")}
        except (RagloopError, sqlite3.DatabaseError):
            there, failed = set(), ["all tables (its list of tables is damaged)"]
        for table in db.table_names():      # in creation order: referenced tables first
            if table not in there or table in skip or table.startswith(("sqlite_", "_sqlite")):
                continue
            columns = ", ".join(f'"{c}"' for c in db[table].columns_dict)
            try:
                # Deferred: IMMEDIATE would lock the attached old database as well.
                with write_transaction(db, immediate=False):
                    db.execute(f'INSERT OR IGNORE INTO main."{table}" ({columns}) '
                               f'SELECT {columns} FROM old."{table}"')
                copied.append(table)
            except (RagloopError, sqlite3.DatabaseError):
                failed.append(table)
        db.execute("DETACH DATABASE old")
        return copied, failed

    def migrate(self, migrations, db=None) -> None:
        """Apply a migration set, refusing a database written by a newer ragloop."""
        db = db if db is not None else self.db
        known = {m.name for m in migrations._migrations}
        unknown = [m.name for m in migrations.applied(db) if m.name not in known]
        if unknown:
            raise RagloopError(
                f"the workspace database {self.db_path} was written by a newer version of "
                f"{migrations.name} (migration {unknown[0]!r} is unknown here); upgrade ragloop")
        if migrations.pending(db):
            migrations.apply(db)

    def get_setting(self, key: str, default=None):
        row = self.db.execute("select value_json from settings where key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else default

    def set_setting(self, key: str, value) -> None:
        with write_transaction(self.db):
            self.db["settings"].upsert(
                {"key": key, "value_json": json.dumps(value), "updated_at": utcnow()}, pk="key")

    def close(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None
