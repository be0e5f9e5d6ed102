"""Filters on how training rows were rated: `min-agreement` and `drop-ties`.

Both read the workspace's ratings behind a row (its `comparison_id`, or `candidate_id` for
rows decided by 1-5 scores), as `core.prefs` counts them: each rater id's latest vote. A
row that carries the value itself (an `agreement` or `choice` key, as in a file of raw
ratings) is judged by that instead, so files from elsewhere can be filtered too.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ragloop.core import ROW_KINDS, Filter, FilterResult, hookimpl, latest_votes, majority


def item_agreement(db) -> dict[str, tuple[float, int]]:
    """comparison id -> (share of raters agreeing with the item's majority, raters)."""
    votes = latest_votes(db)
    by_item = defaultdict(list)
    for vote in votes:
        by_item[vote.item].append(vote.choice)
    return {v.comparison_id: (majority(by_item[v.item])[1], len(by_item[v.item])) for v in votes}


def score_agreement(db) -> dict[str, tuple[float, int]]:
    """candidate id -> (share of raters agreeing on good/neutral/bad, raters)."""
    latest = {}
    for r in db.query("select candidate_id, score, rater_id from scores "
                      "order by created_at, rowid"):
        latest[(r["rater_id"], r["candidate_id"])] = r["score"]
    labels = defaultdict(list)
    for (_, cid), score in latest.items():
        labels[cid].append("good" if score >= 4 else "bad" if score <= 2 else "neutral")
    return {cid: (majority(v)[1], len(v)) for cid, v in labels.items()}


@dataclass
class MinAgreementConfig:
    threshold: float = field(default=0.75, metadata={
        "help": "Least share of raters agreeing with the majority, in (0, 1]."})
    min_raters: int = field(default=1, metadata={
        "help": "Fewest raters behind a row (one rater agrees with itself: 100%)."})

    def __post_init__(self):
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.min_raters < 1:
            raise ValueError(f"min_raters must be at least 1, got {self.min_raters}")


class MinAgreement(Filter):
    name = "min-agreement"
    description = "Drops training rows whose raters agreed less than a threshold."
    applies_to = ROW_KINDS
    Config = MinAgreementConfig

    def _lookup(self):
        db = self.workspace.db if self.workspace is not None else None
        return (item_agreement(db), score_agreement(db)) if db is not None else ({}, {})

    def apply(self, records):
        cfg = self.config
        items, scores = self._lookup()
        result = FilterResult(kept=[])
        for record in records:
            if isinstance(record.get("agreement"), (int, float)):
                found = (record["agreement"], record.get("raters") or 1)
            elif record.get("source") == "score":
                found = scores.get(record.get("candidate_id"))
            else:
                found = items.get(record.get("comparison_id"))
            if found is None:
                result.removed.append((record, "unknown agreement: not rated in this workspace"))
            elif found[1] < cfg.min_raters:
                result.removed.append((record, f"too few raters: {found[1]}, fewer than "
                                               f"{cfg.min_raters}"))
            elif found[0] < cfg.threshold:
                result.removed.append((record, f"low agreement: {found[0]:.0%} of {found[1]} "
                                               f"raters agree, below {cfg.threshold:.0%}"))
            else:
                result.kept.append(record)
        return result


REASONS = {"tie": "tie: the raters called it a tie",
           "both-bad": "both-bad: the raters found both answers bad"}


@dataclass
class DropTiesConfig:
    ties: bool = field(default=True, metadata={"help": "Drop rows decided by a tie."})
    both_bad: bool = field(default=True, metadata={"help": "Drop rows decided by both-bad."})


class DropTies(Filter):
    name = "drop-ties"
    description = ("Drops rows whose deciding verdict was a tie or both-bad: raw rows with a "
                   "`choice`, and KTO rows labelled false only by a both-bad comparison.")
    applies_to = ROW_KINDS
    Config = DropTiesConfig

    def _choices(self) -> dict[str, str]:
        if self.workspace is None:
            return {}
        return {r[0]: r[1] for r in self.workspace.db.execute(
            "select id, choice from comparisons where choice in ('tie', 'both-bad')")}

    def apply(self, records):
        drop = {c for c, on in (("tie", self.config.ties), ("both-bad", self.config.both_bad))
                if on}
        choices = self._choices()
        result = FilterResult(kept=[])
        for record in records:
            if "choice" in record:
                choice = record["choice"]
            elif record.get("source") == "choice":   # a score decides "score" rows
                choice = choices.get(record.get("comparison_id"))
            else:
                choice = None
            if choice in drop:
                result.removed.append((record, REASONS[choice]))
            else:
                result.kept.append(record)
        # Exported pairs and SFT rows never come from a tie or both-bad; say why nothing went.
        self.notes = [] if result.removed else ["no row was decided by a tie or both-bad verdict"]
        return result


@hookimpl
def register_filters(register):
    register(MinAgreement)
    register(DropTies)
