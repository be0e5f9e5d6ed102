"""Dedup filters: `exact-dedup` (normalized hash) and `near-dedup` (MinHash LSH).

Both keep the first record of a group of duplicates, in the order records arrive, and name
it in the reason of the others. They set `compares`, so at index time they are also shown
the documents already in the index: a new file repeating an indexed one is dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ragloop.core import (
    RECORD_KINDS,
    Filter,
    FilterResult,
    RagloopError,
    describe,
    hookimpl,
    joined,
)

FIELDS_HELP = ("Record fields compared, comma-separated (default: text for documents; "
               "prompt+completion for kto/sft; prompt+chosen+rejected for pairs).")


def normalize(text: str) -> str:
    """Lower-cased, whitespace collapsed: how two texts are compared for equality."""
    return " ".join(str(text).lower().split())


def _ref(record: dict) -> str:
    return describe(record) + (" (indexed)" if record.get("indexed") else "")


def _check_fields(records: list[dict], fields: list[str]) -> None:
    # A misspelt field reads as empty text everywhere, which would make every record a
    # duplicate of the first.
    missing = [f for f in fields if records and f not in records[-1]]
    if missing:
        raise RagloopError(f"field {missing[0]!r} is not in the records; they have "
                           f"{', '.join(k for k in records[-1] if k != 'indexed')}")


@dataclass
class ExactDedupConfig:
    fields: list[str] = field(default_factory=list, metadata={"help": FIELDS_HELP})


class ExactDedup(Filter):
    name = "exact-dedup"
    description = "Drops records whose text repeats an earlier one (case and spacing ignored)."
    applies_to = RECORD_KINDS
    compares = True
    Config = ExactDedupConfig

    def apply(self, records):
        records = list(records)
        _check_fields(records, self.config.fields)
        first: dict[bytes, dict] = {}
        result = FilterResult(kept=[])
        for record in records:
            text = normalize(joined(record, self.config.fields))
            key = hashlib.sha256(text.encode()).digest()
            if key in first:
                result.removed.append((record, f"exact duplicate: same text as {_ref(first[key])}"))
            else:
                first[key] = record
                result.kept.append(record)
        return result


@dataclass
class NearDedupConfig:
    threshold: float = field(default=0.8, metadata={
        "help": "Jaccard similarity of word shingles from which a record counts as a near "
                "duplicate, in (0, 1]."})
    num_perm: int = field(default=128, metadata={
        "help": "MinHash permutations: more estimate similarity better, and cost more."})
    shingle: int = field(default=3, metadata={"help": "Words per shingle."})
    seed: int = field(default=1, metadata={"help": "MinHash seed; same seed, same result."})
    fields: list[str] = field(default_factory=list, metadata={"help": FIELDS_HELP})

    def __post_init__(self):
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.num_perm < 16:
            raise ValueError(f"num_perm must be at least 16, got {self.num_perm}")
        if self.shingle < 1:
            raise ValueError(f"shingle must be at least 1, got {self.shingle}")


def bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows per band) with the most rows that still propose a pair at the threshold
    99% of the time. LSH only proposes candidates and each is checked against the
    threshold, so recall is what matters; datasketch's own choice fails near 1."""
    best = (num_perm, 1)
    for rows in range(1, num_perm // 2 + 1):
        b = num_perm // rows
        if 1 - (1 - threshold ** rows) ** b >= 0.99:
            best = (b, rows)
    return best


class NearDedup(Filter):
    name = "near-dedup"
    description = "Drops records nearly repeating an earlier one (MinHash LSH on word shingles)."
    applies_to = RECORD_KINDS
    compares = True
    Config = NearDedupConfig

    def _minhash(self, text: str):
        from datasketch import MinHash
        words = normalize(text).split()
        n = self.config.shingle
        shingles = {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}
        m = MinHash(num_perm=self.config.num_perm, seed=self.config.seed)
        m.update_batch([s.encode() for s in shingles])
        return m

    def apply(self, records):
        from datasketch import MinHashLSH
        records = list(records)
        _check_fields(records, self.config.fields)
        cfg = self.config
        lsh = MinHashLSH(num_perm=cfg.num_perm, params=bands(cfg.num_perm, cfg.threshold))
        kept_hashes = {}
        result = FilterResult(kept=[])
        for i, record in enumerate(records):
            text = joined(record, cfg.fields)
            if not text.strip():
                result.kept.append(record)
                continue
            m = self._minhash(text)
            best = max(((m.jaccard(kept_hashes[j][0]), j) for j in lsh.query(m)), default=None)
            if best and best[0] >= cfg.threshold:
                other = kept_hashes[best[1]][1]
                result.removed.append((record, f"near duplicate: ~{best[0]:.2f} similar to "
                                               f"{_ref(other)}"))
                continue
            lsh.insert(i, m)
            kept_hashes[i] = (m, record)
            result.kept.append(record)
        return result


@hookimpl
def register_filters(register):
    register(ExactDedup)
    register(NearDedup)
