"""The `retrieval` evaluator: how well the current search ranks the passages people judged
relevant (`ragloop rate --passages`).

For each question with a passage judged relevant, the search (hybrid by default) ranks the
top max(k, 10) passages, and against the relevant set R:
  recall@k  |R ∩ top k| / |R|
  MRR@10    1 / rank of the first relevant passage in the top 10 (0 if none)
  nDCG@10   sum over relevant ranks r <= 10 of 1/log2(r + 1), divided by the same sum for
            an ideal ranking (min(|R|, 10) relevant passages on top)
each averaged over the questions. A passage is relevant when at least half of the raters
who judged it (each rater's latest judgment) said so. Passages are matched by text, not by
chunk id, because re-indexing gives chunks new ids: a judgment finds its chunk by id while
that chunk still holds the judged text, else any chunk with that exact text. Judged
passages whose text is in no chunk any more (the corpus or the chunking changed) are left
out and counted in a note. Unjudged passages count as not relevant, so scores are a lower
bound when the search finds relevant passages no one was shown.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from ragloop.core import Evaluator, Searcher, hookimpl

CUTOFF = 10
ELLIPSIS = " ..."          # what the prompt appends to a passage it shortened to fit


@dataclass
class RetrievalOptions:
    mode: Literal["hybrid", "dense", "bm25"] = field(default="hybrid", metadata={
        "help": "Search mode to evaluate."})
    rater: str = field(default="human", metadata={
        "help": "Rater plugin whose passage judgments count (human), or any."})


def key(text: str) -> str:
    return " ".join(text.split())


def rank_metrics(ranked: list[str], relevant: set[str], k: int, cutoff: int = CUTOFF) -> dict:
    """recall@k, MRR@cutoff and nDCG@cutoff of one ranking (passage keys, best first); a
    key ranked twice counts once, at its first rank."""
    seen: set[str] = set()
    hits = []                              # 1-based ranks of relevant passages
    for rank, item in enumerate(ranked, 1):
        if item in relevant and item not in seen:
            hits.append(rank)
        seen.add(item)
    recall = sum(r <= k for r in hits) / len(relevant)
    mrr = 1.0 / hits[0] if hits and hits[0] <= cutoff else 0.0
    dcg = sum(1.0 / math.log2(r + 1) for r in hits if r <= cutoff)
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(relevant), cutoff) + 1))
    return {"recall": recall, "mrr": mrr, "ndcg": dcg / ideal}


def judgments(db, rater: str) -> dict[str, dict[str, tuple]]:
    """question text -> passage key -> ((chunk_id, chunk_text) as judged, [relevant, ...]),
    one vote per rater id: its latest."""
    where, args = ("", []) if rater == "any" else ("where pj.rater = ?", [rater])
    latest = {}
    for text, chunk_id, chunk_text, relevant, rater_id in db.execute(
            f"select q.text, pj.chunk_id, pj.chunk_text, pj.relevant, pj.rater_id "
            f"from passage_judgments pj join questions q on q.id = pj.question_id {where} "
            f"order by pj.created_at, pj.rowid", args):
        latest[(text, key(chunk_text), rater_id)] = (chunk_id, chunk_text, bool(relevant))
    votes: dict[str, dict[str, tuple]] = defaultdict(dict)
    for (text, judged, _), (chunk_id, chunk_text, relevant) in latest.items():
        votes[text].setdefault(judged, ((chunk_id, chunk_text), []))[1].append(relevant)
    return votes


def current_key(db, chunk_id: int, chunk_text: str) -> str | None:
    """The key of the judged passage's chunk in today's index, or None if it is gone."""
    judged = key(chunk_text)
    shortened = chunk_text.endswith(ELLIPSIS)
    row = db.execute("select text from chunks where id = ?", [chunk_id]).fetchone()
    if row is not None:
        now = key(row[0])
        if now == judged or (shortened and now.startswith(key(chunk_text[:-len(ELLIPSIS)]))):
            return now
    # A shortened passage whose chunk is gone matches nothing here: its text is a prefix.
    row = db.execute("select text from chunks where text = ? limit 1", [chunk_text]).fetchone()
    return key(row[0]) if row is not None else None


class RetrievalEvaluator(Evaluator):
    name = "retrieval"
    description = "recall@k, MRR@10 and nDCG@10 of the search against people's passage judgments."
    Config = RetrievalOptions
    needs_adapter = False

    def evaluate(self, context) -> dict:
        db, cfg, k = context.ws.db, self.config, context.settings.k
        votes = judgments(db, cfg.rater)
        if not votes:
            who = "" if cfg.rater == "any" else f" by rater {cfg.rater!r}"
            return {"skipped": f"no passage judgments{who} yet (rate with --passages)"}
        questions, gone, no_relevant = [], 0, 0
        for text, passages in votes.items():
            relevant = set()
            for (chunk_id, chunk_text), says in passages.values():
                if sum(says) * 2 < len(says):
                    continue
                now = current_key(db, chunk_id, chunk_text)
                if now is None:
                    gone += 1
                else:
                    relevant.add(now)
            if relevant:
                questions.append((text, relevant))
            else:
                no_relevant += 1
        notes = []
        if gone:
            notes.append(f"{gone} passages judged relevant are no longer in the index and "
                         f"were left out")
        if no_relevant:
            notes.append(f"{no_relevant} judged questions have no relevant passage in the "
                         f"index and were left out")
        if not questions:
            return {"skipped": "no passage judged relevant is in the index", "notes": notes}
        questions = context.limit(questions)
        searcher, depth = Searcher(context.ws), max(k, CUTOFF)
        advance = context.progress("Retrieval", len(questions))
        details = []
        for text, relevant in questions:
            hits = searcher.search(text, k=depth, mode=cfg.mode)
            scores = rank_metrics([key(h.text) for h in hits], relevant, k)
            details.append({"question": text, "relevant": len(relevant), **scores,
                            "ranked_chunk_ids": [h.chunk_id for h in hits]})
            advance(1)
        n = len(details)
        metrics = {f"recall@{k}": sum(d["recall"] for d in details) / n,
                   f"mrr@{CUTOFF}": sum(d["mrr"] for d in details) / n,
                   f"ndcg@{CUTOFF}": sum(d["ndcg"] for d in details) / n,
                   "questions": n}
        return {"metrics": metrics, "notes": notes, "details": details}

    def summary(self, result: dict) -> str:
        m = result["metrics"]
        return "  ".join(f"{name} {value:.3f}" for name, value in m.items()
                         if name != "questions") + f"  ({m['questions']} questions)"

    def plot(self, result: dict, ax) -> None:
        m = {k: v for k, v in result["metrics"].items() if k != "questions"}
        ax.bar(list(m), list(m.values()), color=["tab:blue", "tab:orange", "tab:green"])
        ax.set_ylim(0, 1)
        ax.set_title(f"retrieval ({result['metrics']['questions']} questions)")


@hookimpl
def register_evaluators(register):
    register(RetrievalEvaluator)
