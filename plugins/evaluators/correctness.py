"""The `correctness` evaluator: base and adapter answers checked against reference answers.

For each held-out question that carries a reference answer (a JSONL `--questions` file's
`"answer"`, optionally its `"source"` document), both answers the win rate judges (the same
pair, generated once: `context.answers`) are scored by

  containment  the normalized reference occurs, as whole words, in the normalized answer
  f1           token F1 of the normalized answer against the normalized reference
  cites_source the answer cites ([n]) a passage from the reference's source document
               (only over the questions that give a source)

Normalization is SQuAD's: lowercase, punctuation removed, the articles a/an/the dropped,
whitespace collapsed; the answer's own [n] citation marks are removed first, as they are
not content. Each metric is reported as the base mean, the adapter mean, and the adapter −
base difference with a paired bootstrap interval (95% by default) over the questions.
Questions without a reference are counted as skipped, not scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ragloop.core import (
    Evaluator,
    RagloopError,
    citations,
    contains_reference,
    hookimpl,
    normalize_answer,
    token_f1,
)

METRICS = ("containment", "f1", "cites_source")
NEEDS = ('correctness needs questions with a reference answer: give --questions FILE, JSONL '
         'lines with "question" and "answer" (and optionally "source", the document it is from)')
# The core's, so this evaluator and the `reference` rater read "contains" the same way.
contains, normalize = contains_reference, normalize_answer


@dataclass
class CorrectnessOptions:
    confidence: float = field(default=0.95, metadata={
        "help": "Confidence of the bootstrap interval on each adapter − base difference."})
    samples: int = field(default=10_000, metadata={"help": "Bootstrap resamples."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap resampling."})

    def __post_init__(self):
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be between 0 and 1, got {self.confidence}")
        if self.samples < 100:
            raise ValueError(f"samples must be at least 100, got {self.samples}")


def cited(answer: str, passages: int) -> list[int]:
    """The passage numbers an answer cites as [n] or [n, m], in 1..passages, in order."""
    return [n for n in dict.fromkeys(citations(answer)) if 1 <= n <= passages]


def _parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("/", "."))


def same_document(path: str, source: str) -> bool:
    """One path is a suffix of the other, part by part: `examples/corpus/x.md`,
    `corpus/x.md`, `x.md` and `/home/me/examples/corpus/x.md` all name one document."""
    a, b = _parts(path), _parts(source)
    shorter = min(len(a), len(b))
    return shorter > 0 and a[-shorter:] == b[-shorter:]


def cites_source(answer: str, passages: list, source: str) -> bool:
    return any(same_document(passages[n - 1].path, source)
               for n in cited(answer, len(passages)))


def score(answer: str, reference: str, source: str | None, passages: list) -> dict:
    out = {"containment": float(contains(answer, reference)),
           "f1": token_f1(answer, reference)}
    if source:
        out["cites_source"] = float(cites_source(answer, passages, source))
    return out


def compare(details: list[dict], confidence: float = 0.95, samples: int = 10_000,
            seed: int = 0) -> dict:
    """Per metric: the base and adapter means and the paired difference with its interval,
    over the questions scored on it (cites_source: those with a source)."""
    from ragloop.core import paired_bootstrap     # here: plugin modules load at every start
    metrics = {}
    for name in METRICS:
        rows = [d for d in details if name in d["base"]]
        if not rows:
            continue
        base = [d["base"][name] for d in rows]
        adapter = [d["adapter"][name] for d in rows]
        diff = paired_bootstrap(adapter, base, confidence, samples, seed)
        metrics.update({f"{name}_base": sum(base) / len(rows),
                        f"{name}_adapter": sum(adapter) / len(rows),
                        f"{name}_diff": diff["difference"], f"{name}_diff_low": diff["low"],
                        f"{name}_diff_high": diff["high"]})
    return metrics


def _has_reference(question) -> bool:
    return bool(question.answer and normalize(question.answer))


class CorrectnessEvaluator(Evaluator):
    name = "correctness"
    description = ("Reference containment, token F1 and citation of the reference's source: "
                   "adapter against base, with paired bootstrap intervals.")
    Config = CorrectnessOptions
    compares_prompts = True        # eval --baseline-prompt: the prompt against the baseline

    def check(self, context) -> None:
        # Asked for by name, it must have something to score; run among all evaluators by
        # default, it is skipped instead, as the others are when they have nothing yet.
        if self.name not in context.settings.evaluators:
            return
        if not any(_has_reference(q) for q in context.questions_file or []):
            raise RagloopError(NEEDS)

    def evaluate(self, context) -> dict:
        questions, notes, source = context.held_out_questions()
        if not questions:
            return {"skipped": f"no held-out questions in {source}", "notes": notes}
        # The same questions the win rate takes, so both score the same answers.
        questions = context.limit(questions)
        usable = [q for q in questions if _has_reference(q)]
        skipped = len(questions) - len(usable)
        if not usable:
            return {"skipped": f"none of the {len(questions)} held-out questions from {source} "
                               f"has a reference answer; {NEEDS.partition(': ')[2]}",
                    "notes": notes}
        if skipped:
            notes.append(f"{skipped} of {len(questions)} questions have no reference answer "
                         f"and were skipped")
        if hasattr(context, "answer_all"):
            context.answer_all(usable, "Answering (correctness)")
        advance = context.progress("Correctness", len(usable))
        details = []
        for question in usable:
            pair = context.answers(question)
            details.append({
                "question": question.text, "reference": question.answer,
                "source": question.source,
                "base": score(pair.base, question.answer, question.source, pair.passages),
                "adapter": score(pair.adapter, question.answer, question.source,
                                 pair.passages)})
            advance(1)
        cfg = self.config
        metrics = compare(details, cfg.confidence, cfg.samples, cfg.seed)
        with_source = sum("cites_source" in d["base"] for d in details)
        metrics.update({"questions": len(details), "with_source": with_source,
                        "skipped_no_reference": skipped})
        notes.append(f"questions from {source}; intervals: paired bootstrap "
                     f"{cfg.confidence:.0%} on adapter − base ({cfg.samples} resamples)")
        return {"metrics": metrics, "notes": notes, "details": details}

    def summary(self, result: dict) -> str:
        m = result["metrics"]
        parts = [f"{name} {m[f'{name}_base']:.3f} -> {m[f'{name}_adapter']:.3f} "
                 f"({m[f'{name}_diff']:+.3f} [{m[f'{name}_diff_low']:+.3f}, "
                 f"{m[f'{name}_diff_high']:+.3f}])"
                 for name in METRICS if f"{name}_base" in m]
        skipped = f", {m['skipped_no_reference']} without a reference skipped" \
            if m["skipped_no_reference"] else ""
        return "  ".join(parts) + f"  ({m['questions']} questions{skipped})"

    def plot(self, result: dict, ax) -> None:
        m = result["metrics"]
        names = [n for n in METRICS if f"{n}_base" in m]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [m[f"{n}_base"] for n in names], 0.4, label="base",
               color="tab:gray")
        ax.bar([x + 0.2 for x in xs], [m[f"{n}_adapter"] for n in names], 0.4, label="adapter",
               color="tab:blue")
        ax.set_xticks(list(xs), names)
        ax.set_ylim(0, 1)
        ax.legend()
        ax.set_title(f"correctness ({m['questions']} questions)")


@hookimpl
def register_evaluators(register):
    register(CorrectnessEvaluator)
