"""Document-level retrieval metrics with bootstrap intervals, for bench/bench_retrieval.py.

A system returns chunks; `to_documents` turns them into a ranking of documents, each placed
at the rank of its best chunk, duplicates dropped. Per query: recall@k (the share of the
relevant documents in the top k), MRR@10 (1 / rank of the first relevant document, 0 past
10) and nDCG@10 (binary gains). Each mean gets a 95% percentile bootstrap interval over
queries; `paired_difference` resamples the same queries for two systems, so the interval
is for the difference itself, narrower than the two separate intervals suggest.
`speed_ratio` puts the same kind of interval on a ratio of two throughputs measured item by
item (bench/bench_generate.py: prompts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

CUTOFFS = (1, 5, 10)
METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
BOOTSTRAP_SAMPLES = 1000
CONFIDENCE = 0.95


def to_documents(chunk_docs: Iterable[str]) -> list[str]:
    """Documents in the order of their best (first) chunk."""
    return list(dict.fromkeys(chunk_docs))


def recall_at(ranking: Sequence[str], relevant: set[str], k: int) -> float:
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at(ranking: Sequence[str], relevant: set[str], k: int = 10) -> float:
    for rank, doc in enumerate(ranking[:k], 1):
        if doc in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranking: Sequence[str], relevant: set[str], k: int = 10) -> float:
    dcg = sum(1.0 / math.log2(rank + 1)
              for rank, doc in enumerate(ranking[:k], 1) if doc in relevant)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return dcg / ideal if ideal else 0.0


def query_scores(ranking: Sequence[str], relevant: Iterable[str]) -> dict[str, float]:
    """Every metric of one query; `ranking` is already by document."""
    relevant = set(relevant)
    scores = {f"recall@{k}": recall_at(ranking, relevant, k) for k in CUTOFFS}
    scores["mrr@10"] = mrr_at(ranking, relevant, 10)
    scores["ndcg@10"] = ndcg_at(ranking, relevant, 10)
    return scores


@dataclass
class Estimate:
    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high}


def _resamples(n: int, strata: Sequence[str] | None, samples: int, seed: int):
    """A (samples × n) array of bootstrap resample indices; with `strata`, each stratum (a
    corpus) is resampled within itself, so that every resample keeps the corpora's sizes."""
    import numpy as np
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i in range(n):
        groups.setdefault(strata[i] if strata else "", []).append(i)
    columns = []
    for key in sorted(groups):
        members = np.array(groups[key])
        columns.append(members[rng.integers(0, len(members), size=(samples, len(members)))])
    return np.concatenate(columns, axis=1)


def _percentiles(means, confidence: float) -> tuple[float, float]:
    import numpy as np
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap(values: Sequence[float], strata: Sequence[str] | None = None,
              samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
              confidence: float = CONFIDENCE) -> Estimate:
    """The mean of per-query values with a percentile bootstrap interval."""
    import numpy as np
    if not len(values):
        return Estimate(0.0, 0.0, 0.0)
    array = np.asarray(values, dtype=float)
    means = array[_resamples(len(array), strata, samples, seed)].mean(axis=1)
    return Estimate(float(array.mean()), *_percentiles(means, confidence))


def speed_ratio(work_a: Sequence[float], seconds_a: Sequence[float],
                work_b: Sequence[float], seconds_b: Sequence[float],
                samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                confidence: float = CONFIDENCE) -> Estimate:
    """(Σ work_a / Σ seconds_a) / (Σ work_b / Σ seconds_b), with a percentile bootstrap
    interval that resamples the items (index i of all four lists together)."""
    import numpy as np
    columns = np.asarray([work_a, seconds_a, work_b, seconds_b], dtype=float)
    if columns.shape[1] == 0:
        return Estimate(0.0, 0.0, 0.0)

    def ratio(sums):
        return (sums[0] / sums[1]) / (sums[2] / sums[3])
    picks = _resamples(columns.shape[1], None, samples, seed)
    ratios = ratio(columns[:, picks].sum(axis=2))
    return Estimate(float(ratio(columns.sum(axis=1))), *_percentiles(ratios, confidence))


def paired_difference(a: Sequence[float], b: Sequence[float],
                      strata: Sequence[str] | None = None, samples: int = BOOTSTRAP_SAMPLES,
                      seed: int = 0, confidence: float = CONFIDENCE) -> Estimate:
    """mean(a) − mean(b) over the same queries, with a paired bootstrap interval."""
    if len(a) != len(b):
        raise ValueError(f"paired values differ in length: {len(a)} and {len(b)}")
    return bootstrap([x - y for x, y in zip(a, b)], strata, samples, seed, confidence)


def summarize(per_query: list[dict[str, float]], strata: Sequence[str] | None = None,
              samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict[str, Estimate]:
    """Every metric's mean and interval over the queries' score dicts."""
    return {m: bootstrap([q[m] for q in per_query], strata, samples, seed) for m in METRICS}
