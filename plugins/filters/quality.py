"""Text filters: `length` (word and character bounds) and `quality` (heuristics).

Both judge what a record says: a document's text, a training row's answer (completion, or
chosen and rejected for pairs, each on its own) — not the prompt, which is mostly the
retrieved passages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ragloop.core import (
    ANSWER_FIELDS,
    RECORD_KINDS,
    Filter,
    FilterResult,
    hookimpl,
    record_kind,
)


def answers(record: dict) -> list[tuple[str, str]]:
    """(field, text) for each part of a record the text filters judge."""
    fields = ANSWER_FIELDS[record_kind(record)]
    return [(f, str(record.get(f) or "")) for f in fields]


def _judge(records, check) -> FilterResult:
    """Keep a record when `check(text)` finds nothing wrong with any of its parts."""
    result = FilterResult(kept=[])
    for record in records:
        parts = answers(record)
        for name, text in parts:
            problem = check(text)
            if problem:
                cat, detail = problem
                where = f"{name} " if len(parts) > 1 else ""
                result.removed.append((record, f"{cat}: {where}{detail}"))
                break
        else:
            result.kept.append(record)
    return result


def _optional(help_text):
    return field(default=None, metadata={"help": help_text + " (none: no bound)."})


@dataclass
class LengthConfig:
    min_words: int | None = field(default=5, metadata={"help": "Fewest words (none: no bound)."})
    max_words: int | None = _optional("Most words")
    min_chars: int | None = _optional("Fewest characters")
    max_chars: int | None = _optional("Most characters")

    def __post_init__(self):
        for unit in ("words", "chars"):
            low, high = getattr(self, f"min_{unit}"), getattr(self, f"max_{unit}")
            if any(v is not None and v < 0 for v in (low, high)):
                raise ValueError(f"min_{unit} and max_{unit} must not be negative")
            if low is not None and high is not None and low > high:
                raise ValueError(f"min_{unit} ({low}) is more than max_{unit} ({high})")


class Length(Filter):
    name = "length"
    description = "Drops records shorter or longer than word or character bounds."
    applies_to = RECORD_KINDS
    Config = LengthConfig

    def check(self, text: str):
        cfg = self.config
        for unit, size in (("words", len(text.split())), ("chars", len(text))):
            word = ("word" if unit == "words" else "character") + ("" if size == 1 else "s")
            low, high = getattr(cfg, f"min_{unit}"), getattr(cfg, f"max_{unit}")
            if low is not None and size < low:
                return "too short", f"{size} {word}, fewer than {low}"
            if high is not None and size > high:
                return "too long", f"{size} {word}, more than {high}"
        return None

    def apply(self, records):
        return _judge(records, self.check)


BOILERPLATE = ("lorem ipsum", "click here", "we use cookies", "accept all cookies",
               "accept cookies", "cookie policy", "cookie settings", "subscribe to our newsletter",
               "javascript is disabled", "enable javascript")


@dataclass
class QualityConfig:
    min_alpha: float = field(default=0.5, metadata={
        "help": "Least share of letters among the non-space characters."})
    max_repeated_lines: float = field(default=0.3, metadata={
        "help": "Most share of non-empty lines that repeat an earlier line."})
    max_repeated_ngrams: float = field(default=0.2, metadata={
        "help": "Most share of word n-grams that repeat an earlier one."})
    ngram: int = field(default=5, metadata={"help": "Words per n-gram for the repetition check."})
    boilerplate: list[str] = field(default_factory=lambda: list(BOILERPLATE), metadata={
        "help": "Phrases that mark boilerplate, comma-separated (case ignored)."})
    max_boilerplate_lines: float = field(default=0.2, metadata={
        "help": "Most share of non-empty lines holding a boilerplate phrase."})

    def __post_init__(self):
        for name in ("min_alpha", "max_repeated_lines", "max_repeated_ngrams",
                     "max_boilerplate_lines"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.ngram < 1:
            raise ValueError(f"ngram must be at least 1, got {self.ngram}")


def _share_repeated(items) -> tuple[float, int]:
    items = list(items)
    return (1 - len(set(items)) / len(items), len(items)) if items else (0.0, 0)


class Quality(Filter):
    name = "quality"
    description = ("Drops texts with few letters, repeated lines or phrases, or boilerplate "
                   "(lorem ipsum, click here, cookie banners).")
    applies_to = RECORD_KINDS
    Config = QualityConfig

    def check(self, text: str):
        cfg = self.config
        chars = "".join(text.split())
        if chars:
            alpha = sum(c.isalpha() for c in chars) / len(chars)
            if alpha < cfg.min_alpha:
                return "few letters", f"{alpha:.0%} letters, below {cfg.min_alpha:.0%}"
        lines = [" ".join(line.lower().split()) for line in text.splitlines() if line.strip()]
        marked = [line for line in lines if any(m.lower() in line for m in cfg.boilerplate)]
        if lines and len(marked) / len(lines) > cfg.max_boilerplate_lines:
            phrase = next(m for m in cfg.boilerplate if m.lower() in marked[0])
            return "boilerplate", (f"{phrase!r} on {len(marked)} of {len(lines)} lines, "
                                   f"above {cfg.max_boilerplate_lines:.0%}")
        # Below a few lines or n-grams a single repeat is most of the text: not a signal.
        share, n = _share_repeated(lines)
        if n >= 4 and share > cfg.max_repeated_lines:
            return "repeated lines", (f"{share:.0%} of {n} lines repeat an earlier one, "
                                      f"above {cfg.max_repeated_lines:.0%}")
        words = text.lower().split()
        grams = (tuple(words[i:i + cfg.ngram]) for i in range(len(words) - cfg.ngram + 1))
        share, n = _share_repeated(grams)
        if n >= 10 and share > cfg.max_repeated_ngrams:
            return "repeated phrases", (f"{share:.0%} of {n} {cfg.ngram}-word phrases repeat, "
                                        f"above {cfg.max_repeated_ngrams:.0%}")
        return None

    def apply(self, records):
        return _judge(records, self.check)


@hookimpl
def register_filters(register):
    register(Length)
    register(Quality)
