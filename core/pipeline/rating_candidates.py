"""Best-of-N: rank N sampled answers to one question with any rater, and choose the pairs
worth training on.

A rater only compares two answers, so the N answers meet in a round robin: every pair once,
N(N-1)/2 verdicts, each shown in a random order. An answer scores 1 per win and 0.5 per tie
(both-bad and losses score 0); its score is that total over N-1, from 0 to 1. The best is
the highest score, the worst the lowest (the earlier sample on equal scores).

The recorded pair is best vs worst, with the verdict:
- tie when their scores are equal (nothing stands out), or when the two's own verdict
  disagrees with the ranking (the rater contradicts itself: not a preference to train on);
- both-bad when the two's own verdict was both-bad;
- else the best wins.
With a margin, every other pair whose scores differ by at least the margin, and whose own
verdict agrees, is recorded too. Ties and both-bad become no DPO pair (core/pipeline/prefs.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

MAX_BEST_OF = 16          # N(N-1)/2 verdicts per question: 120 at 16
DEFAULT_BEST_OF = 4


@dataclass
class Ranking:
    n: int
    verdicts: dict[tuple[int, int], str] = field(default_factory=dict)  # (i, j), i < j: a = i

    @property
    def scores(self) -> list[float]:
        points = [0.0] * self.n
        for (i, j), choice in self.verdicts.items():
            if choice == "a":
                points[i] += 1
            elif choice == "b":
                points[j] += 1
            elif choice == "tie":
                points[i] += 0.5
                points[j] += 0.5
        return [round(p / (self.n - 1), 6) for p in points]

    def order(self) -> list[int]:
        """Candidate indexes, best first; equal scores keep sampling order."""
        scores = self.scores
        return sorted(range(self.n), key=lambda i: (-scores[i], i))

    def winner(self, i: int, j: int) -> str | None:
        """The direct verdict between i and j: i, j (as ints), 'tie' or 'both-bad'."""
        a, b = min(i, j), max(i, j)
        choice = self.verdicts[(a, b)]
        return {"a": a, "b": b}.get(choice, choice)

    def pairs(self, margin: float | None = None) -> list[tuple[int, int, str]]:
        """(first, second, choice) to record, choice 'a' meaning first won: best vs worst,
        then (with a margin) every other agreeing pair that far apart."""
        order, scores = self.order(), self.scores
        best, worst = order[0], order[-1]
        direct = self.winner(best, worst)
        if scores[best] == scores[worst] or direct in (worst, "tie"):
            choice = "tie"
        elif direct == "both-bad":
            choice = "both-bad"
        else:
            choice = "a"
        out = [(best, worst, choice)]
        if margin is not None:
            for i, j in combinations(range(self.n), 2):
                hi, lo = (i, j) if scores[i] >= scores[j] else (j, i)
                if {hi, lo} == {best, worst} or scores[hi] - scores[lo] < margin:
                    continue
                if self.winner(hi, lo) == hi:
                    out.append((hi, lo, "a"))
        return out


def parse_best_of(candidates: str) -> int | None:
    """N of `best-of` / `best-of-N`, or None for other kinds; ValueError says what is wrong."""
    if candidates != "best-of" and not candidates.startswith("best-of-"):
        return None
    if candidates == "best-of":
        return DEFAULT_BEST_OF
    digits = candidates[len("best-of-"):]
    if not digits.isdigit():
        raise ValueError(f"--candidates {candidates!r}: N must be a whole number, as in best-of-4")
    n = int(digits)
    if n < 2:
        raise ValueError(f"--candidates {candidates}: N must be at least 2 (best vs worst of N "
                         f"answers)")
    if n > MAX_BEST_OF:
        raise ValueError(f"--candidates {candidates}: at most best-of-{MAX_BEST_OF}; each "
                         f"question would take {n * (n - 1) // 2} verdicts")
    return n
