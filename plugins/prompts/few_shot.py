"""The `few-shot` prompt: the best-rated earlier answers to the nearest earlier questions,
shown as worked examples before the question.

Rated answers are those the ratings call good: chosen in a comparison, scored 4 or 5, or
otherwise labelled good (`build_rows(ws, "kto")`, label True, the same rows KTO trains on;
comparisons made by `ragloop eval` never count). Each earlier question keeps its best answer
(highest mean score, an answer without scores counting as 4, then most often chosen, then
newest). Questions are ranked by cosine similarity to the question asked, embedded with the
workspace's own embedder; the question asked itself (same text, spaces aside) is never an
example. The `k` nearest become examples, nearest first, so fitting the context leaves out
the farthest first. An example is a user turn (the question and the sources its answer
cited, each cut to `passage_words` words, numbered as the answer cites them) and an
assistant turn (the answer); the real question follows in the default prompt's form.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from ragloop.core import Prompt, citations, hookimpl
from ragloop.plugins.prompts.default import (
    TEMPLATE,
    TEMPLATE_HELP,
    check_template,
    fill,
    format_passage,
    user_message,
)

NO_RATINGS = ("the few-shot prompt found no rated answers yet, so it shows no examples and is "
              "the default prompt; rate answers with `ragloop rate` first")


@dataclass
class FewShotOptions:
    k: int = field(default=2, metadata={"help": "Examples at most: the best-rated answers to "
                                                "the k nearest earlier questions."})
    passage_words: int = field(default=40, metadata={
        "help": "Words kept of each source an example shows."})
    min_similarity: float = field(default=0.0, metadata={
        "help": "Leave out earlier questions less similar than this (cosine, -1 to 1)."})
    template: str = field(default=TEMPLATE, metadata={"help": TEMPLATE_HELP})

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.passage_words < 1:
            raise ValueError(f"passage_words must be at least 1, got {self.passage_words}")
        if not -1 <= self.min_similarity <= 1:
            raise ValueError(f"min_similarity must be from -1 to 1, got {self.min_similarity}")
        self.template = check_template(self.template)


def same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def cited(answer: str) -> list[int]:
    return list(dict.fromkeys(citations(answer)))


def rated_answers(ws) -> list[dict]:
    """The best-rated good answer of each rated question: {"question", "question_id",
    "candidate_id", "answer"}, in no particular order."""
    from ragloop.core import build_rows, latest_votes    # here: plugins load at every start
    good = [r for r in build_rows(ws, "kto") if r["label"]]
    if not good:
        return []
    db = ws.db
    scores = dict(db.execute("select candidate_id, avg(score) from scores "
                             "group by candidate_id").fetchall())
    wins = Counter(v.winner for v in latest_votes(db) if v.winner)
    best: dict[str, tuple] = {}
    for position, row in enumerate(good):
        cid = row["candidate_id"]
        rank = (scores.get(cid, 4.0), wins[cid], position)
        if row["question_id"] not in best or rank > best[row["question_id"]][0]:
            best[row["question_id"]] = (rank, row)
    return [{"question": r["question"], "question_id": r["question_id"],
             "candidate_id": r["candidate_id"], "answer": r["completion"]}
            for _, r in best.values()]


def example_sources(db, candidate_id: str, answer: str, words: int) -> list[tuple[int, str]]:
    """(number, shortened text) of the passages the answer saw, only those it cites when it
    cites any; [] when the passages are gone (re-indexed since)."""
    row = (db.execute("select chunk_ids_json from candidates where id = ?", [candidate_id])
           .fetchone() or db.execute("select chunk_ids_json from asks where id = ?",
                                     [candidate_id]).fetchone())
    ids = json.loads(row[0] or "[]") if row else []
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    texts = dict(db.execute(f"select id, text from chunks where id in ({marks})", ids).fetchall())
    numbers = [n for n in cited(answer) if 1 <= n <= len(ids)] or range(1, len(ids) + 1)
    out = []
    for n in numbers:
        text = texts.get(ids[n - 1])
        if text is None:
            continue
        kept = text.split()
        out.append((n, " ".join(kept[:words]) + (" ..." if len(kept) > words else "")))
    return out


class FewShotPrompt(Prompt):
    name = "few-shot"
    description = ("Shows the best-rated earlier answers to the nearest earlier questions as "
                   "worked examples before the question.")
    Config = FewShotOptions

    def __init__(self, config=None, workspace=None):
        super().__init__(config, workspace)
        self._vectors: dict[str, object] = {}      # question text -> its embedding
        self._told = False

    def _say_once(self, note: str) -> None:
        if not self._told:
            self._told = True
            self.notes.append(note)

    def _embed(self, searcher, texts: list[str]) -> list:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            for text, vector in zip(missing, searcher.index.encode(missing)):
                self._vectors[text] = vector
        return [self._vectors[t] for t in texts]

    def examples(self, question, searcher):
        pool = rated_answers(self.workspace) if self.workspace is not None else []
        pool = [a for a in pool if not same_text(a["question"], question)]
        if not pool:
            self._say_once(NO_RATINGS)
            return []
        asked, *others = self._embed(searcher, [question] + [a["question"] for a in pool])
        ranked = sorted(((float(asked @ v), a) for v, a in zip(others, pool)),
                        key=lambda pair: -pair[0])
        examples = []
        for similarity, answer in ranked:
            if similarity < self.config.min_similarity or len(examples) == self.config.k:
                break
            sources = example_sources(self.workspace.db, answer["candidate_id"],
                                      answer["answer"], self.config.passage_words)
            if not sources:
                continue
            examples.append({
                "question": answer["question"], "answer": answer["answer"].strip(),
                "sources": sources,
                "provenance": {"question_id": answer["question_id"],
                               "candidate_id": answer["candidate_id"],
                               "similarity": round(similarity, 4)}})
        return examples

    def messages(self, question, passages, examples):
        turns = []
        for ex in examples:
            sources = "\n".join(format_passage(n, text) for n, text in ex["sources"])
            turns += [{"role": "user", "content": fill(self.config.template, ex["question"],
                                                       sources)},
                      {"role": "assistant", "content": ex["answer"]}]
        return turns + [{"role": "user", "content": user_message(self.config.template, question,
                                                                 passages)}]


@hookimpl
def register_prompts(register):
    register(FewShotPrompt)
