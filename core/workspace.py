"""The workspace: one folder holding the SQLite database, indexes, models, adapters and runs.

Chosen by ``--home DIR``, else ``RAGLOOP_HOME``, else the platform's user-data folder.
Opening it creates the folders, opens ``ragloop.db`` with WAL and a busy timeout, and
applies the core's migrations; plugins that own tables apply their own set with
``workspace.migrate(their_migrations)``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .errors import RagloopError

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
        try:
            conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            db = sqlite_utils.Database(conn)
            from .migrations import core_migrations
            self.migrate(core_migrations, db)
        except sqlite3.DatabaseError as exc:
            raise RagloopError(f"the workspace database {self.db_path} is unreadable ({exc}); "
                               f"move it aside or choose another --home")
        return db

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
        with self.db.atomic():
            self.db["settings"].upsert(
                {"key": key, "value_json": json.dumps(value), "updated_at": utcnow()}, pk="key")

    def close(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None
