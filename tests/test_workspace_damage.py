"""A damaged workspace database: one line saying it is unreadable, whenever the damage shows
(at open, or when a damaged page is first read), and `index --rebuild` to start a new one
from the source files, keeping what can still be read of the ratings and asks."""

import sqlite3

import pytest
from cli_helpers import emb, run

from ragloop.core.workspace import Workspace

DOCS = {"zebra.md": "# Zebras\n\nZebras have black and white stripes.\n",
        "quokka.txt": "Quokkas are nocturnal marsupials found on Rottnest Island.\n"}


@pytest.fixture
def indexed(tmp_path, ragloop_home):
    root = tmp_path / "docs"
    root.mkdir()
    for name, text in DOCS.items():
        (root / name).write_text(text)
    run("index", root, *emb())
    ws = Workspace(ragloop_home)
    ws.set_setting("kept", {"answer": 42})
    ws.db["asks"].insert({"id": "ask1", "question": "What do zebras have?", "answer": "Stripes."})
    ws.db.conn.commit()
    ws.close()
    return root


def damage_table(home, table):
    """Overwrite the first page of `table` with garbage, as a failing disk would."""
    db_path = home / "ragloop.db"
    conn = sqlite3.connect(db_path)
    page_size = conn.execute("pragma page_size").fetchone()[0]
    root = conn.execute("select rootpage from sqlite_master where name = ?", [table]).fetchone()[0]
    conn.close()
    assert not (home / "ragloop.db-wal").exists()      # everything is in the main file
    with open(db_path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xde\xad\xbe\xef" * (page_size // 4))


def one_error(result):
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


REBUILD = (" (`ragloop index --rebuild PATH...` moves it aside and indexes PATH again, keeping "
           "the ratings it can read)")


def test_an_emptied_database_next_to_a_vector_index_is_refused(indexed, ragloop_home):
    (ragloop_home / "ragloop.db").write_bytes(b"")
    line = one_error(run("search", "zebras", ok=False))
    assert line == (f"Error: the workspace database {ragloop_home / 'ragloop.db'} is unreadable "
                    f"(it is empty, yet indexes/ holds a vector index); move it aside or "
                    f"choose another --home{REBUILD}")
    assert (ragloop_home / "ragloop.db").stat().st_size == 0      # nothing written over it


def test_an_empty_database_in_a_new_workspace_is_just_new(ragloop_home):
    ragloop_home.mkdir()
    (ragloop_home / "ragloop.db").write_bytes(b"")
    assert run("search", "zebras", ok=False).output.strip() == (
        "Error: nothing is indexed yet; run `ragloop index PATH` first")


def test_damage_found_after_open_is_the_same_one_line_error(indexed, ragloop_home):
    damage_table(ragloop_home, "chunks_fts_config")
    message = (f"Error: the workspace database {ragloop_home / 'ragloop.db'} is unreadable "
               f"(vtable constructor failed: chunks_fts); move it aside or choose another --home"
               f"{REBUILD}")
    assert one_error(run("search", "zebras", "--mode", "bm25", ok=False)) == message
    (indexed / "zebra.md").write_text("# Zebras\n\nZebras are striped horses.\n")
    assert one_error(run("index", indexed, ok=False)).startswith(
        f"Error: the workspace database {ragloop_home / 'ragloop.db'} is unreadable")


def test_rebuild_sets_the_damaged_database_aside_and_indexes_into_a_new_one(indexed,
                                                                           ragloop_home):
    damage_table(ragloop_home, "chunks_fts_config")
    out = run("index", "--rebuild", indexed, *emb()).output
    asides = sorted(p.name for p in ragloop_home.iterdir() if ".damaged-" in p.name)
    assert len(asides) == 2 and asides[0].startswith("indexes.damaged-")
    assert asides[1].startswith("ragloop.db.damaged-")
    assert f"Moved the damaged database aside to {ragloop_home / asides[1]}" in out
    assert "carried over: settings, asks," in out and "2 added" in out
    hits = run("search", "zebras stripes", "--mode", "bm25", "--json").output
    assert "black and white stripes" in hits
    assert "black and white stripes" in run("search", "zebras", "--mode", "dense", "-k", "2").output
    ws = Workspace(ragloop_home)
    assert ws.get_setting("kept") == {"answer": 42}
    assert ws.db["asks"].get("ask1")["answer"] == "Stripes."
    ws.close()
    # a sound database is never set aside
    line = one_error(run("index", "--rebuild", indexed, ok=False))
    assert line == (f"Error: the workspace database {ragloop_home / 'ragloop.db'} is not "
                    f"damaged; --rebuild is for an unreadable one (to re-embed the vectors, "
                    f"use --repair)")
    assert len([p for p in ragloop_home.iterdir() if ".damaged-" in p.name]) == 2


def test_rebuild_after_damage_to_a_ratings_table_leaves_that_table_behind(indexed,
                                                                          ragloop_home):
    damage_table(ragloop_home, "asks")
    out = run("index", "--rebuild", indexed, *emb()).output
    assert "unreadable, left in it: asks" in out and "2 added" in out
    ws = Workspace(ragloop_home)
    assert ws.get_setting("kept") == {"answer": 42} and ws.db["asks"].count == 0
