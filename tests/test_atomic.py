"""All-or-nothing writes: a folder swapped into place (atomic_folder, replace_folder) and a
write transaction that holds Ctrl-C until it has committed (write_transaction)."""

import os
import signal
import sqlite3
import threading

import pytest

from ragloop.core import atomic_folder, replace_folder, write_transaction
from ragloop.core.workspace import Workspace


def files(folder):
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def old_folder(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "a.txt").write_text("old a")
    (target / "only-old.txt").write_text("old")
    return target


# ---- folders ------------------------------------------------------------------------------

def test_atomic_folder_swaps_in_the_complete_new_folder(tmp_path):
    target = old_folder(tmp_path)
    with atomic_folder(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        (tmp / "a.txt").write_text("new a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("new b")
        assert files(target) == {"a.txt": "old a", "only-old.txt": "old"}   # not yet
    assert (target / "a.txt").read_text() == "new a"
    assert (target / "sub" / "b.txt").read_text() == "new b"
    assert not (target / "only-old.txt").exists()      # replaced whole, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["out"]      # no temp or old folder left


def test_atomic_folder_makes_a_new_folder(tmp_path):
    with atomic_folder(tmp_path / "new") as tmp:
        (tmp / "x").write_text("x")
    assert files(tmp_path / "new") == {"x": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["new"]


@pytest.mark.parametrize("error", [RuntimeError("writer failed"), KeyboardInterrupt()])
def test_a_failed_writer_keeps_the_old_folder(tmp_path, error):
    target = old_folder(tmp_path)
    with pytest.raises(type(error)):
        with atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("half written")
            raise error
    assert files(target) == {"a.txt": "old a", "only-old.txt": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_writer_leaves_no_new_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "new") as tmp:
            (tmp / "x").write_text("x")
            raise RuntimeError("no")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = old_folder(tmp_path)
    tmp = tmp_path / ".out.new.tmp"
    tmp.mkdir()
    (tmp / "a.txt").write_text("new a")
    real = os.replace

    def failing(src, dst):
        if os.fspath(src) == os.fspath(tmp):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError):
        replace_folder(tmp, target)
    assert files(target) == {"a.txt": "old a", "only-old.txt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.new.tmp", "out"]


def test_a_folder_put_in_place_meanwhile_is_kept(tmp_path, monkeypatch):
    """Two processes converting at once: the loser's rename fails, the winner's folder stays
    and the old one is not put back over it."""
    target = old_folder(tmp_path)
    tmp = tmp_path / ".out.mine.tmp"
    tmp.mkdir()
    real = os.replace

    def raced(src, dst):
        if os.fspath(src) == os.fspath(tmp):
            target.mkdir()
            (target / "theirs.txt").write_text("theirs")
            raise OSError(39, "Directory not empty")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", raced)
    with pytest.raises(OSError):
        replace_folder(tmp, target)
    assert files(target) == {"theirs.txt": "theirs"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.mine.tmp", "out"]


# ---- write transactions -------------------------------------------------------------------

@pytest.fixture
def db(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.db.execute("create table t (n integer)")
    yield ws.db
    ws.close()


def count(db):
    return db.execute("select count(*) from t").fetchone()[0]


def test_ctrl_c_inside_a_write_arrives_after_the_commit(db):
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with write_transaction(db):
            db["t"].insert({"n": 0})
            os.kill(os.getpid(), signal.SIGINT)
            for n in range(1, 100):         # would stop here, half written, without the hold
                db["t"].insert({"n": n})
            reached.append("end of block")
    assert reached == ["end of block"]
    assert count(db) == 100 and not db.conn.in_transaction
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_inside_a_nested_write_waits_for_the_outer_commit(db):
    with pytest.raises(KeyboardInterrupt):
        with write_transaction(db):
            db["t"].insert({"n": 1})
            with write_transaction(db):       # a savepoint of the outer transaction
                os.kill(os.getpid(), signal.SIGINT)
                db["t"].insert({"n": 2})
            db["t"].insert({"n": 3})
    assert count(db) == 3


def test_ctrl_c_goes_to_the_handler_that_was_there(db):
    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with write_transaction(db):
            os.kill(os.getpid(), signal.SIGINT)
            db["t"].insert({"n": 1})
            assert seen == []
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)
    assert count(db) == 1


def test_an_error_rolls_everything_back(db):
    with pytest.raises(RuntimeError):
        with write_transaction(db):
            db["t"].insert({"n": 1})
            raise RuntimeError("half way")
    assert count(db) == 0 and not db.conn.in_transaction


def test_immediate_takes_the_write_lock_before_any_write(db, tmp_path):
    other = sqlite3.connect(tmp_path / "ws" / "ragloop.db", timeout=0)
    try:
        with write_transaction(db):
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        with write_transaction(db, immediate=False):     # a plain BEGIN locks on first write
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()


def test_a_write_in_another_thread_commits_without_holding_ctrl_c(db, tmp_path):
    errors = []

    def write():
        ws = Workspace(tmp_path / "ws")
        try:
            with write_transaction(ws.db):
                ws.db["t"].insert({"n": 1})
        except BaseException as exc:       # a signal handler set outside the main thread
            errors.append(exc)
        finally:
            ws.close()

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()
    assert errors == [] and count(db) == 1


def test_the_gguf_conversion_swaps_through_replace_folder(tmp_path):
    """The model cache replaces a folder made from another GGUF file, and keeps a complete
    one that another process put there first."""
    from ragloop.plugins.hf.gguf import MARKER, _swap_into_place

    def converted(name, fp):
        folder = tmp_path / name
        folder.mkdir()
        (folder / MARKER).write_text(f'{{"gguf_fingerprint": "{fp}"}}')
        return folder

    target = converted("model", "other-gguf")
    _swap_into_place(converted(".model.1.tmp", "this-gguf"), target, "this-gguf")
    assert "this-gguf" in (target / MARKER).read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]

    late = converted(".model.2.tmp", "this-gguf")
    (late / "late.txt").write_text("not swapped in")
    _swap_into_place(late, target, "this-gguf")
    assert not (target / "late.txt").exists()
