"""The `judge` rater: an automatic, deterministic preference for the answer better supported
by the retrieved passages. For bootstrapping a preference set and for demos; it reads words,
not meaning, so a fluent wrong answer built from the passages' words can fool it.

Each answer gets a score:
  support        mean, over its sentences, of the share of content words (not stop words,
                 not words of the question) that occur in the passages; a URL counts as
                 one word, found only if a passage holds all of it              0..1
  + citations    0.15 when it cites at least one passage that exists, [n] with 1 <= n <= k
  - invalid      0.25 per citation of a passage that does not exist, at most 0.75
  - repetition   the share of repeated word 3-grams                             0..1
  - cut off      0.15 when generation hit the token limit mid-sentence
An empty answer, one without words, or one that is mostly a loop is garbage and loses to any
other; two garbage answers are 'both-bad'; scores within MARGIN are a 'tie'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ragloop.core import Comparison, Rater, Verdict, hookimpl

VERSION = "1"          # change it whenever a heuristic changes: it is part of the rater id
MARGIN = 0.05
CITATION_BONUS = 0.15
INVALID_PENALTY, INVALID_CAP = 0.25, 0.75
CUT_OFF_PENALTY = 0.15
LOOP = 0.8             # this share of repeated 3-grams makes an answer garbage

STOP_WORDS = frozenset("""
a about above after again all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers him his how i if in into is it its itself just me more
most my no nor not now of off on once only or other our ours out over own same she should so
some such than that the their theirs them then there these they this those through to too
under until up very was we were what when where which while who whom why will with would you
your yours yes source sources answer question according passage passages cite cited
""".split())

WORD = re.compile(r"[a-z0-9]+")
URL = re.compile(r"(?:https?://|www\.)\S+", re.I)
CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
CLOSERS = "\"')]}*`»” \t\n"


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def stem(word: str) -> str:
    # Plural/singular is the commonest mismatch between an answer and its passage.
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def content_words(text: str) -> list[str]:
    return [stem(w) for w in words(text) if w not in STOP_WORDS and (len(w) >= 3 or w.isdigit())]


@dataclass(frozen=True)
class Score:
    total: float
    support: float = 0.0
    valid_citations: int = 0
    invalid_citations: int = 0
    repetition: float = 0.0
    cut_off: bool = False
    garbage: bool = False


def citations(text: str) -> list[int]:
    return [int(n) for group in CITATION.findall(text) for n in group.split(",")]


def support(text: str, passages: list[str], question: str) -> float:
    joined = " ".join(passages)
    known = set(content_words(joined))
    asked = set(content_words(question))
    shares = []
    for sentence in SENTENCE_END.split(CITATION.sub(" ", text)):
        # A URL is one claim, supported only if it is in a passage as a whole: its pieces
        # ("https", "www", "com") are in every passage that holds any link.
        urls = [u.rstrip(".,;:!?)]'\"") for u in URL.findall(sentence)]
        sentence = URL.sub(" ", sentence)
        # Words of the question prove nothing: restating it is not support.
        claims = [w in known for w in content_words(sentence) if w not in asked]
        claims += [u.lower() in joined.lower() for u in urls]
        if claims:
            shares.append(sum(claims) / len(claims))
    return sum(shares) / len(shares) if shares else 0.0


def repetition(text: str) -> float:
    tokens = words(CITATION.sub(" ", text))
    grams = list(zip(tokens, tokens[1:], tokens[2:]))
    return 1 - len(set(grams)) / len(grams) if len(grams) >= 3 else 0.0


def ends_a_sentence(text: str) -> bool:
    text = CITATION.sub("", text).rstrip(CLOSERS)
    return text.endswith((".", "!", "?", ":", ";"))


def score(answer: str, passages: list[str], question: str = "", cut_off: bool = False) -> Score:
    if not re.search(r"[^\W\d_]{2,}", answer):
        return Score(total=-1.0, garbage=True)
    rep = repetition(answer)
    if rep >= LOOP:
        return Score(total=-1.0, repetition=rep, garbage=True)
    cited = citations(answer)
    valid = sum(1 <= n <= len(passages) for n in cited)
    invalid = len(cited) - valid
    sup = support(answer, passages, question)
    truncated = cut_off and not ends_a_sentence(answer)
    total = (sup + (CITATION_BONUS if valid else 0.0)
             - min(INVALID_PENALTY * invalid, INVALID_CAP) - rep
             - (CUT_OFF_PENALTY if truncated else 0.0))
    return Score(round(total, 6), sup, valid, invalid, rep, truncated)


def decide(a: Score, b: Score) -> str:
    if a.garbage and b.garbage:
        return "both-bad"
    if a.garbage or b.garbage:
        return "b" if a.garbage else "a"
    if abs(a.total - b.total) < MARGIN:
        return "tie"
    return "a" if a.total > b.total else "b"


def five_point(s: Score) -> int:
    return 1 if s.garbage else 1 + round(4 * min(max(s.total, 0.0), 1.0))


def relevant(passage: str, question: str) -> bool:
    """A passage is relevant when it holds at least half of the question's content words."""
    asked = set(content_words(question))
    found = asked & set(content_words(passage))
    return bool(found) and len(found) * 2 >= len(asked)


class JudgeRater(Rater):
    name = "judge"
    description = "Automatic: prefers the answer better supported by the passages (deterministic)."
    version = VERSION

    def compare(self, item: Comparison) -> Verdict:
        a = score(item.answer_a, item.passages, item.question, item.cut_off[0])
        b = score(item.answer_b, item.passages, item.question, item.cut_off[1])
        return Verdict(
            decide(a, b),
            scores=(five_point(a), five_point(b)) if item.ask_scores else None,
            relevant=[relevant(p, item.question) for p in item.passages]
            if item.ask_passages else None)


@hookimpl
def register_raters(register):
    register(JudgeRater)
