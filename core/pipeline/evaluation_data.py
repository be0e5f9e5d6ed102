"""What an adapter was trained on, and so what is held out from it.

An adapter's record (core.adapters) names the comparisons and answers (candidates) of its
training rows, and its run folder keeps the rows themselves (train.jsonl). From those come
the questions it trained on, by id and by the hash of their text, so held-out questions
and pairs are recognized whatever ratings were added since, and also when the adapter was
trained on a file (`--data`) whose ids are not in this workspace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ragloop.core.pipeline.prefs import build_rows
from ragloop.core.pipeline.rating_questions import Question, question_hash
from ragloop.core.pipeline.training_runs import read_rows


@dataclass
class Trained:
    comparisons: set[str] = field(default_factory=set)
    candidates: set[str] = field(default_factory=set)
    questions: set[str] = field(default_factory=set)     # text hashes
    known: bool = False                                   # the adapter records a lineage

    def note(self, name: str) -> list[str]:
        if self.known:
            return []
        return [f"adapter {name!r} records no training lineage, so every rating counts as "
                f"held out (some may be what it trained on)"]


def _column(db, sql: str, ids: set[str]) -> set[str]:
    if not ids:
        return set()
    # json_each takes any number of ids, where a list of ? would hit SQLite's variable limit.
    return {r[0] for r in db.execute(sql, [json.dumps(sorted(ids))]) if r[0] is not None}


def trained_on(ws, meta: dict) -> Trained:
    lineage = meta.get("lineage") or {}
    t = Trained(set(lineage.get("comparison_ids") or []), set(lineage.get("candidate_ids") or []))
    db = ws.db
    question_ids = _column(db, "select question_id from comparisons where id in "
                               "(select value from json_each(?))", t.comparisons)
    question_ids |= _column(db, "select question_id from candidates where id in "
                                "(select value from json_each(?))", t.candidates)
    rows = read_rows(Path(meta["run_dir"]) / "train.jsonl") if meta.get("run_dir") else []
    question_ids |= {r["question_id"] for r in rows if r.get("question_id")}
    t.questions = _column(db, "select text_hash from questions where id in "
                              "(select value from json_each(?))", question_ids)
    t.questions |= {question_hash(r["question"]) for r in rows if r.get("question")}
    t.known = bool(t.comparisons or t.candidates or rows)
    return t


def held_out_pairs(ws, trained: Trained, by: str = "question") -> list[dict]:
    """`build_rows(ws, "pairs")` less what the adapter trained on: by "comparison", the
    comparisons and answers of its rows; by "question", also every pair on a question it
    trained on (the prompt is then not new to it)."""
    kept = []
    for row in build_rows(ws, "pairs"):
        if (row["comparison_id"] in trained.comparisons
                or {row["chosen_id"], row["rejected_id"]} & trained.candidates):
            continue
        if by == "question" and question_hash(row["question"]) in trained.questions:
            continue
        kept.append(row)
    return kept


def rated_questions(ws) -> list[Question]:
    """The workspace's questions, oldest first."""
    return [Question(r[0], r[1], r[2]) for r in ws.db.execute(
        "select text, origin, origin_ref from questions order by created_at, rowid")]


def held_out_questions(questions: list[Question], trained: Trained) -> list[Question]:
    return [q for q in questions if q.hash not in trained.questions]
