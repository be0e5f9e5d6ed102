"""SQLite FTS5's own terms for the pgvector store's BM25, so that it ranks as the FAISS
store's BM25 (the workspace's `chunks_fts` table) does: the same tokenizer, the same terms,
the same term frequencies and document lengths.

Texts are tokenized by an in-memory FTS5 table declared like `chunks_fts` (columns text,
heading; the porter tokenizer) and read back through an `fts5vocab` table of type
`instance` (term, document, column, offset). A chunk becomes a `tsvector` literal whose
positions are those offsets, the heading's placed after the text's with a gap so that no
phrase spans the two columns (FTS5 matches phrases within one column). A query becomes what
`fts_query` (core/pipeline/search.py) sends FTS5: one phrase per distinct lower-cased `\\w+`
word, each the FTS5 terms of that word (`pthread_create` is the phrase `pthread create`).
"""

from __future__ import annotations

import re
import sqlite3
import threading

from ragloop.stores.pg_common import quote_lexeme

# Source: core/migrations.py (m002) declares chunks_fts with
# enable_fts(["text", "heading"], tokenize="porter"); not in ragloop.core's public API, so
# duplicated here. tests/test_pgvector.py checks it against a workspace's declaration.
FTS5_TOKENIZE = "porter"
FTS5_COLUMNS = ("text", "heading")

MAX_POSITION = 16383        # PostgreSQL keeps tsvector positions up to this (larger: clamped)
MAX_LEXEME_BYTES = 2046     # ... and lexemes of at most 2046 bytes (a longer one is refused)


class Fts5Terms:
    """A private in-memory FTS5 table; safe to share between threads (one lock)."""

    def __init__(self):
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        cols = ", ".join(FTS5_COLUMNS)
        self._db.execute(f"create virtual table t using fts5({cols}, "
                         f"tokenize='{FTS5_TOKENIZE}')")
        self._db.execute("create virtual table v using fts5vocab(t, 'instance')")

    def _instances(self, rows) -> dict[int, list[tuple[str, int, str]]]:
        """{row: [(column, offset, term)]} for rows given as (text, heading)."""
        out: dict[int, list[tuple[str, int, str]]] = {i: [] for i in range(len(rows))}
        with self._lock:
            try:
                self._db.executemany("insert into t(rowid, text, heading) values (?, ?, ?)",
                                     [(i, text, heading) for i, (text, heading)
                                      in enumerate(rows)])
                for term, doc, col, offset in self._db.execute(
                        "select term, doc, col, offset from v"):
                    out[doc].append((col, offset, term))
            finally:
                self._db.execute("delete from t")
        return out

    def documents(self, rows) -> list[tuple[str, int]]:
        """For each (text, heading): its tsvector literal and its length in FTS5 tokens (the
        document length BM25 uses)."""
        found = self._instances([(text, heading or "") for text, heading in rows])
        out = []
        for i in range(len(rows)):
            inst = found[i]
            text_len = 1 + max((o for c, o, _ in inst if c == "text"), default=-1)
            positions: dict[str, list[int]] = {}
            for col, offset, term in inst:
                # tsvector positions start at 1; the heading's follow the text's after a gap
                pos = offset + 1 if col == "text" else text_len + 2 + offset
                positions.setdefault(term, []).append(min(pos, MAX_POSITION))
            # A term over 2 KB cannot be a tsvector lexeme; no query word would match it.
            literal = " ".join(
                f"{quote_lexeme(term)}:{','.join(map(str, sorted(set(pos))))}"
                for term, pos in sorted(positions.items())
                if len(term.encode()) <= MAX_LEXEME_BYTES)
            out.append((literal, len(inst)))
        return out

    def phrases(self, query: str) -> list[list[str]]:
        """The phrases FTS5 searches for `fts_query(query)`: one per distinct lower-cased word,
        in order, duplicates of stems kept (FTS5 scores each phrase); words without a term
        are left out (an empty phrase matches nothing and adds nothing)."""
        words = list(dict.fromkeys(re.findall(r"\w+", query.lower())))
        found = self._instances([(w, "") for w in words])
        out = []
        for i in range(len(words)):
            terms = [t for _, _, t in sorted(found[i])]
            if terms and all(len(t.encode()) <= MAX_LEXEME_BYTES for t in terms):
                out.append(terms)
        return out

