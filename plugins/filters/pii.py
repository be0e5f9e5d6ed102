"""`pii-redact`: replaces emails, phone numbers and API keys with placeholders; drops nothing.

Patterns are deliberately narrow (a phone number needs separators, a generic secret needs
a `key=`-like name before it) so dates, versions, IP addresses and commit hashes stay.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ragloop.core import (
    RECORD_KINDS,
    TEXT_FIELDS,
    Filter,
    FilterResult,
    hookimpl,
    noun,
    record_kind,
)

# kind -> (pattern, placeholder, noun); applied in this order, so specific token formats
# are named before the generic secret pattern could swallow them.
PATTERNS = {
    "aws": (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "[AWS_KEY]", "AWS key"),
    "github": (r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b",
               "[GITHUB_TOKEN]", "GitHub token"),
    "secret": (r"(?i)(?<![A-Za-z0-9])((?:[a-z0-9]+[_-])*(?:api[_-]?key|apikey|secret|token|"
               r"password|passwd|access[_-]?key|auth[_-]?key)\b[\"']?\s*[:=]\s*[\"']?)"
               r"[A-Za-z0-9+/_\-]{16,}={0,2}", r"\1[SECRET]", "secret"),
    "email": (r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
              "[EMAIL]", "email"),
    # Needs a +country code, an (area code) or -/. separators: plain spaced digit groups
    # are too often sizes or counts.
    "phone": (r"(?<![\w.+-])(?:\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]\d{2,4}){2,4}"
              r"|\(\d{2,4}\)[ .-]?\d{3,4}[ .-]\d{3,4}|\d{3}([.-])\d{3,4}\1\d{4})"
              r"(?![\d-]|\.\d)", "[PHONE]", "phone number"),
}


@dataclass
class PiiConfig:
    redact: list[str] = field(default_factory=lambda: list(PATTERNS), metadata={
        "help": f"What to redact, comma-separated: {', '.join(PATTERNS)}."})

    def __post_init__(self):
        unknown = [k for k in self.redact if k not in PATTERNS]
        if unknown:
            raise ValueError(f"redact: unknown {unknown[0]!r}; choose from {', '.join(PATTERNS)}")


class PiiRedact(Filter):
    name = "pii-redact"
    description = "Replaces emails, phone numbers and API keys with placeholders like [EMAIL]."
    applies_to = RECORD_KINDS
    Config = PiiConfig

    def redact(self, text: str, counts: Counter) -> str:
        for kind in PATTERNS:
            if kind in self.config.redact:
                pattern, placeholder, _ = PATTERNS[kind]
                text, n = re.subn(pattern, placeholder, text)
                counts[kind] += n
        return text

    def apply(self, records):
        counts, changed, kind = Counter(), 0, "documents"
        kept = []
        for record in records:
            kind = record_kind(record)
            new = dict(record)
            for name in TEXT_FIELDS[kind] + (("question",) if kind != "documents" else ()):
                if isinstance(record.get(name), str):
                    new[name] = self.redact(record[name], counts)
            changed += new != record
            kept.append(new if new != record else record)
        found = [f"{n} {PATTERNS[k][2]}{'s' if n != 1 else ''}" for k, n in counts.items() if n]
        self.notes = [f"redacted {', '.join(found)} in {noun(kind, changed)}"] if found else []
        return FilterResult(kept=kept)


@hookimpl
def register_filters(register):
    register(PiiRedact)
