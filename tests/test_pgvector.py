"""The pgvector store against a real PostgreSQL with pgvector, started here by pgserver:
search modes and `--where` as with FAISS, `store copy` both ways, ids shared between
workspaces, two indexers at once, a killed indexer, a dropped connection, and each bad input.

Each test writes to its own tables (`-o store.table=...`) in one server for the session.
"""

import importlib.metadata
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cli_helpers import emb, run
from tiny_models import tiny_embedder

pytest.importorskip("psycopg", reason="the pgvector extra is not installed")
pgserver = pytest.importorskip("pgserver", reason="pgserver (test extra) is missing")
import psycopg  # noqa: E402

from ragloop.core.cli import cli  # noqa: E402

# Real text nobody here wrote: the long descriptions of packages the tests already need.
PACKAGES = ("click", "pluggy", "rich", "sqlite-utils", "pytest", "psycopg", "pgvector", "numpy")


@pytest.fixture(scope="session")
def pg(tmp_path_factory):
    """A private PostgreSQL with pgvector; its URL. A pgvector build that crashes on this
    CPU (a wheel compiled with -march=native for AVX-512) is named, not skipped."""
    # Not under pytest's basetemp: another pytest run may prune that folder meanwhile.
    folder = tempfile.mkdtemp(prefix="ragloop-test-pg-")
    server = pgserver.get_server(folder, cleanup_mode="stop")
    url = server.get_uri()
    probe = "[" + ",".join(["0.5"] * 384) + "]"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create extension if not exists vector")
            conn.execute(f"select %s::vector <#> %s::vector", [probe, probe])
    except psycopg.OperationalError as exc:
        pytest.fail(f"pgvector crashed the server on a 384-dimension distance ({exc}); its "
                    f"vector.so was built for another CPU (see docs/pgvector.md, Tests)")
    yield url
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for name in PACKAGES:
        text = importlib.metadata.distribution(name).read_text("METADATA") or ""
        body = text.split("\n\n", 1)[-1]
        (folder / f"{name}.md").write_text(body[:20000])
    return folder


def use(monkeypatch, tmp_path, name):
    home = tmp_path / name
    monkeypatch.setenv("RAGLOOP_HOME", str(home))
    return home


def pg_opts(url, table):
    return ["-o", "store.kind=pgvector", "-o", f"store.url={url}", "-o", f"store.table={table}"]


def hits(*args):
    out = run("search", "--json", *args).output
    return [(Path(h["path"]).name, h["start_line"], h["end_line"]) for h in json.loads(out)]


def sqlite_ids(home):
    with sqlite3.connect(home / "ragloop.db") as db:
        return {r[0] for r in db.execute("select id from chunks")}


def pg_rows(url, table):
    with psycopg.connect(url) as conn:
        return conn.execute(f"select id, origin from {table}_chunks").fetchall()


# No English stop words: FTS5 indexes them, PostgreSQL's english configuration drops them, so
# a chunk that matches a query on "and" alone is a BM25 hit in one and not the other.
QUERIES = ["terminal colors tables", "write tests fixtures", "plugin hooks",
           "array computing", "database rows json", "command line interface options",
           "postgres adapter connection", "similarity search vectors"]


@pytest.mark.slow
def test_each_mode_and_where_give_faiss_answers_and_copy_goes_both_ways(
        pg, corpus, tmp_path, monkeypatch):
    """Indexed once with the packaged MiniLM into FAISS, then copied (no re-embedding) to
    pgvector and back: every mode, with and without --where, returns the same chunks."""
    use(monkeypatch, tmp_path, "ws")
    run("index", corpus)

    def answers():
        out = {}
        for q in QUERIES:
            for mode in ("dense", "bm25", "hybrid"):
                out[q, mode] = hits("-k", "5", "--mode", mode, q)
                out[q, mode, "where"] = hits("-k", "3", "--mode", mode, "--where",
                                             "path=*/numpy.md", q)
        return out

    faiss = answers()
    where = [found for key, found in faiss.items() if len(key) == 3]
    assert all(h[0] == "numpy.md" for found in where for h in found)
    assert all(len(found) == 3 for key, found in faiss.items() if key[1:] == ("dense", "where"))
    copied = run("store", "copy", "--to", "pgvector", "-o", f"store.url={pg}",
                 "-o", "store.table=parity").output
    assert "now uses pgvector" in copied
    pgv = answers()
    for key in faiss:
        # dense: the same vectors, HNSW finds what exact search finds; bm25: FTS5's terms
        if key[1] in ("dense", "bm25"):
            assert pgv[key] == faiss[key], key
        else:     # fused over 50 candidates, some past what HNSW ranks exactly
            assert [h[0] for h in pgv[key][:1]] == [h[0] for h in faiss[key][:1]], key
    assert "Store: pgvector" in run("store", "info").output
    run("store", "copy", "--to", "faiss")
    assert answers() == faiss


# Stemming ("running" is FTS5's "run"), a stop word PostgreSQL's english drops ("the"),
# words FTS5 splits into phrases ("sqlite_utils"), and plain queries.
BM25_QUERIES = ["running", "the", "sqlite_utils insert_all", "add_column rows",
                "generated tables", "utm_source campaign", "hybrid_search cosine_distance",
                "how do I run tests", "terminal colors tables", "plugin hooks",
                "postgres adapter connection"]


def test_bm25_gives_the_fts5_ranking_and_scores(pg, corpus, tmp_path, monkeypatch):
    """With its default terms, pgvector's BM25 ranks as the FAISS store's FTS5 does: the same
    chunks in the same order with the same scores, with and without a path filter."""
    from ragloop.core.pipeline.search import Searcher
    from ragloop.core.workspace import Workspace
    from ragloop.stores.fts5_terms import FTS5_COLUMNS, FTS5_TOKENIZE
    home = use(monkeypatch, tmp_path, "ws")
    run("index", corpus, *emb())

    def bm25():
        ws = Workspace(home)
        try:
            return {(q, glob): Searcher(ws).bm25(q, 20, glob) for q in BM25_QUERIES
                    for glob in (None, "*/rich.md")}
        finally:
            ws.close()

    with sqlite3.connect(home / "ragloop.db") as db:      # the declaration copied in stores/
        sql = db.execute("select sql from sqlite_master where name = 'chunks_fts'").fetchone()[0]
        texts = dict(db.execute("select id, text from chunks"))
    assert f"tokenize='{FTS5_TOKENIZE}'" in sql
    assert tuple(re.findall(r'["\[](\w+)["\]]', sql)[1:3]) == FTS5_COLUMNS, sql
    fts5 = bm25()
    run("store", "copy", "--to", "pgvector", "-o", f"store.url={pg}", "-o", "store.table=terms")
    pgv = bm25()
    for key, ranked in fts5.items():
        assert ranked or key[1], key
        assert [i for i, _ in pgv[key]] == [i for i, _ in ranked], key
        assert [s for _, s in pgv[key]] == pytest.approx([s for _, s in ranked], rel=1e-9), key
    stemmed = [i for i, _ in pgv["running", None] if "running" not in texts[i].lower()]
    assert any(re.search(r"\bruns?\b", texts[i], re.I) for i in stemmed)
    assert "Text terms: fts5" in run("store", "info").output


def test_fts5_terms_of_chunks_and_queries(pg):
    """Positions and lengths as FTS5 counts them, the heading after the text, `a_b` words as
    phrases; a word too long for a PostgreSQL lexeme is left out but still counted."""
    from ragloop.stores.fts5_terms import Fts5Terms
    terms = Fts5Terms()
    long = "x" * 3000
    [(tsv, n), (empty, zero)] = terms.documents([("Running runs pthread_create " + long,
                                                   "Run"), ("", None)])
    assert n == 6 and (empty, zero) == ("", 0)
    assert tsv == "'creat':4 'pthread':3 'run':1,2,7"      # 6: the gap
    assert terms.phrases("The running runs, pthread_create!") == [
        ["the"], ["run"], ["run"], ["pthread", "creat"]]
    [(split, _)] = terms.documents([("see pthread", "create")])   # no phrase across columns
    with psycopg.connect(pg, autocommit=True) as conn:
        found = [conn.execute("select %s::tsvector @@ %s::tsquery",
                              [t, "'pthread' <-> 'creat'"]).fetchone()[0] for t in (tsv, split)]
    assert found == [True, False]


def test_a_table_of_other_text_terms_is_refused(pg, corpus, tmp_path, monkeypatch):
    from ragloop.core.config import build_config
    from ragloop.core.errors import RagloopError
    from ragloop.stores.pgvector import PgvectorStore

    def store(*options):
        config = build_config(PgvectorStore.Config, [f"url={pg}", "table=mixed", *options])
        return PgvectorStore(config, tmp_path, 32)

    home = use(monkeypatch, tmp_path, "ws")
    run("index", corpus / "rich.md", *emb(), *pg_opts(pg, "mixed"))
    with pytest.raises(RagloopError, match="holds the text terms of fts5, this store is set to "
                                           "english; give -o store.language=fts5"):
        store("language=english").text_search("terminal", 3)
    # A table of an older ragloop (PostgreSQL's terms, nothing recorded): refused by default,
    # in one line from the CLI, for searching and for writing alike.
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("delete from mixed_meta where key = 'text_config'")
    for command in (["search", "--mode", "bm25", "terminal"], ["index", corpus / "click.md"]):
        line = error_of(*command, *emb())
        assert "older ragloop" in line and "store.language=english" in line, line
        assert "store copy --to pgvector" in line and "store.table=mixed" in line, line
    with sqlite3.connect(home / "ragloop.db") as db:      # nothing of the refused index
        paths = [r[0] for r in db.execute("select path from documents")]
    assert paths == [str(corpus / "rich.md")]
    assert not any("click" in p for p, _ in pg_rows_paths(pg, "mixed"))
    # ... kept by naming the terms it holds (then recorded), as the message says
    copy = ["store", "copy", "--to", "pgvector", "-o", f"store.url={pg}", "-o",
            "store.table=mixed"]
    run(*copy, "-o", "store.language=english")
    assert hits("--mode", "bm25", "-k", "2", "terminal")
    assert "Text terms: english" in run("store", "info").output
    with pytest.raises(RagloopError, match="holds the text terms of english"):
        store().text_search("terminal", 3)
    # ... or re-indexed with FTS5's terms
    run(*copy, "-o", "store.language=fts5")
    assert hits("--mode", "bm25", "-k", "2", "terminal")
    assert "Text terms: fts5" in run("store", "info").output


def pg_rows_paths(url, table):
    with psycopg.connect(url) as conn:
        return conn.execute(f"select path, origin from {table}_chunks").fetchall()


def test_index_and_search_into_postgres_and_a_rating_id_finds_its_text_elsewhere(
        pg, corpus, tmp_path, monkeypatch):
    from ragloop.core.pipeline.search import Searcher
    from ragloop.core.workspace import Workspace
    a = use(monkeypatch, tmp_path, "a")
    url = pg.replace("postgres:@", "postgres:s3cret@")      # trust auth: not checked
    out = run("index", corpus / "rich.md", corpus / "click.md", *emb(),
              *pg_opts(url, "shared")).output
    assert "2 added" in out
    a_ids = sqlite_ids(a)
    assert {r[0] for r in pg_rows(pg, "shared")} == a_ids
    for mode in ("dense", "bm25", "hybrid"):
        found = hits("-k", "3", "--mode", mode, "terminal colors")
        assert len(found) == 3 and {h[0] for h in found} <= {"rich.md", "click.md"}
    # a store whose first call is a search (a serving process) connects for it
    from ragloop.core.config import build_config
    from ragloop.stores.pgvector import PgvectorStore
    fresh = PgvectorStore(build_config(PgvectorStore.Config, [f"url={pg}", "table=shared"]),
                          tmp_path, 32)
    assert {i for i, _ in fresh.dense_search([0.5] * 32, 3)} <= a_ids
    assert len(fresh.dense_search([0.5] * 32, 3)) == 3
    # the password is used, never recorded nor printed
    raw = (a / "ragloop.db").read_bytes()
    assert b"s3cret" not in raw and "s3cret" not in run("store", "info").output
    # a second workspace on the same table: ids never collide, and its searches (and a
    # rating's recorded chunk id) reach chunks the first one indexed
    b = use(monkeypatch, tmp_path, "b")
    run("index", corpus / "pytest.md", *emb(), *pg_opts(pg, "shared"))
    assert not sqlite_ids(b) & a_ids
    assert len(pg_rows(pg, "shared")) == len(a_ids) + len(sqlite_ids(b))
    assert {h[0] for h in hits("-k", "10", "--mode", "bm25", "rich terminal")} >= {"rich.md"}
    ws = Workspace(b)
    chunk_id = min(a_ids)
    [hit] = Searcher(ws).hits([(chunk_id, 1.0)])
    with sqlite3.connect(a / "ragloop.db") as db:
        assert hit.text == db.execute("select text from chunks where id = ?",
                                      [chunk_id]).fetchone()[0]
    ws.close()
    # unchanged files are skipped; a removed one leaves no chunk behind in PostgreSQL
    use(monkeypatch, tmp_path, "a")
    assert "2 unchanged" in run("index", corpus / "rich.md", corpus / "click.md", *emb()).output
    run("remove", corpus / "click.md")
    assert {r[0] for r in pg_rows(pg, "shared") if r[0] in a_ids} == sqlite_ids(a)


def index_process(home, paths, url, table, **env):
    code = ("import sys; sys.path.insert(0, %r); "
            "from ragloop.core.cli import main; sys.argv = ['ragloop'] + sys.argv[1:]; main()"
            % str(Path(__file__).parent))
    model = str(tiny_embedder())
    args = [sys.executable, "-c", code, "index", *map(str, paths), "-o",
            f"embedder.model={model}", *pg_opts(url, table)]
    return subprocess.Popen(args, env={**os.environ, "RAGLOOP_HOME": str(home), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_indexers_at_once_into_one_table(pg, corpus, tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    procs = [index_process(first, [corpus / "rich.md", corpus / "numpy.md"], pg, "both"),
             index_process(second, [corpus / "pytest.md", corpus / "click.md"], pg, "both")]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert "2 added" in out
    rows = pg_rows(pg, "both")
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids))                                   # no duplicate
    assert set(ids) == sqlite_ids(first) | sqlite_ids(second)           # none lost
    assert not sqlite_ids(first) & sqlite_ids(second)
    assert len({r[1] for r in rows}) == 2


def hold_inserts(url, table, path_part):
    """A trigger that parks the indexer inside its transaction when it writes a chunk of
    `path_part`: the test decides where the indexer is when it is killed."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"""create or replace function {table}_hold() returns trigger as $$
            begin if new.path like '%{path_part}%' then perform pg_sleep(60); end if;
            return new; end $$ language plpgsql""")
        conn.execute(f"create trigger {table}_hold before insert on {table}_chunks "
                     f"for each row execute function {table}_hold()")


def release(url, table):
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"drop trigger {table}_hold on {table}_chunks")


def wait_for_hold(url, timeout=300):
    """The pid of the backend sleeping in the trigger, once there is one."""
    end = time.time() + timeout
    while time.time() < end:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("select pid from pg_stat_activity where wait_event = 'PgSleep' "
                               "and query like 'insert into%'").fetchone()
        if row:
            return row[0]
        time.sleep(0.5)
    raise AssertionError("the indexer never reached the held insert")


def index_here(monkeypatch, home, paths, url, table):
    """`ragloop index` in this process (no interpreter to start): for the runs that nobody
    kills."""
    monkeypatch.setenv("RAGLOOP_HOME", str(home))
    return run("index", *paths, *emb(), *pg_opts(url, table)).output


def prepare_table(url, table, home, corpus, monkeypatch):
    """Index one file first, so the table (and its trigger) exist before the real run."""
    index_here(monkeypatch, home, [corpus / "pluggy.md"], url, table)


def test_killed_indexer_leaves_both_databases_consistent(pg, corpus, tmp_path, monkeypatch):
    home = tmp_path / "ws"
    prepare_table(pg, "killed", home, corpus, monkeypatch)
    hold_inserts(pg, "killed", "rich.md")
    files = [corpus / "click.md", corpus / "rich.md", corpus / "pytest.md"]
    p = index_process(home, files, pg, "killed")
    backend = wait_for_hold(pg)
    p.send_signal(signal.SIGKILL)
    p.wait()
    # A backend notices its client is gone when it next talks to it; the trigger's sleep
    # would delay that by a minute, so end it now.
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("select pg_terminate_backend(%s)", [backend])
    release(pg, "killed")
    ids = sqlite_ids(home)
    assert {r[0] for r in pg_rows(pg, "killed")} == ids       # nothing of the batch in flight
    index_here(monkeypatch, home, files, pg, "killed")          # exits 0
    rows = [r[0] for r in pg_rows(pg, "killed")]
    assert len(rows) == len(set(rows)) and set(rows) == sqlite_ids(home)
    with sqlite3.connect(home / "ragloop.db") as db:
        assert db.execute("select count(*) from documents").fetchone()[0] == 4


def test_dropped_connection_stops_cleanly_and_a_rerun_finishes(pg, corpus, tmp_path,
                                                                monkeypatch):
    home = tmp_path / "ws"
    prepare_table(pg, "dropped", home, corpus, monkeypatch)
    before = sqlite_ids(home)
    hold_inserts(pg, "dropped", "numpy.md")
    p = index_process(home, [corpus / "numpy.md"], pg, "dropped")
    backend = wait_for_hold(pg)
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("select pg_terminate_backend(%s)", [backend])
    out, err = p.communicate(timeout=120)
    release(pg, "dropped")
    assert p.returncode == 1 and "Traceback" not in err
    assert "lost the connection to PostgreSQL" in err and "run the same command again" in err
    assert sqlite_ids(home) == before == {r[0] for r in pg_rows(pg, "dropped")}
    assert "1 added" in index_here(monkeypatch, home, [corpus / "numpy.md"], pg, "dropped")


def error_of(*args):
    from click.testing import CliRunner
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_bad_input_is_one_line_and_writes_nothing(pg, corpus, tmp_path, monkeypatch):
    home = use(monkeypatch, tmp_path, "ws")
    doc = corpus / "click.md"
    down = f"postgresql://nobody@/postgres?host={tmp_path}/no-server"
    line = error_of("index", doc, *emb(), *pg_opts(down, "bad"))
    assert "cannot connect to PostgreSQL at" in line and "store.url" in line
    assert not sqlite_ids(home)
    # a server where this user may not create the extension
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("drop database if exists noext")
        conn.execute("drop role if exists plain")
        conn.execute("create role plain login")
        conn.execute("create database noext owner plain")
    noext = pg.replace("postgres:@", "plain@").replace("/postgres?", "/noext?")
    line = error_of("index", doc, *emb(), *pg_opts(noext, "bad"))
    assert "CREATE EXTENSION vector failed" in line and "install pgvector" in line
    assert not sqlite_ids(home)
    # a table made by another embedder, then for another dimension
    run("index", doc, *emb(), *pg_opts(pg, "other"))
    use(monkeypatch, tmp_path, "second")
    line = error_of("index", doc, "-o", f"embedder.model={tiny_embedder(seed=1)}",
                    *pg_opts(pg, "other"))
    assert "holds vectors of embedder" in line and "index --repair" in line
    from ragloop.core.config import build_config
    from ragloop.core.errors import RagloopError
    from ragloop.stores.pgvector import PgvectorStore
    config = build_config(PgvectorStore.Config, [f"url={pg}", "table=other"])
    with pytest.raises(RagloopError, match="holds 32-dimension vectors, the embedder gives 16"):
        len(PgvectorStore(config, tmp_path, 16))


def test_missing_psycopg_names_the_extra(tmp_path, corpus):
    code = ("import sys; sys.modules['psycopg'] = None; sys.path.insert(0, %r);"
            "from ragloop.core.cli import main; sys.argv = ['ragloop'] + sys.argv[1:]; main()"
            % str(Path(__file__).parent))
    out = subprocess.run([sys.executable, "-c", code, "index", str(corpus / "click.md"),
                          "-o", f"embedder.model={tiny_embedder()}", "-o", "store.kind=pgvector",
                          "-o", "store.url=postgresql://x@/db"], capture_output=True, text=True,
                         env={**os.environ, "RAGLOOP_HOME": str(tmp_path / "ws")})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "pip install 'ragloop[pgvector]'" in out.stderr


def test_glob_regex_and_password_stripping():
    import re

    from ragloop.stores.pgvector import glob_regex, strip_password
    assert re.match(glob_regex("docs/*.md"), "docs/a/b.md")
    assert not re.match(glob_regex("docs/?.md"), "docs/ab.md")
    assert re.match(glob_regex("[!x]y.txt"), "ay.txt") and not re.match(glob_regex("[!x]y.txt"),
                                                                          "xy.txt")
    assert strip_password("postgresql://u:pw@h:5/db?password=pw&sslmode=require") == \
        "postgresql://u@h:5/db?sslmode=require"
