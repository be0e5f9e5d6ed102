"""Search latency at 10k and 100k chunks: `ragloop search` (dense and hybrid) against a bare
query encode + faiss.IndexFlatIP.search over the same vectors, back to back; plus the recall
of the IVF store against exact flat search at the largest size. Vectors and chunk texts are
synthetic (clustered, 384-d); the query encode is real. Target: dense ≤ 1.2× bare at 100k.

    python bench/bench_query.py [--sizes 10000 100000] [--queries 60]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import percentiles, temp_workspace

from ragloop.core.config import build_config
from ragloop.core.pipeline.search import Searcher
from ragloop.core.pipeline.vector_index import VectorIndex
from ragloop.core.registry import get_store

QUERIES = ["how do I install the tool on linux", "what is the default port", "vacation policy",
           "reset a forgotten password", "configure the cache size", "release notes for 2.0"]


def clustered(n, dim, rng, centres):
    x = centres[rng.integers(0, len(centres), n)] * 3 + rng.standard_normal((n, dim))
    x = x.astype("float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build(n: int, rng) -> tuple[VectorIndex, np.ndarray]:
    ws = temp_workspace()
    index = VectorIndex(ws)
    dim = index.embedder.dimension
    centres = rng.standard_normal((200, dim)).astype("float32")
    vectors = clustered(n, dim, rng, centres)
    vocab = [f"w{i}" for i in range(5000)] + " ".join(QUERIES).split()
    db = ws.db
    with db.atomic():
        doc = db["documents"].insert({"path": "/synthetic.txt", "content_hash": "x",
                                      "chunk_count": n}).last_pk
        words = rng.integers(0, len(vocab), (n, 30))
        db.conn.executemany("insert into chunks (document_id, seq, text, heading, start_line, end_line)"
                       " values (?, ?, ?, '', 1, 1)",
                       ((doc, i, " ".join(vocab[j] for j in row)) for i, row in enumerate(words)))
        ids = [r[0] for r in db.execute("select id from chunks order by id")]
        index.store.add(ids, vectors)
        index.record()
    return index, vectors, np.asarray(ids, dtype="int64")


def time_queries(fn, queries, repeat: int) -> list[float]:
    samples = []
    for i in range(repeat):
        q = queries[i % len(queries)]
        start = time.perf_counter()
        fn(q)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=60)
    args = parser.parse_args()
    import faiss
    rng = np.random.default_rng(0)
    for n in args.sizes:
        index, vectors, ids = build(n, rng)
        searcher = Searcher(index.ws, index)
        bare = faiss.IndexFlatIP(vectors.shape[1])
        bare.add(vectors)
        embedder = index.embedder
        embedder.encode(["warm up"])
        searcher.search("warm up", k=5, mode="hybrid")

        def bare_search(q):
            bare.search(embedder.encode([q]), 5)
        runs = {
            "bare encode+flat": lambda q: bare_search(q),
            "ragloop dense": lambda q: searcher.search(q, k=5, mode="dense"),
            "ragloop hybrid": lambda q: searcher.search(q, k=5, mode="hybrid"),
        }
        results = {name: [] for name in runs}
        for _ in range(3):                       # interleave, so drift hits all alike
            for name, fn in runs.items():
                results[name] += time_queries(fn, QUERIES, args.queries // 3)
        base = percentiles(results["bare encode+flat"])
        print(f"\n{n} chunks ({index.store.kind} store)")
        for name, samples in results.items():
            p50, p95 = percentiles(samples)
            print(f"  {name:<18} p50 {p50 * 1000:7.2f} ms  p95 {p95 * 1000:7.2f} ms  "
                  f"ratio p50 {p50 / base[0]:.2f}")
        if n == max(args.sizes):
            cls = get_store("faiss")
            ivf = cls(build_config(cls.Config, ["kind=ivf"]), index.ws.indexes_dir / "ivf",
                      vectors.shape[1])
            ivf.add(ids, vectors)
            queries = clustered(200, vectors.shape[1], rng, rng.standard_normal(
                (200, vectors.shape[1])).astype("float32"))
            queries = vectors[rng.integers(0, n, 200)] + 0.05 * queries
            _, exact = index.store.search(queries, 10)
            for nprobe in (8, 32, 64):
                ivf.index.nprobe = nprobe
                start = time.perf_counter()
                _, approx = ivf.search(queries, 10)
                ms = (time.perf_counter() - start) / len(queries) * 1000
                recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
                print(f"  IVF nlist {ivf.index.nlist} nprobe {nprobe}: recall@10 vs flat "
                      f"{recall:.3f}, {ms:.2f} ms/query (batched)")


if __name__ == "__main__":
    main()
