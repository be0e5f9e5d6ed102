"""PostgreSQL + pgvector store: chunks, vectors and full text in one database server that
several workspaces (on several machines) index and search at once.

Each workspace keeps its own documents and chunks in SQLite (ratings and provenance stay
there) and writes a copy of every chunk, with its vector and a `tsvector`, to the table
`<table>_chunks`, tagged with the workspace's origin (a random id kept in its settings).
Chunk ids come from the database's sequence, so they never collide between workspaces and a
rating's chunk id finds its text from any of them. Search (dense, BM25, `--where` path
filters) covers every workspace's chunks and runs in SQL: HNSW or IVFFlat for vectors, a
GIN index for the text, BM25 computed from the `tsvector` term frequencies. By default the
terms are SQLite FTS5's (stores/fts5_terms.py), so BM25 ranks as the FAISS store's does; the
table records which terms it holds (`text_config` in `<table>_meta`), and a store set to other
terms is refused rather than searching or writing a mix.

Writes of one batch are one PostgreSQL transaction, committed by `save()` just before the
workspace commits its own rows, under an advisory lock per origin; a killed indexer loses
its open transaction, and the next run reconciles what the two databases disagree on.
The URL's password is never recorded: give it in PGPASSWORD or ~/.pgpass.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from contextlib import contextmanager

from ragloop.core import RagloopError, Store, hookimpl
from ragloop.stores.fts5_terms import Fts5Terms
from ragloop.stores.pg_common import (
    FTS5_CONFIG,
    INSTALL,
    K1,
    ORIGIN_SETTING,
    TEXT_META,
    URL_ENV,
    B,
    PgvectorConfig,
    first_line,
    glob_regex,
    strip_password,
    tsquery_of,
)

__all__ = ["PgvectorConfig", "PgvectorStore", "glob_regex", "strip_password"]

class PgvectorStore(Store):
    name = "pgvector"
    description = "PostgreSQL + pgvector: one index that many workspaces and machines share."
    Config = PgvectorConfig
    holds_text = True

    def __init__(self, config, directory, dimension: int, workspace=None):
        super().__init__(config, directory, dimension, workspace)
        self.url = config.url or os.environ.get(URL_ENV, "")
        self.safe_url = strip_password(self.url)
        t = config.table
        self.t, self.meta = f"{t}_chunks", f"{t}_meta"
        self.stats, self.seq = f"{t}_stats", f"{t}_ids"
        self.origin = "none"
        if workspace is not None:
            self.origin = workspace.get_setting(ORIGIN_SETTING)
            if not self.origin:
                self.origin = uuid.uuid4().hex
                workspace.set_setting(ORIGIN_SETTING, self.origin)
        self._conn = None
        self._writing = False
        self._checked = False
        self._text_checked = False
        self._terms = None

    # -- connection, schema and errors ---------------------------------------------------

    @classmethod
    def recorded_options(cls, pairs):
        return [f"url={strip_password(p.partition('=')[2].strip())}"
                if p.partition("=")[0].strip() == "url" else p for p in pairs]

    @contextmanager
    def _errors(self):
        """psycopg's errors as one line; a lost connection drops the open transaction."""
        import psycopg
        try:
            yield
        except psycopg.OperationalError as exc:
            self._forget()
            raise RagloopError(
                f"lost the connection to PostgreSQL at {self.safe_url} ({first_line(exc)}); "
                f"what was in flight was not kept: run the same command again") from None
        except psycopg.Error as exc:
            self._rollback()
            raise RagloopError(f"PostgreSQL at {self.safe_url}: {first_line(exc)}") from None

    def _forget(self):
        conn, self._conn, self._writing, self._tuned = self._conn, None, False, None
        if conn is not None:
            try:
                conn.close()
            except Exception:      # already broken: closing is best effort
                pass

    def _rollback(self):
        self._tuned = None
        if self._conn is not None and self._writing:
            try:
                self._conn.execute("rollback")
            except Exception:
                self._forget()
        self._writing = False

    @property
    def conn(self):
        if self._conn is None:
            self._conn = self._connect()
        if not self._checked:
            self._check_dimension()
        return self._conn

    def _connect(self):
        try:
            import psycopg
            from pgvector.psycopg import register_vector
        except ImportError:
            raise RagloopError(f"the pgvector store needs psycopg and pgvector; install them "
                               f"with {INSTALL}") from None
        if not self.url:
            raise RagloopError(f"the pgvector store needs a server: -o store.url=postgresql://"
                               f"USER@HOST/DB (or ${URL_ENV}); the password comes from "
                               f"PGPASSWORD or ~/.pgpass")
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise RagloopError(f"cannot connect to PostgreSQL at {self.safe_url}: "
                               f"{first_line(exc)}; check -o store.url and that the server "
                               f"is running") from None
        try:
            if not conn.execute("select 1 from pg_extension where extname = 'vector'").fetchone():
                conn.execute("create extension if not exists vector")
        except psycopg.Error as exc:
            conn.close()
            raise RagloopError(
                f"CREATE EXTENSION vector failed on {self.safe_url}: {first_line(exc)}; "
                f"install pgvector on the server (e.g. apt install postgresql-NN-pgvector, "
                f"or enable it on a managed PostgreSQL) and have an administrator run CREATE "
                f"EXTENSION vector") from None
        register_vector(conn)
        version = conn.execute("select extversion from pg_extension "
                               "where extname = 'vector'").fetchone()[0]
        self._iterative = tuple(int(p) for p in version.split(".")[:2]) >= (0, 8)
        self._create_schema(conn)
        return conn

    def _create_schema(self, conn) -> None:
        cfg, t = self.config, self.t
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(hashtext(%s))", [f"ragloop:{t}"])
            conn.execute(f"create table if not exists {self.meta} "
                         f"(key text primary key, value text not null)")
            conn.execute(f"create sequence if not exists {self.seq}")
            conn.execute(f"create table if not exists {self.stats} (origin text primary key, "
                         f"n bigint not null, words bigint not null)")
            conn.execute(f"insert into {self.meta} values ('dimension', %s) "
                         f"on conflict do nothing", [str(self.dimension)])
            dim = int(conn.execute(f"select value from {self.meta} where key = 'dimension'")
                      .fetchone()[0])
            conn.execute(
                f"create table if not exists {t} (id bigint primary key, origin text not null, "
                f"path text not null, heading text not null, start_line int, end_line int, "
                f"text text not null, words int not null, tsv tsvector not null, "
                f"embedding vector({dim}) not null)")
            conn.execute(f"create index if not exists {t}_origin on {t} (origin)")
            conn.execute(f"create index if not exists {t}_tsv on {t} using gin (tsv)")
            # A table with rows and no record was made by an older ragloop (PostgreSQL's
            # terms): it gets none here, and _check_text decides.
            conn.execute(f"insert into {self.meta} select %s, %s where not exists "
                         f"(select 1 from {t}) on conflict do nothing",
                         [TEXT_META, cfg.language])
            if cfg.index == "hnsw":
                self.build_index(conn)

    def build_index(self, conn=None) -> None:
        """The vector index as configured (IVFFlat is trained on what is stored, so build it
        after loading); an index that exists is kept."""
        cfg, t, conn = self.config, self.t, conn or self.conn
        with self._errors():
            if cfg.index == "hnsw":
                conn.execute(f"create index if not exists {t}_vec on {t} using hnsw "
                             f"(embedding vector_ip_ops) with (m = {cfg.m}, "
                             f"ef_construction = {cfg.ef_construction})")
            elif cfg.index == "ivfflat":
                conn.execute(f"create index if not exists {t}_vec on {t} using ivfflat "
                             f"(embedding vector_ip_ops) with (lists = {cfg.lists})")

    def _meta(self, key):
        row = self._conn.execute(f"select value from {self.meta} where key = %s", [key]).fetchone()
        return row[0] if row else None

    def _check_dimension(self) -> None:
        with self._errors():
            dim = int(self._meta("dimension"))
        if dim != self.dimension:
            raise RagloopError(
                f"the PostgreSQL table {self.t} at {self.safe_url} holds {dim}-dimension "
                f"vectors, the embedder gives {self.dimension}; index into a new database or "
                f"table (-o store.table=NAME), or run `ragloop index --repair` if this "
                f"workspace is its only user")
        self._checked = True

    def _check_text(self) -> None:
        """Refuse to write or search terms other than the ones the table holds."""
        if self._text_checked:
            return
        lang, conn = self.config.language, self.conn
        with self._errors():
            held = self._meta(TEXT_META)
            if held is None and lang != FTS5_CONFIG:
                # An older ragloop's table: made with PostgreSQL's configuration, which that
                # ragloop recorded in the workspace's options unless it was the default
                # english; the one named here is taken as the one it was made with.
                conn.execute(f"insert into {self.meta} values (%s, %s) on conflict do nothing",
                             [TEXT_META, lang])
                held = self._meta(TEXT_META)

        def copy(to):
            return (f"`ragloop store copy --to pgvector -o store.url=... -o store.table="
                    f"{self.config.table} -o store.language={to}` (rewrites this workspace's "
                    f"chunks; other workspaces sharing the table: -o store.table=NEW)")
        if held is None:
            raise RagloopError(
                f"the PostgreSQL table {self.t} at {self.safe_url} was indexed by an older "
                f"ragloop with PostgreSQL's text search terms (english unless store.language "
                f"was set), not SQLite FTS5's; re-index its text with {copy(FTS5_CONFIG)}, or "
                f"keep PostgreSQL's terms with store.language=english in that command")
        if held != lang:
            raise RagloopError(
                f"the PostgreSQL table {self.t} at {self.safe_url} holds the text terms of "
                f"{held}, this store is set to {lang}; give -o store.language={held}, or "
                f"re-index with {lang}'s: {copy(lang)}")
        self._text_checked = True

    @property
    def terms(self) -> Fts5Terms:
        if self._terms is None:
            self._terms = Fts5Terms()
        return self._terms

    def bind(self, embedder_id: str) -> None:
        conn = self.conn
        with self._errors():
            conn.execute(f"insert into {self.meta} values ('embedder', %s) on conflict do nothing",
                         [embedder_id])
            held = self._meta("embedder")
        if held != embedder_id:
            raise RagloopError(
                f"the PostgreSQL table {self.t} at {self.safe_url} holds vectors of embedder "
                f"{held}, not {embedder_id}; index into a new database or table "
                f"(-o store.table=NAME), or run `ragloop index --repair` if this workspace is "
                f"its only user")

    # -- writes: one transaction from the first change to save() -------------------------

    def _begin(self):
        conn = self.conn
        if not self._writing:
            with self._errors():
                conn.execute("begin")
                self._writing = True
                # one writer per workspace at a time; other workspaces write alongside
                conn.execute("select pg_advisory_xact_lock(hashtext(%s))",
                             [f"ragloop:{self.t}:{self.origin}"])
        return conn

    def new_ids(self, n: int) -> list[int]:
        with self._errors():
            return [r[0] for r in self.conn.execute(
                f"select nextval('{self.seq}') from generate_series(1, %s)", [n])]

    def add(self, ids, vectors) -> None:
        if len(ids) == 0:
            return
        rows = self._workspace_rows([int(i) for i in ids])
        self.add_rows(ids, vectors, rows)

    def add_rows(self, ids, vectors, rows: dict) -> None:
        """Add chunks whose (path, heading, start_line, end_line, text) are given."""
        import numpy as np
        missing = [int(i) for i in ids if int(i) not in rows]
        if missing:
            raise RagloopError(f"chunk {missing[0]} has no row in the workspace database; "
                               f"run `ragloop index --repair`")
        self._check_text()
        conn = self._begin()
        lang = self.config.language
        if lang == FTS5_CONFIG:
            # FTS5's terms and its document length (tokens of text and heading)
            tsv_sql = "%s::tsvector"
            docs = self.terms.documents([(rows[int(i)][4], rows[int(i)][1]) for i in ids])
            tsvs = [(literal,) for literal, _ in docs]
            lengths = [n for _, n in docs]
        else:
            tsv_sql = "to_tsvector(%s::regconfig, %s)"
            texts = [(rows[int(i)][1] or "", rows[int(i)][4]) for i in ids]
            tsvs = [(lang, f"{heading}\n{text}") for heading, text in texts]
            lengths = [len(re.findall(r"\w+", f"{heading} {text}")) for heading, text in texts]
        data = []
        for i, v, tsv, words in zip(ids, np.asarray(vectors, dtype="float32"), tsvs, lengths):
            path, heading, start, end, text = rows[int(i)]
            data.append((int(i), self.origin, path, heading or "", start, end, text, words,
                         *tsv, v))
        with self._errors(), conn.cursor() as cur:
            cur.executemany(
                f"insert into {self.t} (id, origin, path, heading, start_line, end_line, text, "
                f"words, tsv, embedding) values (%s, %s, %s, %s, %s, %s, %s, %s, "
                f"{tsv_sql}, %s) on conflict (id) do update set "
                f"origin = excluded.origin, path = excluded.path, heading = excluded.heading, "
                f"start_line = excluded.start_line, end_line = excluded.end_line, "
                f"text = excluded.text, words = excluded.words, tsv = excluded.tsv, "
                f"embedding = excluded.embedding", data)

    def _workspace_rows(self, ids) -> dict:
        if self.workspace is None:
            return {}
        marks = ",".join("?" * len(ids))
        return {r[0]: tuple(r[1:]) for r in self.workspace.db.execute(
            f"select c.id, d.path, c.heading, c.start_line, c.end_line, c.text from chunks c "
            f"join documents d on d.id = c.document_id where c.id in ({marks})", ids)}

    def remove(self, ids) -> None:
        if len(ids) == 0:
            return
        conn = self._begin()
        with self._errors():
            conn.execute(f"delete from {self.t} where id = any(%s) and origin = %s",
                         [[int(i) for i in ids], self.origin])

    def clear(self) -> None:
        """Drop this workspace's chunks; when no other workspace's remain, the table is made
        anew for the current embedder's dimension and the embedder record is dropped."""
        self._checked = True        # a rebuild may change the dimension: checked below
        conn = self._begin()
        with self._errors():
            conn.execute(f"delete from {self.t} where origin = %s", [self.origin])
            others = conn.execute(f"select count(*) from {self.t}").fetchone()[0]
            dim = int(self._meta("dimension"))
            if not others:
                conn.execute(f"delete from {self.meta} where key = 'embedder'")
                # nothing left of the old terms: the table takes this store's
                conn.execute(f"insert into {self.meta} values (%s, %s) on conflict (key) do "
                             f"update set value = excluded.value",
                             [TEXT_META, self.config.language])
                self._text_checked = True
                if dim != self.dimension:
                    conn.execute(f"drop table {self.t}")
                    conn.execute(f"update {self.meta} set value = %s where key = 'dimension'",
                                 [str(self.dimension)])
                    self._create_tables_in(conn)
        if others and dim != self.dimension:
            self._rollback()
            self._checked = False
            self._check_dimension()

    def _create_tables_in(self, conn) -> None:
        t = self.t
        conn.execute(
            f"create table {t} (id bigint primary key, origin text not null, path text not "
            f"null, heading text not null, start_line int, end_line int, text text not null, "
            f"words int not null, tsv tsvector not null, embedding vector({self.dimension}) "
            f"not null)")
        conn.execute(f"create index {t}_origin on {t} (origin)")
        conn.execute(f"create index {t}_tsv on {t} using gin (tsv)")
        if self.config.index == "hnsw":
            self.build_index(conn)

    def save(self, data=None) -> str:
        """Commit the open transaction (with this origin's counts for BM25)."""
        if self._writing:
            with self._errors():
                self._conn.execute(
                    f"insert into {self.stats} select %s, count(*), coalesce(sum(words), 0) "
                    f"from {self.t} where origin = %s on conflict (origin) do update set "
                    f"n = excluded.n, words = excluded.words", [self.origin, self.origin])
                self._conn.execute("commit")
                self._writing = False
        return ""

    def file_checksum(self) -> str | None:
        return None

    # -- reads ------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._errors():
            return int(self.conn.execute(f"select count(*) from {self.t} where origin = %s",
                                         [self.origin]).fetchone()[0])

    def ids(self):
        import numpy as np
        with self._errors():
            rows = self.conn.execute(f"select id from {self.t} where origin = %s",
                                     [self.origin]).fetchall()
        return np.asarray([r[0] for r in rows], dtype="int64")

    def vectors(self, ids):
        import numpy as np
        ids = [int(i) for i in ids]
        with self._errors():
            found = dict(self.conn.execute(f"select id, embedding from {self.t} "
                                           f"where id = any(%s)", [ids]).fetchall())
        # pgvector's loader gives Vector objects (numpy arrays in older releases)
        rows = [getattr(found[i], "to_numpy", lambda v=found[i]: v)() for i in ids]
        return np.asarray(rows, dtype="float32").reshape(len(ids), -1)

    def chunk_total(self) -> int:
        with self._errors():
            return int(self.conn.execute(f"select count(*) from {self.t}").fetchone()[0])

    def chunk_rows(self, ids) -> dict:
        with self._errors():
            return {r[0]: tuple(r[1:]) for r in self.conn.execute(
                f"select id, path, heading, start_line, end_line, text from {self.t} "
                f"where id = any(%s)", [[int(i) for i in ids]])}

    def _tune(self, k: int, filtered: bool) -> None:
        """Session settings for this query, sent only when they change (a round trip each)."""
        cfg = self.config
        want = (max(cfg.ef_search, k), filtered)
        if getattr(self, "_tuned", None) == want:
            return
        conn = self.conn        # connects first: what the server supports is learnt there
        settings = f"set hnsw.ef_search = {want[0]}; set ivfflat.probes = {cfg.probes}; "
        if self._iterative:
            # pgvector >= 0.8 keeps scanning the index until enough rows pass a filter
            settings += (f"set hnsw.iterative_scan = {'strict_order' if filtered else 'off'}; "
                         f"set ivfflat.iterative_scan = {'relaxed_order' if filtered else 'off'}")
        else:
            # Older releases stop after ef_search candidates, so a filter could leave fewer
            # than k rows: filtered queries scan exactly instead.
            settings += f"set enable_indexscan = {'off' if filtered else 'on'}"
        conn.execute(settings)
        self._tuned = want

    def _where(self, glob):
        """A path condition matching the glob as written or relative to the current folder,
        as `--where` does with FAISS."""
        if glob is None:
            return "", []
        regs = [glob_regex(glob)]
        if not glob.startswith("/"):
            regs.append(glob_regex(os.path.join(os.getcwd(), glob)))
        return " and (" + " or ".join(["path ~ %s"] * len(regs)) + ")", regs

    def search(self, vectors, k: int):
        import numpy as np
        vectors = np.asarray(vectors, dtype="float32")
        scores = np.zeros((len(vectors), k), "float32")
        ids = np.full((len(vectors), k), -1, "int64")
        for row, vector in enumerate(vectors):
            for col, (i, s) in enumerate(self.dense_search(vector, k)):
                ids[row, col], scores[row, col] = i, s
        return scores, ids

    def dense_search(self, vector, n: int, glob=None) -> list[tuple[int, float]]:
        import numpy as np
        cond, args = self._where(glob)
        v = np.asarray(vector, dtype="float32").reshape(-1)
        with self._errors():
            self._tune(n, glob is not None)
            rows = self.conn.execute(
                f"select id, -d from (select id, embedding <#> %s as d from {self.t} "
                f"where true{cond} order by embedding <#> %s limit %s) s order by d, id",
                [v, *args, v, n]).fetchall()
        return [(int(i), float(s)) for i, s in rows]

    def text_search(self, query: str, n: int, glob=None) -> list[tuple[int, float]]:
        """BM25 exactly as SQLite FTS5 computes it (k1 1.2, b 0.75, idf floored at 1e-6,
        document length in tokens, one term per query phrase), from the term positions in
        the `tsvector`: with the default `fts5` terms, the FAISS store's BM25 ranking."""
        self._check_text()
        lang = self.config.language
        cond, args = self._where(glob)
        with self._errors():
            conn = self.conn
            if lang == FTS5_CONFIG:
                phrases = self.terms.phrases(query)
            else:
                phrases = [[t] for t in conn.execute(
                    "select tsvector_to_array(to_tsvector(%s::regconfig, %s))",
                    [lang, query]).fetchone()[0]]
            if not phrases:
                return []
            q = tsquery_of(phrases)
            counts = ", ".join("count(*) filter (where tsv @@ %s::tsquery)" for _ in phrases)
            df = conn.execute(f"select {counts} from {self.t} where tsv @@ %s::tsquery",
                              [*[tsquery_of([p]) for p in phrases], q]).fetchone()
            total, words = conn.execute(
                f"select coalesce(sum(n), 0)::bigint, coalesce(sum(words), 0)::bigint "
                f"from {self.stats}"
            ).fetchone()
            if not total:
                total, words = conn.execute(
                    f"select count(*), coalesce(sum(words), 0)::bigint from {self.t}").fetchone()
            avg = max(float(words) / max(int(total), 1), 1.0)
            idf = [max(math.log((total - d + 0.5) / (d + 0.5)), 1e-6) for d in df]
            terms = list(dict.fromkeys(t for p in phrases for t in p))
            rows = conn.execute(self._bm25_sql(phrases, terms, idf, avg, cond),
                                [*terms, q, *args, *terms, n]).fetchall()
        return [(int(i), float(s)) for i, s in rows]

    def _bm25_sql(self, phrases, terms, idf, avg, cond) -> str:
        """Each matching chunk's positions of every query term, each phrase's count (the
        positions where its terms follow one another), then FTS5's sum over phrases."""
        at = {t: j for j, t in enumerate(terms)}
        marks = ", ".join(["%s"] * len(terms))
        arrays = ", ".join(f"coalesce(array_agg(p.pos) filter (where u.lexeme = %s), "
                           f"'{{}}') as a{j}" for j in range(len(terms)))
        # float8 throughout, as FTS5 computes in double (a bare 1.5 would be numeric)
        norm = f"{K1}::float8 * (1 - {B} + {B} * f.words / {float(avg)!r}::float8)"
        parts = []
        for phrase, w in zip(phrases, idf):
            first, *rest = [at[t] for t in phrase]
            if rest:
                follow = " and ".join(f"x + {k + 1} = any(a{j})" for k, j in enumerate(rest))
                tf = f"(select count(*) from unnest(a{first}) x where {follow})"
            else:
                tf = f"cardinality(a{first})"
            parts.append(f"{float(w)!r}::float8 * ({tf} * {K1 + 1} / ({tf} + {norm}))")
        # Only the query's lexemes are unnested, cut out in C (setweight marks them,
        # ts_filter keeps them): unnesting every lexeme in SQL took ~1.6x as long.
        return (f"with m as (select id, words, ts_filter(setweight(tsv, 'A', array[{marks}]"
                f"::text[]), '{{a}}') as qt from {self.t} where tsv @@ %s::tsquery{cond}), "
                f"f as (select m.id, m.words, {arrays} from m cross join lateral unnest(m.qt) u "
                f"cross join lateral unnest(u.positions) p(pos) group by m.id, m.words) "
                f"select id, {' + '.join(parts)} as s from f order by s desc, id limit %s")

    def describe(self) -> dict:
        with self._errors():
            conn = self.conn
            size = conn.execute("select pg_size_pretty(pg_total_relation_size(%s::regclass))",
                                [self.t]).fetchone()[0]
            index = conn.execute("select indexdef from pg_indexes where indexname = %s",
                                 [f"{self.t}_vec"]).fetchone()
            origins = conn.execute(f"select count(distinct origin) from {self.t}").fetchone()[0]
            return {"url": self.safe_url, "table": self.t, "dimension": self.dimension,
                    "embedder": self._meta("embedder"), "chunks (all workspaces)":
                    self.chunk_total(), "workspaces": origins, "size": size,
                    "vector index": index[0].split(" USING ")[-1] if index else "none (exact)",
                    "text terms": self._meta(TEXT_META) or "PostgreSQL's (older ragloop)"}


@hookimpl
def register_stores(register):
    register(PgvectorStore)
