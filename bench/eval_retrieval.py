"""Retrieval quality per mode on examples/questions.jsonl: recall@k and MRR@10 by source file.

Indexes examples/corpus into a throwaway workspace with the default embedder, then ranks
dense, BM25, hybrid with reciprocal-rank fusion, and hybrid with weighted fusion.

    python bench/eval_retrieval.py [-k 5]
"""

from __future__ import annotations

import argparse
import json

from _common import CORPUS, QUESTIONS, temp_workspace

from ragloop.core.pipeline.ingest import Indexer, discover
from ragloop.core.pipeline.search import Searcher

RUNS = [("dense", {"mode": "dense"}), ("bm25", {"mode": "bm25"}),
        ("hybrid rrf", {"mode": "hybrid", "fusion": "rrf"})] + [
        (f"hybrid weighted {w}", {"mode": "hybrid", "fusion": "weighted", "weight": w})
        for w in (0.3, 0.5, 0.7)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    ws = temp_workspace()
    indexer = Indexer(ws)
    known = indexer.known()
    for path in discover([CORPUS]):
        indexer.add_file(path, known)
    indexer.flush()
    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    searcher = Searcher(ws)
    print(f"{len(questions)} questions, {ws.db['chunks'].count} chunks, k={args.k}")
    print(f"{'mode':<22} recall@{args.k:<3} MRR@10")
    for label, kwargs in RUNS:
        recall = mrr = 0.0
        for q in questions:
            hits = searcher.search(q["question"], k=10, **kwargs)
            ranks = [i for i, h in enumerate(hits, 1) if h.path.endswith(q["source"])]
            recall += bool(ranks and ranks[0] <= args.k)
            mrr += 1.0 / ranks[0] if ranks else 0.0
        print(f"{label:<22} {recall / len(questions):.3f}      {mrr / len(questions):.3f}")


if __name__ == "__main__":
    main()
