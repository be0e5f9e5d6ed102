"""Embedding speed and retrieval lost per embedder backend: torch fp32 against ONNX Runtime
(fp32, int8) and OpenVINO (int8), through ragloop's own sentence-transformers embedder.

Speed: the same sample of real ~800-character chunks (the retrieval benchmark's paragraph
chunks) encoded by every backend in turn, for several rounds whose order rotates; chunks/s
is the median over rounds and the speed-up a median of per-round ratios to torch, with the
lowest and highest round beside it (a busy machine slows whole rounds, not one backend).
Quality: each backend embeds every chunk and query of the retrieval benchmark's corpora
(bench/retrieval_corpora.py) and ranks documents by a flat inner-product search, as the
benchmark's dense baseline does; recall@10 and MRR@10 with 95% bootstrap intervals, and
each backend minus torch over the same queries (paired bootstrap).

    nice -n 10 python bench/bench_embed.py --threads 1 [--workdir DIR] [--json out.json]

Exports are made once into DIR/workspace (a temp folder without --workdir) and reused.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

from _common import finish, say, temp_folder
from bench_retrieval import paragraph_chunks, parse_limits
from retrieval_corpora import CORPUS_NAMES, build_corpora
from retrieval_metrics import paired_difference, query_scores, summarize, to_documents

BACKENDS = {
    "torch": (),
    "onnx": ("backend=onnx",),
    "onnx-int8": ("backend=onnx", "quantize=int8"),
    "openvino": ("backend=openvino",),
    "openvino-int8": ("backend=openvino", "quantize=int8"),
}
DEFAULT_BACKENDS = "torch,onnx,onnx-int8,openvino-int8"
SHOWN = ("recall@10", "mrr@10")


def make_embedder(ws, options):
    from ragloop.core.config import build_config
    from ragloop.plugins.embedders.sentence_transformers import SentenceTransformersEmbedder
    cls = SentenceTransformersEmbedder
    return cls(build_config(cls.Config, list(options), cls.name), workspace=ws)


def corpus_chunks(folder: Path, size: int) -> tuple[list[str], list[str]]:
    chunks, docs = [], []
    for path in sorted(folder.glob("*.md")):
        for chunk in paragraph_chunks(path.read_text(encoding="utf-8"), size):
            chunks.append(chunk)
            docs.append(path.name)
    return chunks, docs


def speed(embedders: dict, sample: list[str], rounds: int) -> dict:
    """chunks/s per backend per round, the order rotating each round."""
    names = list(embedders)
    per_round = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            started = time.perf_counter()
            embedders[name].encode(sample)
            per_round[name].append(len(sample) / (time.perf_counter() - started))
        say(f"  round {r + 1}/{rounds}: " + ", ".join(
            f"{n} {per_round[n][-1]:.1f}" for n in names) + " chunks/s")
    out = {}
    for name in names:
        ratios = [x / t for x, t in zip(per_round[name], per_round["torch"])]
        out[name] = {"chunks_per_s": statistics.median(per_round[name]),
                     "rounds": per_round[name], "speedup": statistics.median(ratios),
                     "speedup_low": min(ratios), "speedup_high": max(ratios)}
    return out


def rankings(embedder, chunks, docs, queries, depth: int = 100) -> list[list[str]]:
    import numpy as np
    vectors = embedder.encode(chunks)
    asked = embedder.encode([q.text for q in queries])
    scores = asked @ vectors.T
    top = np.argsort(-scores, axis=1)[:, :depth]
    return [to_documents(docs[i] for i in row) for row in top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=DEFAULT_BACKENDS,
                        help="comma-separated, of: " + ", ".join(BACKENDS))
    parser.add_argument("--corpora", default=",".join(CORPUS_NAMES))
    parser.add_argument("--limit", action="append", metavar="NAME=N",
                        help="pages (man corpora) or questions (faq) of a corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="corpora and exports here, reused by the next run")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for every backend (torch's, and the runtimes follow)")
    parser.add_argument("--chars", type=int, default=800, help="characters per chunk")
    parser.add_argument("--speed-chunks", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-quality", action="store_true", help="speed only")
    parser.add_argument("--json", type=Path, default=None, help="save the numbers here")
    args = parser.parse_args()

    import torch

    from ragloop.core import Workspace
    names = [b for b in args.backends.split(",") if b]
    if "torch" not in names or any(b not in BACKENDS for b in names):
        raise SystemExit(f"--backends: torch plus any of {', '.join(BACKENDS)}")
    torch.set_num_threads(args.threads)
    workdir = args.workdir or temp_folder("ragloop-embed-")   # removed at exit
    workdir.mkdir(parents=True, exist_ok=True)
    corpora = build_corpora(workdir, [c for c in args.corpora.split(",") if c],
                            parse_limits(args.limit), args.seed, say)
    ws = Workspace(workdir / "workspace")
    say(f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, "
        f"{os.cpu_count()} CPUs")
    embedders, load = {}, {}
    for name in names:
        started = time.perf_counter()
        embedders[name] = make_embedder(ws, BACKENDS[name])
        embedders[name].encode(["warm up"])
        load[name] = round(time.perf_counter() - started, 1)
        say(f"{name}: {embedders[name].id} ready in {load[name]}s")

    texts = {c.name: corpus_chunks(c.folder, args.chars) for c in corpora}
    pool = [t for chunks, _ in texts.values() for t in chunks if len(t) >= args.chars // 2]
    sample = random.Random(args.seed).sample(pool, min(args.speed_chunks, len(pool)))
    say(f"speed: {len(sample)} chunks (mean {statistics.mean(map(len, sample)):.0f} "
        f"characters) × {len(names)} backends × {args.rounds} rounds")
    report = {"config": {**vars(args), "workdir": str(workdir), "json": str(args.json)},
              "ids": {n: e.id for n, e in embedders.items()}, "ready_seconds": load,
              "speed": speed(embedders, sample, args.rounds)}
    print(f"{'backend':<15} {'chunks/s':>9}  speed-up vs torch [lowest, highest round]")
    for name, s in report["speed"].items():
        print(f"{name:<15} {s['chunks_per_s']:9.1f}  {s['speedup']:.2f}× "
              f"[{s['speedup_low']:.2f}, {s['speedup_high']:.2f}]")

    if not args.no_quality:
        scores = {n: [] for n in names}
        strata: list[str] = []
        for corpus in corpora:
            chunks, docs = texts[corpus.name]
            say(f"quality: {corpus.name}, {len(chunks)} chunks, {len(corpus.queries)} queries")
            for name in names:
                ranked = rankings(embedders[name], chunks, docs, corpus.queries)
                scores[name] += [query_scores(r, q.relevant)
                                 for r, q in zip(ranked, corpus.queries)]
            strata += [corpus.name] * len(corpus.queries)
        quality = {}
        print(f"\n{len(strata)} queries over {len(corpora)} corpora")
        print(f"{'backend':<15} " + " ".join(f"{m:>22}" for m in SHOWN) +
              "   " + " ".join(f"{'Δ ' + m + ' vs torch':>28}" for m in SHOWN))
        for name in names:
            summary = summarize(scores[name], strata)
            diffs = {m: paired_difference([q[m] for q in scores[name]],
                                          [q[m] for q in scores["torch"]], strata)
                     for m in SHOWN}
            quality[name] = {"summary": {m: e.to_dict() for m, e in summary.items()},
                             "minus_torch": {m: e.to_dict() for m, e in diffs.items()}}
            print(f"{name:<15} " + " ".join(f"{str(summary[m]):>22}" for m in SHOWN) + "   " +
                  " ".join(f"{diffs[m].mean:+.4f} [{diffs[m].low:+.4f}, {diffs[m].high:+.4f}]"
                           for m in SHOWN))
        report["quality"] = {"queries": len(strata), "backends": quality}
    finish(report, args.json)


if __name__ == "__main__":
    main()
