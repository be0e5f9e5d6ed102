"""The `reference` rater: prefers the answer that contains the question's reference answer.

For users who have some questions with known answers (a support team's FAQ, a test set):
checked against the truth, its pairs are clean where a heuristic judge's are noisy. It reads
"contains" exactly as the `correctness` evaluator does (SQuAD-normalized, whole words), so
what it trains toward is what `eval` measures.

  exactly one answer contains the reference   that one wins
  both do, or neither does                    the higher token F1 against the reference
                                              wins when the two differ by at least
                                              `f1_margin`; closer is a tie, never a
                                              made-up preference
  the question has no reference               skipped (`rate` leaves such questions out
                                              before generating and counts them)

Deterministic and blind to position: the same two answers get the same verdict in either
order. With --scores: 5 for an answer that contains the reference, else 1 + 3 × its F1 (so
at most 4); with --passages: a passage is relevant when it contains the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ragloop.core import (
    Comparison,
    Rater,
    Verdict,
    contains_reference,
    hookimpl,
    token_f1,
)

VERSION = "1"          # change it whenever the rule changes: it is part of the rater id
# Two answers of a few dozen words against a reference of a few words have F1s around
# 0.05-0.25; 0.1 apart is one holding most of the reference's words and the other few.
F1_MARGIN = 0.1


@dataclass
class ReferenceOptions:
    f1_margin: float = field(default=F1_MARGIN, metadata={
        "help": "When both answers or neither contain the reference: the token F1 difference "
                "that prefers one; closer is a tie."})

    def __post_init__(self):
        if not 0 < self.f1_margin <= 1:
            raise ValueError(f"f1_margin must be above 0 and at most 1, got {self.f1_margin}")


def decide(answer_a: str, answer_b: str, reference: str, f1_margin: float = F1_MARGIN) -> str:
    """'a', 'b' or 'tie': containment first, then a clear token F1 difference."""
    has_a, has_b = contains_reference(answer_a, reference), contains_reference(answer_b,
                                                                              reference)
    if has_a != has_b:
        return "a" if has_a else "b"
    f1_a, f1_b = token_f1(answer_a, reference), token_f1(answer_b, reference)
    if abs(f1_a - f1_b) < f1_margin:
        return "tie"
    return "a" if f1_a > f1_b else "b"


def five_point(answer: str, reference: str) -> int:
    if contains_reference(answer, reference):
        return 5
    return 1 + round(3 * token_f1(answer, reference))


class ReferenceRater(Rater):
    name = "reference"
    description = ("Automatic: prefers the answer that contains the question's reference "
                   "answer (needs JSONL questions with \"answer\").")
    version = VERSION
    needs_reference = True
    Config = ReferenceOptions

    def compare(self, item: Comparison) -> Verdict | None:
        reference = item.reference
        if not reference or not reference.strip():
            return None         # nothing to check against: a skip, not a guess
        choice = decide(item.answer_a, item.answer_b, reference, self.config.f1_margin)
        return Verdict(
            choice,
            scores=(five_point(item.answer_a, reference), five_point(item.answer_b, reference))
            if item.ask_scores else None,
            relevant=[contains_reference(p, reference) for p in item.passages]
            if item.ask_passages else None)


@hookimpl
def register_raters(register):
    register(ReferenceRater)
