"""An answer checked against a reference answer: SQuAD's normalization, whole-word
containment and token F1. The `correctness` evaluator scores answers with these and the
`reference` rater prefers answers by them, so both read "contains the reference" the same way.

Normalization is SQuAD's: lowercase, punctuation removed (ASCII and Unicode), the articles
a/an/the dropped, whitespace collapsed. An answer's own [n] citation marks are removed first:
they are not content. Pure Python, so nothing heavy loads.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

# A citation of numbered passages as answers write them: [2] or [1, 3].
CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
ARTICLES = re.compile(r"\b(a|an|the)\b")


def _is_punctuation(char: str) -> bool:
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalization: lowercase, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if not _is_punctuation(c))
    return " ".join(ARTICLES.sub(" ", text).split())


def citations(text: str) -> list[int]:
    """Every passage number `text` cites, in order, repeats kept."""
    return [int(n) for group in CITATION.findall(text) for n in group.split(",")]


def strip_citations(answer: str) -> str:
    return CITATION.sub(" ", answer)


def contains_reference(answer: str, reference: str) -> bool:
    """The normalized reference occurs in the normalized answer on word boundaries (so a
    reference "2" is not found in "2019"); an empty normalized reference is never found."""
    ref = normalize_answer(reference)
    return bool(ref) and f" {ref} " in f" {normalize_answer(strip_citations(answer))} "


def token_f1(answer: str, reference: str) -> float:
    """SQuAD's token F1: harmonic mean of the precision and recall of the normalized
    tokens, counted with multiplicity."""
    got = normalize_answer(strip_citations(answer)).split()
    want = normalize_answer(reference).split()
    if not got or not want:
        return float(got == want)
    overlap = sum((Counter(got) & Counter(want)).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / len(got), overlap / len(want)
    return 2 * precision * recall / (precision + recall)
