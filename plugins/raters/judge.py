"""The `judge` rater: an automatic, deterministic preference for the answer better supported
by the retrieved passages. For bootstrapping a preference set, for demos and for the win
rate; bench/bench_judge.py measures how often it agrees with reference answers.

Each answer gets a score:
  support        mean, over its sentences, of the credit of its claims: a content word (not
                 a stop word, not a word of the question) found in a passage earns that
                 passage's weight; a URL counts as one word, found only whole. With the
                 embedder (`semantic`), a sentence whose meaning a passage sentence carries
                 (cosine) earns as much even when the words differ, unless it states a
                 name or number that no passage holds                             0..1
                 A passage's weight is its relevance to the question relative to the most
                 relevant passage (cosine with the embedder, else shared words), so words
                 taken from a passage beside the point count less
  + citations    0.15 when it cites at least one passage that exists, [n] with 1 <= n <= k
  - invalid      0.25 per citation of a passage that does not exist, at most 0.75
  - unsupported  `unsupported` (0.1) per name, number or identifier that is in no passage
                 and not in the question, at most 0.5
  - repetition   the share of repeated word 3-grams                             0..1
  - cut off      0.1 when generation hit the token limit mid-sentence; the unfinished
                 last sentence is left out of everything above, since the limit, not the
                 model, ended it
An empty answer, one without words, or one that is mostly a loop is garbage and loses to any
other; two garbage answers are 'both-bad'; scores within `margin` are a 'tie'. The pair is
judged in both orders (a, b) and (b, a); when the two verdicts disagree, it is a tie.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ragloop.core import CITATION, Comparison, Rater, Verdict, citations, hookimpl
from ragloop.plugins.raters.judge_support import Semantic, unsupported

VERSION = "3"          # change it whenever a heuristic changes: it is part of the rater id
MARGIN = 0.05
CITATION_BONUS = 0.15
INVALID_PENALTY, INVALID_CAP = 0.25, 0.75
UNSUPPORTED_PENALTY, UNSUPPORTED_CAP = 0.1, 0.5
# Twice the tie margin: of two answers otherwise alike, the finished one wins.
CUT_OFF_PENALTY = 0.1
LOOP = 0.8             # this share of repeated 3-grams makes an answer garbage
# Cosine (all-MiniLM-L6-v2) between an answer sentence and a passage sentence mapped to
# support: at or below LOW nothing, at or above HIGH full; paraphrases of one fact score
# ~0.7-0.9, sentences of one topic ~0.4-0.6.
SEMANTIC_LOW, SEMANTIC_HIGH = 0.5, 0.85
MIN_WEIGHT = 0.25      # a passage beside the point still backs the words it holds a little
MIRROR = {"a": "b", "b": "a", "tie": "tie", "both-bad": "both-bad"}

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
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
FINISHED = re.compile(r"[.!?](?=\s)|\n")
HAS_WORD = re.compile(r"[^\W\d_]{2,}")      # a text without one is garbage
CLOSERS = "\"')]}*`»” \t\n"


@dataclass
class JudgeOptions:
    swap: bool = field(default=True, metadata={
        "help": "Judge both orders, (a, b) and (b, a); a disagreement is a tie."})
    semantic: bool = field(default=True, metadata={
        "help": "Count a sentence as supported when a passage sentence means the same "
                "(cosine with the workspace's embedder, loaded once per session), and weigh "
                "passages by their relevance to the question."})
    unsupported: float = field(default=UNSUPPORTED_PENALTY, metadata={
        "help": f"Penalty per name, number or identifier in no passage (at most "
                f"{UNSUPPORTED_CAP}); 0 turns it off."})
    margin: float = field(default=MARGIN, metadata={
        "help": "Scores closer than this are a tie."})

    def __post_init__(self):
        if not 0 <= self.unsupported <= 1:
            raise ValueError(f"unsupported must be between 0 and 1, got {self.unsupported}")
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be between 0 and 1, got {self.margin}")


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
    unsupported: tuple[str, ...] = ()


def passage_weights(passages: list[str], question: str, semantic: Semantic | None = None
                    ) -> list[float]:
    """Each passage's relevance to the question relative to the most relevant one, at
    least MIN_WEIGHT; all 1.0 without a question."""
    if not passages or not content_words(question):
        return [1.0] * len(passages)
    if semantic is not None:
        raw = [max(x, 0.0) for x in semantic.similarity(question, passages)]
    else:
        asked = set(content_words(question))
        raw = [len(asked & set(content_words(p))) for p in passages]
    top = max(raw)
    return [max(MIN_WEIGHT, r / top) if top > 0 else 1.0 for r in raw]


def _semantic_credit(cosine: float) -> float:
    return min(max((cosine - SEMANTIC_LOW) / (SEMANTIC_HIGH - SEMANTIC_LOW), 0.0), 1.0)


def support(text: str, passages: list[str], question: str, semantic: Semantic | None = None,
            weights: list[float] | None = None) -> float:
    weights = weights or [1.0] * len(passages)
    vocab = [set(content_words(p)) for p in passages]
    lowered = [p.lower() for p in passages]
    asked = set(content_words(question))
    claimed: list[tuple[str, list[float]]] = []
    for sentence in SENTENCE_END.split(CITATION.sub(" ", text)):
        # A URL is one claim, supported only if it is in a passage as a whole: its pieces
        # ("https", "www", "com") are in every passage that holds any link.
        urls = [u.rstrip(".,;:!?)]'\"").lower() for u in URL.findall(sentence)]
        bare = URL.sub(" ", sentence)
        # Words of the question prove nothing: restating it is not support.
        credits = [max((w_ for v, w_ in zip(vocab, weights) if w in v), default=0.0)
                   for w in content_words(bare) if w not in asked]
        credits += [max((w_ for p, w_ in zip(lowered, weights) if u in p), default=0.0)
                    for u in urls]
        if credits:
            claimed.append((sentence.strip(), credits))
    if not claimed:
        return 0.0
    shares = [sum(c) / len(c) for _, c in claimed]
    # Meaning stands in for words only where the facts stand: a sentence with a name or a
    # number that no passage holds gets no semantic credit ("the GPL, version 3" is close in
    # meaning to "the MPL, version 2", and wrong).
    paraphrases = [i for i, (sentence, _) in enumerate(claimed)
                   if not unsupported(sentence, passages, question)]
    if semantic is not None and passages and paraphrases:
        best = semantic.best_match([claimed[i][0] for i in paraphrases], passages)
        for i, row in zip(paraphrases, best):
            shares[i] = max(shares[i], max(_semantic_credit(c) * w_
                                           for c, w_ in zip(row, weights)))
    return sum(shares) / len(shares)


def repetition(text: str) -> float:
    tokens = words(CITATION.sub(" ", text))
    grams = list(zip(tokens, tokens[1:], tokens[2:]))
    return 1 - len(set(grams)) / len(grams) if len(grams) >= 3 else 0.0


def ends_a_sentence(text: str) -> bool:
    text = CITATION.sub("", text).rstrip(CLOSERS)
    return text.endswith((".", "!", "?", ":", ";"))


def finished_part(text: str) -> str:
    """The text up to the end of its last finished sentence; all of it when none ends."""
    ends = list(FINISHED.finditer(text))
    return text[:ends[-1].end()] if ends else text


def score(answer: str, passages: list[str], question: str = "", cut_off: bool = False, *,
          semantic: Semantic | None = None, weights: list[float] | None = None,
          unsupported_penalty: float = UNSUPPORTED_PENALTY) -> Score:
    if not HAS_WORD.search(answer):
        return Score(total=-1.0, garbage=True)
    truncated = cut_off and not ends_a_sentence(answer)
    if truncated:
        # Half a sentence states nothing yet: a name or number it was about to qualify is not
        # a claim, and answers that quote more of a passage are the ones the limit cuts.
        head = finished_part(answer)
        if HAS_WORD.search(head):
            answer = head
    rep = repetition(answer)
    if rep >= LOOP:
        return Score(total=-1.0, repetition=rep, garbage=True)
    cited = citations(answer)
    valid = sum(1 <= n <= len(passages) for n in cited)
    invalid = len(cited) - valid
    if weights is None:
        weights = passage_weights(passages, question, semantic)
    sup = support(answer, passages, question, semantic, weights)
    missing = tuple(unsupported(URL.sub(" ", CITATION.sub(" ", answer)), passages, question))
    total = (sup + (CITATION_BONUS if valid else 0.0)
             - min(INVALID_PENALTY * invalid, INVALID_CAP) - rep
             - min(unsupported_penalty * len(missing), UNSUPPORTED_CAP)
             - (CUT_OFF_PENALTY if truncated else 0.0))
    return Score(round(total, 6), sup, valid, invalid, rep, truncated, unsupported=missing)


def decide(a: Score, b: Score, margin: float = MARGIN) -> str:
    if a.garbage and b.garbage:
        return "both-bad"
    if a.garbage or b.garbage:
        return "b" if a.garbage else "a"
    if abs(a.total - b.total) < margin:
        return "tie"
    return "a" if a.total > b.total else "b"


def five_point(s: Score) -> int:
    return 1 if s.garbage else 1 + round(4 * min(max(s.total, 0.0), 1.0))


def relevant(passage: str, question: str) -> bool:
    """A passage is relevant when it holds at least half of the question's content words."""
    asked = set(content_words(question))
    found = asked & set(content_words(passage))
    return bool(found) and len(found) * 2 >= len(asked)


def workspace_embedder(workspace):
    """The embedder the workspace's index was built with (its recorded options), or the
    default embedder outside a workspace. A new one, but its model is not loaded twice: the
    sentence-transformers embedder takes a model already loaded in the process (a session's
    searcher's, say)."""
    from ragloop.core import Searcher, build_config, registry
    if workspace is not None:
        return Searcher(workspace).index.embedder
    cls = registry.get_embedder("sentence-transformers")
    return cls(build_config(cls.Config, (), "sentence-transformers"))


class JudgeRater(Rater):
    name = "judge"
    description = "Automatic: prefers the answer better supported by the passages (deterministic)."
    version = VERSION
    Config = JudgeOptions

    def __init__(self, config=None, workspace=None):
        super().__init__(config, workspace)
        self.semantic = Semantic(lambda: workspace_embedder(self.workspace)) \
            if self.config.semantic else None

    def score(self, answer: str, item: Comparison, cut_off: bool,
              weights: list[float]) -> Score:
        return score(answer, item.passages, item.question, cut_off, semantic=self.semantic,
                     weights=weights, unsupported_penalty=self.config.unsupported)

    def compare(self, item: Comparison) -> Verdict:
        weights = passage_weights(item.passages, item.question, self.semantic)
        a = self.score(item.answer_a, item, item.cut_off[0], weights)
        b = self.score(item.answer_b, item, item.cut_off[1], weights)
        choice = decide(a, b, self.config.margin)
        if self.config.swap:
            # Judged again with the answers' order swapped, each scored afresh: a verdict
            # that depends on which answer came first is no verdict.
            b2 = self.score(item.answer_b, item, item.cut_off[1], weights)
            a2 = self.score(item.answer_a, item, item.cut_off[0], weights)
            if MIRROR[decide(b2, a2, self.config.margin)] != choice:
                choice = "tie"
        return Verdict(
            choice,
            scores=(five_point(a), five_point(b)) if item.ask_scores else None,
            relevant=[relevant(p, item.question) for p in item.passages]
            if item.ask_passages else None)


@hookimpl
def register_raters(register):
    register(JudgeRater)
