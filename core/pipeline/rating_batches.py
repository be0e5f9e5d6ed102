"""Pairs (or best-of-N sets) for many questions at once: each slot's model answers a group of
questions in one `generate_many` call instead of one after another (issue 16). `eval` uses it
before its evaluators score the pairs, and `rate` with an automatic rater and the demo a
group ahead of the question being rated; both then read the pairs back as stored. They are
the same rows, claims and settings fingerprint that `Session.pair` writes one question at a
time.

A group is a batch's worth of answers (`batch_size`; N per question for best-of-N), and
CALL_BATCHES batches' worth for a generator that `refills_batch` (openvino): it runs
`batch_size` answers at a time and starts the next as one ends, so it keeps its batch full
through the call rather than waiting for each batch's longest answer.

A question whose pair is stored already, or that another live session is generating, is
left alone here: `Session.pair` reads or waits for it as before. Groups are stored as they
finish, so an interrupted run keeps every group it completed.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

from ragloop.core.ids import new_id
from ragloop.core.pipeline.ask import record_generation
from ragloop.core.pipeline.rating import SAMPLE
from ragloop.core.pipeline.rating_claims import PAIR
from ragloop.core.pipeline.rating_questions import Question
from ragloop.core.workspace import write_transaction

# Batches of answers per generate_many call to a generator that refills its batch. openvino
# with batch_size 4, 4 sampled candidates of 12 questions: 259 tokens/s with 4 questions' in
# a call against 165 with one question's (bench_generate --across 4, docs/generation.md).
CALL_BATCHES = 4


class Ahead:
    """For a rater that waits on nothing (`rate` with an automatic rater, the demo): before
    a question is rated, the pairs (or sets) of it and the next questions, a group's worth,
    are generated together. A person's session prefetches one item instead."""

    def __init__(self, session, questions: list[Question]):
        self.session = session
        self.questions = list(questions)
        self.covered: set[str] = set()

    def before(self, question: Question) -> None:
        if question.hash in self.covered:
            return
        try:
            at = self.questions.index(question)
        except ValueError:
            return
        window = self.questions[at:at + group_size(self.session)]
        self.covered.update(q.hash for q in window)
        if len(window) > 1:
            with self.session.status(f"Generating the answers to {len(window)} questions "
                                     f"together"):
                generate_pairs(self.session, window)


def batch_size(session) -> int:
    return max(1, getattr(getattr(session.generators[0], "config", None), "batch_size", 1))


def group_size(session) -> int:
    """Questions per generate_many call: a batch of answers (CALL_BATCHES for a generator
    that refills its batch), N per question for best-of-N."""
    calls = CALL_BATCHES if getattr(session.generators[0], "refills_batch", False) else 1
    return max(1, calls * batch_size(session) // (session.settings.best_of or 1))


def generate_pairs(session, questions: list[Question],
                   advance: Callable[[int], None] = lambda n: None) -> int:
    """Generates and stores the missing pairs (or best-of-N sets) of `questions` in groups of
    `group_size`; returns how many it generated."""
    size = group_size(session)
    made = 0
    pending = list(dict.fromkeys(questions))
    for start in range(0, len(pending), size):
        group = _claim(session, pending[start:start + size])
        advance(min(size, len(pending) - start) - len(group))
        if not group:
            continue
        try:
            for question, rows in zip(group, _rows(session, group)):
                session._store_rows(session.db, question, rows)
                made += 1
                advance(1)
        finally:
            for question in group:
                session._let_go(question)
    return made


def _claim(session, questions: list[Question]) -> list[Question]:
    """The questions with no stored pair whose pair claim this session took."""
    taken = []
    for question in questions:
        with write_transaction(session.db):
            if session._stored_pair(question) is not None:
                continue
            if session.claims.take(question.hash, PAIR, session.fingerprint) is None:
                taken.append(question)
    return taken


def _rows(session, group: list[Question]) -> list[list[dict]]:
    """Each question's pair rows: slot a's answers from one call, then slot b's; or its
    best-of-N set, all sets from one call."""
    s = session.settings
    if s.best_of:
        return session._generate_sets([session._prepare(question)[0] for question in group])
    sampled = s.kind == SAMPLE
    seeds = session._seeds()
    bases = [session._prepare(question) for question in group]
    pair_ids = [new_id() for _ in group]
    rows: list[list[dict]] = [[] for _ in group]
    for slot_index, (slot, gen, adapter_id) in enumerate(
            zip("ab", session.generators, session.adapter_ids)):
        answers = [replace(b[slot_index], params=dict(b[slot_index].params),
                           timings=dict(b[slot_index].timings)) for b in bases]
        seed = seeds[slot_index]
        temperature = s.temperature if sampled else 0.0
        started = time.perf_counter()
        texts = gen.generate_many([a.prompt.messages for a in answers],
                                  max_new_tokens=s.max_new_tokens, temperature=temperature,
                                  seed=seed)
        seconds = round(time.perf_counter() - started, 4)
        records = getattr(gen, "last_generations", None) or [{} for _ in answers]
        for i, (answer, text, record) in enumerate(zip(answers, texts, records)):
            # The batch's time, shared by its answers.
            record_generation(answer, text, record, temperature=temperature, seed=seed,
                              seconds=seconds)
            rows[i].append(session._candidate_row(answer, gen, adapter_id, pair_ids[i], slot,
                                                  {"batched": len(group)}))
    return rows
