"""`curriculum`: orders training rows easy to hard; drops nothing.

Easy means a short answer (`by=length`: words of the completion, or of chosen plus
rejected) or a clear preference (`by=margin`: a larger reward margin first, read from a
key the rows carry, e.g. scores a reward model wrote). Ties keep their order. Training
keeps this order only if it does not shuffle; see docs/filters.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ragloop.core import (
    ANSWER_FIELDS,
    ROW_KINDS,
    Filter,
    FilterResult,
    RagloopError,
    hookimpl,
    noun,
    record_kind,
)


@dataclass
class CurriculumConfig:
    by: Literal["length", "margin"] = field(default="length", metadata={
        "help": "length: shorter answers first; margin: larger reward margin first."})
    margin_key: str = field(default="margin", metadata={
        "help": "The row field holding the reward margin (by=margin)."})
    hardest_first: bool = field(default=False, metadata={"help": "Reverse the order."})


class Curriculum(Filter):
    name = "curriculum"
    description = "Orders training rows easy to hard, by answer length or by reward margin."
    applies_to = ROW_KINDS
    Config = CurriculumConfig

    def value(self, record: dict) -> float:
        if self.config.by == "length":
            fields = ANSWER_FIELDS[record_kind(record)]
            return sum(len(str(record.get(f) or "").split()) for f in fields)
        return float(record[self.config.margin_key])

    def difficulty(self, record: dict) -> float:
        return self.value(record) if self.config.by == "length" else -self.value(record)

    def apply(self, records):
        records = list(records)
        key = self.config.margin_key
        if self.config.by == "margin":
            missing = [r for r in records if not isinstance(r.get(key), (int, float))
                       or isinstance(r.get(key), bool)]
            if missing:
                raise RagloopError(f"curriculum by margin: {len(missing)} of {len(records)} rows "
                                   f"have no number in {key!r}; set -o curriculum.margin_key=... "
                                   f"or use -o curriculum.by=length")
        ordered = sorted(records, key=self.difficulty, reverse=self.config.hardest_first)
        self.notes = []
        if records:
            values = [self.value(r) for r in (ordered[0], ordered[-1])]
            unit = "words" if self.config.by == "length" else key
            order = "hard to easy" if self.config.hardest_first else "easy to hard"
            self.notes = [f"ordered {noun(record_kind(records[0]), len(records))} {order} by "
                          f"{self.config.by} ({unit} {values[0]:g} to {values[1]:g})"]
        return FilterResult(kept=ordered)


@hookimpl
def register_filters(register):
    register(Curriculum)
