"""What the pgvector store shares with its callers: its options, the URL without its
password, shell globs as PostgreSQL regular expressions, and quoting for tsquery."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

INSTALL = "pip install 'ragloop[pgvector]'"
URL_ENV = "RAGLOOP_STORE_URL"
ORIGIN_SETTING = "store.pgvector.origin"
K1, B = 1.2, 0.75          # BM25's usual constants, as SQLite FTS5 uses them
FTS5_CONFIG = "fts5"       # `language`: SQLite FTS5's terms (stores/fts5_terms.py)
TEXT_META = "text_config"  # the `language` a table's tsvectors were made with (_meta)


@dataclass
class PgvectorConfig:
    url: str = field(default="", metadata={
        "help": f"postgresql://USER@HOST:PORT/DB (default: ${URL_ENV}); the password comes "
                f"from PGPASSWORD or ~/.pgpass and is never recorded."})
    table: str = field(default="ragloop", metadata={
        "help": "Prefix of the tables (<table>_chunks, _meta, _stats): one per index."})
    index: Literal["hnsw", "ivfflat", "none"] = field(default="hnsw", metadata={
        "help": "Vector index: hnsw, ivfflat (build it after loading), or none (exact)."})
    m: int = field(default=16, metadata={"help": "HNSW: links per node."})
    ef_construction: int = field(default=64, metadata={"help": "HNSW: build candidate list."})
    # 200: the smallest of 40/100/200/400 that reached recall@10 0.95 on 100k vectors
    # shaped like MiniLM embeddings (bench/bench_pgvector.py; 100 gave 0.935), for ~4 ms more.
    # A million chunks need 800 (0.953-0.960; docs/pgvector.md).
    ef_search: int = field(default=200, metadata={
        "help": "HNSW: search candidate list (raised to k when k is larger)."})
    lists: int = field(default=100, metadata={"help": "IVFFlat: lists."})
    probes: int = field(default=10, metadata={"help": "IVFFlat: lists searched per query."})
    # fts5: BM25 over the terms the FAISS store's SQLite FTS5 table holds, so both stores
    # rank alike; a PostgreSQL configuration stems and drops stop words its own way.
    language: str = field(default=FTS5_CONFIG, metadata={
        "help": "Text terms for BM25: fts5 (SQLite FTS5's porter tokenizer, as the FAISS "
                "store ranks) or a PostgreSQL text search configuration (english, simple, "
                "...: its own stemming and stop words, so ranks differ from FAISS's)."})

    def __post_init__(self):
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", self.table):
            raise ValueError("table must be lower-case letters, digits and _ (at most 41)")
        if self.language != FTS5_CONFIG and not re.fullmatch(r"[a-z_]+", self.language):
            raise ValueError(f"language must be {FTS5_CONFIG} or a PostgreSQL text search "
                             f"configuration name, e.g. english")
        for name in ("m", "ef_construction", "ef_search", "lists", "probes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


def strip_password(url: str) -> str:
    """The URL without a password (in the user part or a password= parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"],
                      safe="/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def glob_regex(glob: str) -> str:
    """A shell glob as an anchored POSIX regular expression (`*` crosses `/`, as fnmatch)."""
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        end = glob.find("]", i + 2) if c == "[" else -1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif end > 0:
            inner = glob[i + 1:end]
            out.append("[" + ("^" + inner[1:] if inner.startswith("!") else inner) + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "^" + "".join(out) + "$"


def first_line(exc) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def quote_lexeme(term: str) -> str:
    """A lexeme quoted for a tsvector or tsquery literal."""
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


def tsquery_of(phrases) -> str:
    """Phrases (lists of lexemes) as a tsquery matching any of them; `<->` asks for
    adjacent positions, as an FTS5 phrase does."""
    return " | ".join("(" + " <-> ".join(quote_lexeme(t) for t in p) + ")" for p in phrases)
