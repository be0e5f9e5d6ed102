"""Running a chain of data filters over documents or training rows, and what each one did.

    apply_chain(ws, names, records, kind, options=(), *, context=(), allow_empty=False)
        -> (kept, ChainReport)

`kind` is one of `core.rows.RECORD_KINDS`: "documents" ({"path", "text", "metadata"}) or a
training shape ("pairs", "kto", "sft", as `prefs.build_rows` makes them). Every name is
resolved, checked against the kind and configured from `options` (`NAME.key=value`) before
any filter runs, so bad input costs nothing. Filters run in the order given, each on what
the previous one kept.

A filter that judges records against each other (dedup) sets the class attribute
``compares = True``; it is also shown the `context` records (at index time: the documents
already in the index, marked ``"indexed": True``) ahead of the new ones, so a new file that
repeats an indexed one is caught. Whatever it does to context records is ignored.

A chain that removes every record it was given raises RagloopError naming what removed
them, unless `allow_empty` (the preview) — callers call it before writing anything. A
filter may describe rewrites or reorders it made in ``self.notes`` (a list of lines).
Reasons read "category: detail"; the report groups removals by the category.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ragloop.core import registry
from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.core.rows import RECORD_KINDS, describe, noun


def all_of(kind: str, n: int) -> str:
    return f"the only {noun(kind, 1)[2:]}" if n == 1 else f"all {noun(kind, n)}"


def category(reason: str) -> str:
    return reason.split(": ", 1)[0]


@dataclass
class Step:
    name: str
    given: int
    kept: int
    removed: list[tuple[dict, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def categories(self) -> list[tuple[str, int]]:
        return Counter(category(r) for _, r in self.removed).most_common()

    def summary(self) -> str:
        parts = ", ".join(f"{n} {c}" for c, n in self.categories())
        return f"{self.name} removed {len(self.removed)}" + (f" ({parts})" if parts else "")


@dataclass
class ChainReport:
    kind: str
    given: int
    steps: list[Step] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return self.steps[-1].kept if self.steps else self.given

    @property
    def removed(self) -> list[tuple[dict, str, str]]:
        """(record, filter name, reason) for every removal, in chain order."""
        return [(r, s.name, why) for s in self.steps for r, why in s.removed]

    def lines(self, examples: int = 3) -> list[str]:
        """A readable report: per filter, removals grouped by category with examples."""
        out = [f"{self.kind.capitalize()}: kept {self.kept} of {self.given}."]
        for step in self.steps:
            removed = f", removed {len(step.removed)}" if step.removed else ""
            out.append(f"{step.name}: kept {step.kept} of {step.given}{removed}")
            for cat, n in step.categories():
                out.append(f"  {n} {cat}")
                shown = [(r, why) for r, why in step.removed if category(why) == cat]
                out += [f"    {describe(r)}: {why}" for r, why in shown[:examples]]
            out += [f"  {note}" for note in step.notes]
        return out

    def notes(self) -> list[str]:
        """One line per filter that did something, for commands that write data."""
        out = []
        for step in self.steps:
            if step.removed:
                out.append(f"filter {step.summary()} of {noun(self.kind, step.given)}.")
            out += [f"filter {step.name}: {note}" for note in step.notes]
        return out

    def to_dict(self, examples: int = 3) -> dict:
        return {"kind": self.kind, "given": self.given, "kept": self.kept, "filters": [
            {"name": s.name, "given": s.given, "kept": s.kept, "removed": len(s.removed),
             "reasons": dict(s.categories()), "notes": s.notes,
             "examples": [{"record": describe(r), "reason": why}
                          for r, why in s.removed[:examples]]}
            for s in self.steps]}


def build_chain(ws, names, kind: str, options=()) -> list:
    """Filter instances for `names`, checked against `kind`, configured from
    `NAME.key=value` options; every problem is a one-line RagloopError."""
    if kind not in RECORD_KINDS:
        raise RagloopError(f"unknown record kind {kind!r}; kinds: {', '.join(RECORD_KINDS)}")
    names = list(names)
    routed: dict[str, list[str]] = {name: [] for name in names}
    for pair in options:
        head, dot, rest = pair.partition(".")
        if not dot or head not in routed or "=" in head:
            listing = ", ".join(names) or "none given"
            raise RagloopError(f"option {pair!r} does not name a filter of the chain; write "
                               f"-o FILTER.key=value with FILTER one of {listing}")
        routed[head].append(rest)
    chain = []
    for name in names:
        cls = registry.get_filter(name)
        if kind not in cls.applies_to:
            raise RagloopError(f"filter {name!r} does not apply to {kind} "
                               f"(it applies to {', '.join(cls.applies_to)})")
        config = build_config(cls.Config, routed[name], owner=f"filter {name!r}")
        chain.append(cls(config, workspace=ws))
    return chain


def run_chain(chain, records, kind: str, *, context=(), allow_empty: bool = False):
    """Run built filters in order: (kept records, ChainReport)."""
    records = list(records)
    context = [{**r, "indexed": True} for r in context]
    report = ChainReport(kind, len(records))
    for f in chain:
        given = len(records)
        compares = getattr(f, "compares", False) and context
        if context and not compares:
            # Context goes through rewrites too (say, redaction), so it is compared in the
            # form new records reach a dedup filter in; its removals are ignored.
            seen = f.apply(list(context))
            context = seen.kept + [r for r, _ in seen.removed]
        result = f.apply([*context, *records] if compares else list(records))
        kept = [r for r in result.kept if not (compares and r.get("indexed"))]
        removed = [(r, why) for r, why in result.removed if not (compares and r.get("indexed"))]
        step = Step(f.name, given, len(kept), removed, list(getattr(f, "notes", None) or []))
        lost = given - len(kept) - len(removed)
        if lost > 0:
            step.notes.append(f"{noun(kind, lost)} dropped without a reason")
        report.steps.append(step)
        records = kept
    if report.given and not records and not allow_empty:
        said = "; ".join(s.summary() for s in report.steps if s.removed)
        raise RagloopError(f"the filter chain removed {all_of(kind, report.given)} "
                           f"({said}); nothing was written")
    return records, report


def apply_chain(ws, names, records, kind: str, options=(), *, context=(),
                allow_empty: bool = False):
    """Build the chain for `names` and run it: (kept records, ChainReport)."""
    chain = build_chain(ws, names, kind, options)
    return run_chain(chain, records, kind, context=context, allow_empty=allow_empty)
