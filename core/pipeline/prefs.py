"""Training rows from the ratings: the API the training code calls.

    build_rows(ws, kind, rater=None, min_agreement=None) -> list[dict]
    dataset_hash(rows) -> str

`kind` is one of `core.rows.ROW_KINDS`:

- ``pairs``: ``{"prompt", "chosen", "rejected", "question", "comparison_id", "question_id",
  "chosen_id", "rejected_id", "rater_id"}``. ``prompt`` is exactly the stored prompt text the
  model saw (chat template and retrieved passages included). Ties, both-bad and skips are not
  pairs. A pair whose two answers saw different prompts is left out: its answers were not
  conditioned on the same input, so it is not a preference between them.
- ``kto``: ``{"prompt", "completion", "label", "question", "question_id", "candidate_id",
  "comparison_id", "rater_id", "source"}``, one row per answer. When an answer has scores they
  decide (4-5 True, 1-2 False, a majority of 3s or a split vote drops it; ``source`` is
  "score"); otherwise its comparisons do (chosen True, rejected or both-bad False; "choice").
- ``sft``: ``{"prompt", "completion", "question", "question_id", "candidate_id",
  "comparison_id", "rater_id", "source"}``: answers whose KTO label is True and that were
  chosen in a comparison or scored 5 by the majority.

Votes: only each rater id's latest non-skip rating of an item counts (rows are never
updated; a re-rating is a new row, and a skip is no opinion rather than a retraction). An
item is a question's unordered pair of candidates, its "a" the one generated first.
Several raters on one item: the majority choice wins, and a tied vote drops the item.
``min_agreement`` keeps items (and scored answers) where the share of raters agreeing with
the majority is at least that fraction, counted over all raters even with ``rater`` given;
a single rater counts as 1.0. ``rater`` keeps only that rater id's votes.

Pairs come back in the order they were rated, KTO and SFT rows in the order the answers
were generated; ``dataset_hash`` is the sha256 of the rows' canonical JSON, for lineage.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from ragloop.core.errors import RagloopError
from ragloop.core.rows import ROW_KINDS

IMPORT_RATER = "import"      # the rater name on imported ratings
CHOICES = ("a", "b", "tie", "both-bad")
_SWAP = {"a": "b", "b": "a"}


@dataclass(frozen=True)
class Vote:
    """One rater id's latest judgment of an item, with `choice` oriented to the item: "a"
    means item[1] won, "b" means item[2] won."""
    comparison_id: str
    item: tuple          # (question_id, first generated candidate, second)
    choice: str
    rater: str
    rater_id: str
    left_candidate: str
    seq: int             # position in rating order: created_at, then insertion order

    @property
    def winner(self) -> str | None:
        return {"a": self.item[1], "b": self.item[2]}.get(self.choice)


def question_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


def dataset_hash(rows: list[dict]) -> str:
    canonical = json.dumps(rows, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


EVAL_SESSION_PREFIX = "eval-"


def latest_votes(db, include_eval: bool = False) -> list[Vote]:
    """Each rater id's latest non-skip vote per item, oldest first. Ties in created_at (one
    millisecond, as in an import) fall back to rowid, which is insertion order.

    Comparisons made by `ragloop eval` (session "eval-...") are on held-out questions: they
    count for statistics (include_eval=True) but never become training rows, or the next
    evaluation would be measured on questions the adapter trained on."""
    latest = {}
    # An item's answers are ordered by when they were generated, so that "a" means the same
    # answer (say, the base model's) whichever way round a comparison stored them: kappa's
    # chance agreement depends on the labels' marginals.
    rows = db.query("select c.id, c.question_id, c.candidate_a, c.candidate_b, c.left_candidate, "
                    "c.choice, c.rater, c.rater_id, ca.rowid < cb.rowid as a_first "
                    "from comparisons c join candidates ca on ca.id = c.candidate_a "
                    "join candidates cb on cb.id = c.candidate_b "
                    "where c.choice != 'skip' and (? or coalesce(c.session, '') not like ?) "
                    "order by c.created_at, c.rowid", [include_eval, EVAL_SESSION_PREFIX + "%"])
    for seq, r in enumerate(rows):
        a, b = r["candidate_a"], r["candidate_b"]
        if a == b:
            continue
        first, second = (a, b) if r["a_first"] else (b, a)
        choice = r["choice"] if r["a_first"] else _SWAP.get(r["choice"], r["choice"])
        item = (r["question_id"], first, second)
        latest.pop((r["rater_id"], item), None)   # re-insert so dict order stays oldest first
        latest[(r["rater_id"], item)] = Vote(r["id"], item, choice, r["rater"], r["rater_id"],
                                             r["left_candidate"], seq)
    return list(latest.values())


def majority(values) -> tuple[object | None, float]:
    """The most common value and the share of votes it got; None when the top is tied."""
    counts = Counter(values).most_common()
    if not counts:
        return None, 0.0
    share = counts[0][1] / sum(n for _, n in counts)
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return None, share
    return counts[0][0], share


def _score_label(score: int) -> str:
    return "good" if score >= 4 else "bad" if score <= 2 else "neutral"


@dataclass
class Built:
    rows: list[dict]
    dropped: Counter = field(default_factory=Counter)   # reason -> count, for the CLI's notes


def build_rows(ws, kind: str, rater: str | None = None,
               min_agreement: float | None = None) -> list[dict]:
    """Training rows of `kind` from the workspace's ratings (see the module docstring)."""
    return collect(ws, kind, rater, min_agreement).rows


def collect(ws, kind: str, rater: str | None = None,
            min_agreement: float | None = None) -> Built:
    if kind not in ROW_KINDS:
        raise RagloopError(f"unknown kind {kind!r}; kinds: {', '.join(ROW_KINDS)}")
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise RagloopError(f"--min-agreement must be between 0 and 1, not {min_agreement}")
    db = ws.db
    built = Built([])
    decided = _decide_items(latest_votes(db), rater, min_agreement, built.dropped)
    candidates = {c["id"]: c for c in db.query(
        "select c.id, c.question_id, c.prompt, c.text, q.text as question from candidates c "
        "join questions q on q.id = c.question_id order by c.created_at, c.rowid")}
    if kind == "pairs":
        built.rows = _pairs(decided, candidates, built.dropped)
        return built
    scored = _decide_scores(db, rater, min_agreement, built.dropped)
    built.rows = _per_answer(kind, decided, scored, candidates)
    return built


def _decide_items(votes, rater, min_agreement, dropped) -> list[Vote]:
    """One deciding vote per item (the latest vote for the majority choice), oldest first."""
    by_item = defaultdict(list)
    for vote in votes:
        by_item[vote.item].append(vote)
    decided = []
    for item_votes in by_item.values():
        mine = [v for v in item_votes if rater is None or v.rater_id == rater]
        if not mine:
            continue
        _, share = majority(v.choice for v in item_votes)
        if min_agreement is not None and share < min_agreement:
            dropped["below --min-agreement"] += 1
            continue
        winner, _ = majority(v.choice for v in mine)
        if winner is None:
            dropped["split vote"] += 1
            continue
        decided.append(max((v for v in mine if v.choice == winner), key=lambda v: v.seq))
    return sorted(decided, key=lambda v: v.seq)


def _pairs(decided, candidates, dropped) -> list[dict]:
    rows = []
    for vote in decided:
        if vote.winner is None:
            continue
        loser = vote.item[2] if vote.winner == vote.item[1] else vote.item[1]
        chosen, rejected = candidates[vote.winner], candidates[loser]
        if chosen["prompt"] != rejected["prompt"]:
            dropped["answers saw different prompts"] += 1
            continue
        rows.append({"prompt": chosen["prompt"], "chosen": chosen["text"],
                     "rejected": rejected["text"], "question": chosen["question"],
                     "comparison_id": vote.comparison_id, "question_id": vote.item[0],
                     "chosen_id": chosen["id"], "rejected_id": rejected["id"],
                     "rater_id": vote.rater_id})
    return rows


def _decide_scores(db, rater, min_agreement, dropped) -> dict:
    """candidate id -> (label or None, five: bool, deciding score row), from the latest
    score per (rater id, candidate)."""
    latest = {}
    rows = db.query("select comparison_id, candidate_id, score, rater_id from scores "
                    "order by created_at, rowid")
    for seq, s in enumerate(rows):
        latest[(s["rater_id"], s["candidate_id"])] = {**s, "seq": seq}
    by_candidate = defaultdict(list)
    for s in latest.values():
        by_candidate[s["candidate_id"]].append(s)
    decided = {}
    for cid, scores in by_candidate.items():
        mine = [s for s in scores if rater is None or s["rater_id"] == rater]
        if not mine:
            continue
        _, share = majority(_score_label(s["score"]) for s in scores)
        if min_agreement is not None and share < min_agreement:
            dropped["below --min-agreement"] += 1
            decided[cid] = (None, False, None)     # no fallback to choices: raters disagree
            continue
        label, _ = majority(_score_label(s["score"]) for s in mine)
        five, _ = majority(s["score"] == 5 for s in mine)
        deciding = max(mine, key=lambda s: s["seq"])
        decided[cid] = ({"good": True, "bad": False}.get(label), bool(five), deciding)
    return decided


def _per_answer(kind, decided, scored, candidates) -> list[dict]:
    outcomes = defaultdict(list)     # candidate -> [(won?, vote)]
    for vote in decided:
        if vote.choice in ("a", "b"):
            outcomes[vote.winner].append((True, vote))
            outcomes[vote.item[2] if vote.choice == "a" else vote.item[1]].append((False, vote))
        elif vote.choice == "both-bad":
            outcomes[vote.item[1]].append((False, vote))
            outcomes[vote.item[2]].append((False, vote))
    rows = []
    for cid, cand in candidates.items():
        choice_label, _ = majority(won for won, _ in outcomes.get(cid, []))
        if cid in scored:
            label, five, score = scored[cid]
            source = "score"
            ref = (score or {}).get("comparison_id"), (score or {}).get("rater_id")
        else:
            label, five, source = choice_label, False, "choice"
            votes = [v for won, v in outcomes.get(cid, []) if won == choice_label]
            ref = (votes[-1].comparison_id, votes[-1].rater_id) if votes else (None, None)
        if label is None:
            continue
        if kind == "sft" and not (label and (choice_label is True or five)):
            continue
        row = {"prompt": cand["prompt"], "completion": cand["text"]}
        if kind == "kto":
            row["label"] = label
        row.update({"question": cand["question"], "question_id": cand["question_id"],
                    "candidate_id": cid, "comparison_id": ref[0], "rater_id": ref[1],
                    "source": source})
        rows.append(row)
    return rows
