"""Search latency as users meet it, in one run: a cold `ragloop search` (a new process each
time) and a warm `Ragloop.search` (the Python API, models loaded once), against a bare query
encode + faiss.IndexFlatIP.search over the same vectors.

Cold: `ragloop search` on a workspace holding examples/corpus, hybrid (the default) and
`--mode bm25` (which loads no embedder: the command's own start-up cost), p50 over --runs.
Hybrid runs twice: with the ONNX export that `index` makes (the query is encoded without
torch) and with that export moved away (the torch path: imports sentence-transformers).
Warm: 10k and 100k synthetic chunks (bench_query.py's clustered vectors and random-word
texts; the query encode is real), dense and hybrid, timed interleaved with the bare search.
Targets (issue 12): cold ≤ 2.5 s; warm hybrid at 100k ≤ 1.2× bare. Also prints one query's
encode time with torch's default thread count and with 1 thread.

    python bench/bench_search_latency.py [--sizes 10000 100000] [--queries 60] [--runs 5]
                                         [--cold-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import CORPUS, percentiles
from bench_query import QUERIES, build, time_queries

from ragloop.core import Ragloop

RAGLOOP = str(Path(sys.executable).with_name("ragloop"))


def cold_cli(runs: int) -> dict[str, float]:
    """p50 seconds of `ragloop search` as a new process, per mode, after one untimed run
    (which fills the OS file cache, as any earlier command would have). "hybrid torch" is
    hybrid with the embedder's export moved away, as before the light query path."""
    home = tempfile.mkdtemp(prefix="ragloop-bench-cold-")
    env = {**os.environ, "RAGLOOP_HOME": home}
    exports = Path(home) / "models" / "embedder-exports"
    aside = Path(home) / "exports-aside"
    try:
        subprocess.run([RAGLOOP, "index", str(CORPUS)], env=env, check=True,
                       capture_output=True)
        out, found = {}, {}
        for name, mode in (("hybrid", "hybrid"), ("bm25", "bm25"), ("hybrid torch", "hybrid")):
            if name == "hybrid torch" and exports.exists():
                exports.rename(aside)
            cmd = [RAGLOOP, "search", "how do I install ferrule on linux", "--mode", mode,
                   "--json"]
            found[name] = subprocess.run(cmd, env=env, check=True, capture_output=True).stdout
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                subprocess.run(cmd, env=env, check=True, capture_output=True)
                samples.append(time.perf_counter() - start)
            out[name] = percentiles(samples)[0]
        light, torch_path = (json.loads(found[k]) for k in ("hybrid", "hybrid torch"))
        out["same results"] = [h["chunk_id"] for h in light] == \
            [h["chunk_id"] for h in torch_path] and max(
                abs(a["score"] - b["score"]) for a, b in zip(light, torch_path)) < 1e-5
        return out
    finally:
        shutil.rmtree(home, ignore_errors=True)


def warm_api(n: int, queries: int, rng) -> dict[str, tuple[float, float]]:
    index, vectors, _ = build(n, rng)
    rl = Ragloop(index.ws.home)
    embedder = rl.embedder
    import faiss
    bare = faiss.IndexFlatIP(vectors.shape[1])
    bare.add(vectors)
    rl.search("warm up", mode="hybrid")             # loads the embedder and the vectors
    runs = {
        "bare encode+flat": lambda q: bare.search(embedder.encode([q]), 5),
        "Ragloop dense": lambda q: rl.search(q, k=5, mode="dense"),
        "Ragloop hybrid": lambda q: rl.search(q, k=5, mode="hybrid"),
        "Ragloop bm25": lambda q: rl.search(q, k=5, mode="bm25"),
    }
    results = {name: [] for name in runs}
    for _ in range(3):                              # interleaved, so drift hits all alike
        for name, fn in runs.items():
            results[name] += time_queries(fn, QUERIES, max(1, queries // 3))
    rl.close()
    index.ws.close()
    shutil.rmtree(index.ws.home, ignore_errors=True)      # 100k chunks: ~180 MB
    return {name: percentiles(samples) for name, samples in results.items()}


def encode_threads(queries: int) -> dict[str, float]:
    """p50 ms of encoding one query on the torch path: the model's own encode with torch's
    default thread count and with 1 thread, and the embedder's encode (which sets 1 thread
    for a query and restores the count), interleaved."""
    import torch
    from ragloop.core import registry
    embedder = registry.get_embedder("sentence-transformers")()
    embedder.encode(["warm up"])
    model = embedder.model
    default = torch.get_num_threads()

    def with_threads(threads):
        def run(q):
            torch.set_num_threads(threads)
            model.encode([q], normalize_embeddings=True)
        return run
    runs = {f"{default} threads": with_threads(default), "1 thread": with_threads(1),
            "embedder (1 thread, restored per call)": lambda q: embedder.encode([q])}
    samples = {name: [] for name in runs}
    for _ in range(3):
        for name, fn in runs.items():
            samples[name] += time_queries(fn, QUERIES, max(1, queries // 3))
    torch.set_num_threads(default)
    return {name: percentiles(s)[0] * 1000 for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=60, help="Warm queries per variant.")
    parser.add_argument("--runs", type=int, default=5, help="Cold processes per mode.")
    parser.add_argument("--cold-only", action="store_true", help="Only the cold CLI runs.")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch threads for the "
                        "warm runs (0: torch's default); 1 is what a single-query encode "
                        "would use if the embedder set it (see the encode line printed last).")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    cold = cold_cli(args.runs)
    print(f"cold `ragloop search` (new process), p50 of {args.runs}: "
          f"hybrid {cold['hybrid']:.2f} s, bm25 {cold['bm25']:.2f} s (target ≤ 2.5 s); "
          f"hybrid on the torch path (no export) {cold['hybrid torch']:.2f} s "
          f"({cold['hybrid torch'] / cold['hybrid']:.1f}×); same results: "
          f"{cold['same results']}")
    if args.cold_only:
        return
    rng = np.random.default_rng(0)
    if args.torch_threads:
        import torch
        torch_default = torch.get_num_threads()
        torch.set_num_threads(args.torch_threads)
        print(f"warm runs with {args.torch_threads} torch thread(s)")
    for n in args.sizes:
        stats = warm_api(n, args.queries, rng)
        base = stats["bare encode+flat"][0]
        print(f"\nwarm Ragloop.search, {n} chunks")
        for name, (p50, p95) in stats.items():
            print(f"  {name:<17} p50 {p50 * 1000:7.2f} ms  p95 {p95 * 1000:7.2f} ms  "
                  f"ratio p50 {p50 / base:.2f}")
        if n == max(args.sizes):
            warm = stats["Ragloop hybrid"][0]
            print(f"  cold hybrid / warm hybrid p50: {cold['hybrid'] / warm:.0f}×")
    if args.torch_threads:
        torch.set_num_threads(torch_default)
    threads = encode_threads(args.queries // 2)
    print("\none query's encode (torch), p50: " + ", ".join(
        f"{name} {ms:.1f} ms" for name, ms in threads.items()))


if __name__ == "__main__":
    main()
