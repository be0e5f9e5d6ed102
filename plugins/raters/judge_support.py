"""What the `judge` rater reads in an answer besides its words: names and numbers that no
passage holds (unsupported specifics), and meaning, through the workspace's embedder, where
word overlap misses a paraphrase.

The embedder is built once per judge (so once per session) and only when a comparison
needs it; its model is the one the workspace's searcher loaded, where the same model is
loaded in the process already (the embedder plugin shares it). Vectors are cached by text,
so judging the same answers in both orders or again in a later comparison encodes nothing
twice. Everything here is deterministic.
"""

from __future__ import annotations

import re

TOKEN = re.compile(r"\w(?:[\w.,:/-]*\w)?")
IDENTIFIER = re.compile(r"[^\W\d]\w*(?:[_.]\w+)+|[a-z]+[A-Z]\w*")
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
FILLER = frozenset({"I", "I'm", "I've", "Yes", "No", "The", "This", "It", "In", "For",
                    "Source", "Sources", "Answer", "Question", "Note"})


def specifics(text: str) -> list[str]:
    """Names, numbers and identifiers an answer states: the claims a reader can check
    against a passage word for word. A capitalized word counts after a sentence's first
    word, where a capital marks a name rather than the start of a sentence; the first word
    counts when the next one is capitalized too ("John Smith")."""
    found = []
    for sentence in SENTENCE_SPLIT.split(text):
        tokens = [t.rstrip(".,:") for t in TOKEN.findall(sentence)]
        for i, token in enumerate(tokens):
            named = token[:1].isupper() and token not in FILLER and (
                i > 0 or (len(tokens) > 1 and tokens[1][:1].isupper()))
            if any(c.isdigit() for c in token) or IDENTIFIER.fullmatch(token) or named:
                if token not in found:
                    found.append(token)
    return found


def _present(token: str, haystack: str) -> bool:
    # Whole words only, so "201" is not found in "2019", nor "Java" in "JavaScript".
    return re.search(rf"(?<!\w){re.escape(token.lower())}(?!\w)", haystack) is not None


def unsupported(text: str, passages: list[str], question: str) -> list[str]:
    """The specifics of `text` that appear neither in a passage nor in the question."""
    haystack = " ".join([*passages, question]).lower()
    return [t for t in specifics(text) if not _present(t, haystack)]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_SPLIT.split(text) if len(s.strip()) > 2]


class Semantic:
    """Cosine similarities from an embedder, built by `load` on first use."""

    def __init__(self, load):
        self._load = load
        self._embedder = None
        self._vectors: dict[str, object] = {}

    def _encode(self, texts: list[str]):
        import numpy as np
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            if self._embedder is None:
                self._embedder = self._load()
            for text, vector in zip(missing, self._embedder.encode(missing)):
                self._vectors[text] = np.asarray(vector, dtype="float32")
        return np.stack([self._vectors[t] for t in texts])

    def best_match(self, claims: list[str], passages: list[str]) -> list[list[float]]:
        """For each claim, per passage, its best cosine with any sentence of that passage."""
        pieces = [sentences(p) or [p] for p in passages]
        flat = [s for piece in pieces for s in piece]
        if not claims or not flat:
            return [[0.0] * len(passages) for _ in claims]
        sims = self._encode(claims) @ self._encode(flat).T
        result, start = [], 0
        bounds = []
        for piece in pieces:
            bounds.append((start, start + len(piece)))
            start += len(piece)
        for row in sims:
            result.append([float(row[a:b].max()) for a, b in bounds])
        return result

    def similarity(self, text: str, others: list[str]) -> list[float]:
        if not others:
            return []
        return [float(x) for x in (self._encode([text]) @ self._encode(others).T)[0]]
