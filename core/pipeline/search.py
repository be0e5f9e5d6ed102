"""Search the workspace's chunks: dense (vectors), BM25 (SQLite FTS5), or both fused.

Hybrid search takes the best CANDIDATES chunks from each and fuses them: by default a
weighted sum (0.7 dense, 0.3 BM25) of min-max normalized scores, or by reciprocal-rank
fusion. Both numbers were chosen on the real-text benchmark (`bench/bench_retrieval.py`,
docs/retrieval-benchmark.md): fusing deeper lists (the old max(10k, 50)) let a long tail of
weak candidates squeeze the min-max range, and dense scores carry more of the answer than
BM25 there. An optional reranker plugin reorders the fused candidates (off by default);
`expand="section"` returns each hit's enclosing section (core/pipeline/sections.py).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ragloop.core import registry
from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.sections import EXPANSIONS, expand_to_sections
from ragloop.core.pipeline.vector_index import (
    DEFAULT_STORE,
    INDEX_NAME,
    VectorIndex,
    embed_text,
)

MODES = ("hybrid", "dense", "bm25")
FUSIONS = ("weighted", "rrf")
CANDIDATES = 50           # chunks taken from each list before fusing, reranking or expanding
DENSE_WEIGHT = 0.7        # weighted fusion: this much dense, the rest BM25
RRF_K = 60


@dataclass
class Hit:
    chunk_id: int
    path: str
    heading: str
    start_line: int
    end_line: int
    text: str
    score: float

    @property
    def source(self) -> str:
        return f"{display_path(self.path)}:{self.start_line}-{self.end_line}"

    def to_dict(self) -> dict:
        return {**asdict(self), "source": self.source}


def display_path(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def parse_where(where: tuple[str, ...] | list[str]) -> str | None:
    """`path=GLOB` is the one condition today; anything else is refused by name."""
    glob = None
    for cond in where or ():
        key, sep, value = cond.partition("=")
        if key.strip() != "path" or not sep or not value:
            raise RagloopError(f"--where {cond!r} is not understood; write --where path=GLOB")
        glob = value.strip()
    return glob


def _path_matches(path: str, glob: str | None) -> bool:
    return glob is None or fnmatch.fnmatch(path, glob) or fnmatch.fnmatch(display_path(path), glob)


def fts_query(text: str) -> str:
    """Words as quoted FTS5 terms joined by OR: user text never reaches FTS5 syntax."""
    words = re.findall(r"\w+", text.lower())
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


class Searcher:
    def __init__(self, ws, index: VectorIndex | None = None):
        self.ws = ws
        self.db = ws.db
        self._index = index

    @property
    def index(self) -> VectorIndex:
        if self._index is None:
            self._index = VectorIndex(self.ws)
        return self._index

    @property
    def shared(self):
        """The store when it keeps the chunks' text itself (a database several workspaces
        share): full-text search, filters and chunk lookups then run there."""
        if self._index is None:
            # BM25 on the default store loads no plugin (the registry would load them all)
            row = self.db.execute("select store from index_state where name = ?",
                                  [INDEX_NAME]).fetchone()
            if not row or row[0] == DEFAULT_STORE or not registry.get_store(row[0]).holds_text:
                return None
        return self.index.store if self.index.store_cls.holds_text else None

    def require_index(self) -> None:
        if self.db["chunks"].count:
            return
        if self.shared is not None and self.shared.chunk_total():
            return
        raise RagloopError("nothing is indexed yet; run `ragloop index PATH` first")

    def dense(self, query: str, n: int, glob: str | None = None) -> list[tuple[int, float]]:
        index = self.index
        index.ensure_consistent()
        vector = index.encode([query])
        if glob is not None and self.shared is not None:
            return self.shared.dense_search(vector[0], n, glob)
        fetch = n if glob is None else min(len(index.store), max(n * 20, 1000))
        scores, ids = index.store.search(vector, max(1, fetch))
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        if glob is not None:
            paths = self._paths([i for i, _ in found])
            found = [(i, s) for i, s in found if _path_matches(paths.get(i, ""), glob)]
        return found[:n]

    def bm25(self, query: str, n: int, glob: str | None = None) -> list[tuple[int, float]]:
        if self.shared is not None:
            return self.shared.text_search(query, n, glob)
        match = fts_query(query)
        if not match:
            return []
        if glob is None:
            # No path to test: FTS5 ranks alone, without joining every matching row to its
            # chunk and document first (half the time at 100k chunks; triggers keep
            # chunks_fts in step with chunks, so the join would drop nothing).
            rows = self.db.execute(
                "select rowid, -bm25(chunks_fts) from chunks_fts where chunks_fts match ? "
                "order by bm25(chunks_fts) limit ?", [match, n]).fetchall()
            return [(int(r[0]), float(r[1])) for r in rows]
        rows = self.db.execute(
            "select chunks_fts.rowid, -bm25(chunks_fts) as score, documents.path "
            "from chunks_fts join chunks on chunks.id = chunks_fts.rowid "
            "join documents on documents.id = chunks.document_id "
            "where chunks_fts match ? order by bm25(chunks_fts) limit ?",
            [match, n if glob is None else max(n * 20, 1000)]).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows if _path_matches(r[2], glob)][:n]

    def search(self, query: str, k: int = 5, mode: str = "hybrid", where=(),
               fusion: str = "weighted", weight: float = DENSE_WEIGHT,
               rerank: str | None = None, rerank_options=(), expand: str = "chunk") -> list[Hit]:
        if mode not in MODES:
            raise RagloopError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
        if fusion not in FUSIONS:
            raise RagloopError(f"unknown fusion {fusion!r}; fusions: {', '.join(FUSIONS)}")
        if expand not in EXPANSIONS:
            raise RagloopError(f"unknown expansion {expand!r}; use one of: "
                               f"{', '.join(EXPANSIONS)}")
        if k < 1:
            raise RagloopError("-k must be at least 1")
        if not query.strip():
            raise RagloopError("the query is empty; give some words to search for")
        self.require_index()
        glob = parse_where(where)
        # Fusion, reranking and collapsing hits into sections each need more than k; past
        # CANDIDATES, deeper lists only made fusion worse on the benchmark.
        n = max(k, CANDIDATES) if (mode == "hybrid" or rerank or expand == "section") else k
        if mode == "dense":
            ranked = self.dense(query, n, glob)
        elif mode == "bm25":
            ranked = self.bm25(query, n, glob)
        else:
            lists = [self.dense(query, n, glob), self.bm25(query, n, glob)]
            ranked = rrf(lists) if fusion == "rrf" else weighted(lists, weight)
        hits = self.hits(ranked)
        if rerank:
            cls = registry.get_reranker(rerank)
            config = build_config(cls.Config, rerank_options, rerank)
            hits = cls(config, workspace=self.ws).rerank(query, hits)
        if expand == "section" and not self._foreign(hits):
            hits = expand_to_sections(self.db, hits, limit=k)
        return hits[:k]

    def _paths(self, ids: list[int]) -> dict[int, str]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return dict(self.db.execute(
            f"select chunks.id, documents.path from chunks join documents "
            f"on documents.id = chunks.document_id where chunks.id in ({marks})", ids).fetchall())

    def hits(self, ranked: list[tuple[int, float]]) -> list[Hit]:
        """Hits for chunk ids (a rating's recorded ids too): from this workspace's database,
        else from a shared store that holds chunks other workspaces indexed."""
        if not ranked:
            return []
        ids = [i for i, _ in ranked]
        marks = ",".join("?" * len(ids))
        rows = {r[0]: r[1:] for r in self.db.execute(
            f"select c.id, d.path, c.heading, c.start_line, c.end_line, c.text from chunks c "
            f"join documents d on d.id = c.document_id where c.id in ({marks})", ids)}
        missing = [i for i in ids if i not in rows]
        if missing and self.shared is not None:
            rows.update(self.shared.chunk_rows(missing))
        return [Hit(i, *rows[i], score=s) for i, s in ranked if i in rows]

    def _foreign(self, hits: list[Hit]) -> bool:
        """Whether a hit came from another workspace (sections are read from this one's
        database, so such hits stay single chunks)."""
        if self.shared is None or not hits:
            return False
        ids = [h.chunk_id for h in hits]
        marks = ",".join("?" * len(ids))
        return self.db.execute(f"select count(*) from chunks where id in ({marks})",
                               ids).fetchone()[0] < len(set(ids))


def rrf(lists: list[list[tuple[int, float]]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: robust to the two lists' incomparable score scales."""
    scores: dict[int, float] = {}
    for ranked in lists:
        for rank, (chunk_id, _) in enumerate(ranked):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def weighted(lists: list[list[tuple[int, float]]], weight: float) -> list[tuple[int, float]]:
    """`weight` × normalized dense score + (1 − weight) × normalized BM25 score."""
    scores: dict[int, float] = {}
    for ranked, w in zip(lists, (weight, 1.0 - weight)):
        if not ranked:
            continue
        values = [s for _, s in ranked]
        lo, hi = min(values), max(values)
        for chunk_id, s in ranked:
            norm = (s - lo) / (hi - lo) if hi > lo else 1.0
            scores[chunk_id] = scores.get(chunk_id, 0.0) + w * norm
    return sorted(scores.items(), key=lambda kv: -kv[1])


__all__ = ["Hit", "Searcher", "rrf", "weighted", "embed_text", "MODES", "CANDIDATES",
           "DENSE_WEIGHT"]
