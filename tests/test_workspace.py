"""The workspace: folders, SQLite settings, migrations (core and plugin sets), atomic writes."""

import os
import re

import pytest
from sqlite_utils.migrations import Migrations

from ragloop.core import migrations as core_module
from ragloop.core.errors import RagloopError
from ragloop.core.migrations import core_migrations
from ragloop.core.workspace import BUSY_TIMEOUT_MS, FOLDERS, Workspace, atomic_write_bytes

# Read from the module rather than from the set, so a migration function that someone
# forgot to decorate shows up as never applied.
CORE_NAMES = [n for n in vars(core_module) if re.fullmatch(r"m\d{3}_\w+", n)]


def applied(ws, name="ragloop.core"):
    return ws.db.execute("select name, applied_at from _sqlite_migrations "
                         "where migration_set = ? order by id", [name]).fetchall()


def test_fresh_workspace_gets_folders_and_core_migrations(ragloop_home):
    ws = Workspace()
    assert [name for name, _ in applied(ws)] == CORE_NAMES
    assert CORE_NAMES[0] == "m001_create_settings"
    assert all((ragloop_home / f).is_dir() for f in FOLDERS)
    assert "settings" in ws.db.table_names()


def test_reopening_is_idempotent():
    ws = Workspace()
    first = applied(ws)
    ws.close()
    ws = Workspace()
    assert applied(ws) == first
    assert core_migrations.pending(ws.db) == []


def test_newer_database_is_refused(ragloop_home):
    ws = Workspace()
    ws.db["_sqlite_migrations"].insert(
        {"migration_set": "ragloop.core", "name": "m999_from_the_future", "applied_at": "x"})
    ws.close()
    with pytest.raises(RagloopError) as info:
        Workspace().db
    assert info.value.message == (
        f"the workspace database {ragloop_home / 'ragloop.db'} was written by a newer version "
        "of ragloop.core (migration 'm999_from_the_future' is unknown here); upgrade ragloop")


def test_plugin_migration_set_is_separate():
    plugin = Migrations("ragloop-bookmarks")

    @plugin()
    def m001_create_bookmarks(db):
        db["bookmarks"].create({"id": int, "question": str}, pk="id")

    ws = Workspace()
    ws.migrate(plugin)
    ws.migrate(plugin)  # a second run applies nothing (create would fail if it did)
    ws.db["bookmarks"].insert({"question": "why?"})
    assert [n for n, _ in applied(ws, "ragloop-bookmarks")] == ["m001_create_bookmarks"]
    assert [n for n, _ in applied(ws)] == CORE_NAMES
    # An unknown name in another set does not make the core refuse the database.
    ws.close()
    assert Workspace().db["bookmarks"].count == 1


def test_wal_and_busy_timeout():
    db = Workspace().db
    assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert db.execute("pragma busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    assert db.execute("pragma foreign_keys").fetchone()[0] == 1


def test_settings_round_trip():
    ws = Workspace()
    assert ws.get_setting("adapter") is None
    assert ws.get_setting("adapter", "none") == "none"
    ws.set_setting("adapter", {"name": "dpo-1", "steps": 8})
    ws.set_setting("adapter", {"name": "dpo-2", "steps": 8})
    ws.close()
    ws = Workspace()
    assert ws.get_setting("adapter") == {"name": "dpo-2", "steps": 8}
    (updated_at,) = ws.db.execute("select updated_at from settings").fetchone()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", updated_at)


def test_home_option_beats_environment(tmp_path, ragloop_home):
    assert Workspace().home == ragloop_home
    assert Workspace(tmp_path / "other").home == tmp_path / "other"


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["state.bin"]


def test_atomic_write_failure_keeps_old_content(tmp_path, monkeypatch):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    # fsync is where a full or failing disk reports a write that did not reach it.
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.bin"]
