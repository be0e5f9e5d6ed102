"""The `winrate` evaluator: the adapter against its base model, judged by a rater plugin.

For each held-out question (from --questions FILE, else the rated questions; either way
less the questions the adapter trained on), both models answer greedily from the same
retrieved passages and prompt, and the rater (`--rater`, the judge by default) compares the
two answers shown in a random, recorded order. This is a `ragloop rate --candidates
base-vs-adapter` session, stored the same way (questions, candidates, comparisons with
rater and rater id, the eval run id as session), so every verdict can be audited and
later trained on. A verdict this rater id already gave on the very same answers is reused
instead of asked again, so an interrupted run continues where it stopped.

Counts: win (adapter better), loss, tie, both-bad, skipped. win_rate = (wins + (ties +
both-bad) / 2) / n over the n non-skipped verdicts, with a Wilson score interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ragloop.core import Evaluator, RagloopError, StopRating, hookimpl

OUTCOMES = ("win", "tie", "both-bad", "loss")


@dataclass
class WinRateOptions:
    confidence: float = field(default=0.95, metadata={
        "help": "Confidence of the Wilson interval around the win rate."})
    reuse: bool = field(default=True, metadata={
        "help": "Reuse this rater id's stored verdict on the same two answers."})

    def __post_init__(self):
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be between 0 and 1, got {self.confidence}")


def z_score(confidence: float) -> float:
    from statistics import NormalDist
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(p: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion p observed over n trials."""
    if n == 0:
        return 0.0, 1.0
    z = z_score(confidence)
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def win_rate_metrics(counts: dict, confidence: float = 0.95) -> dict:
    n = sum(counts.get(o, 0) for o in OUTCOMES)
    wins = counts.get("win", 0)
    even = counts.get("tie", 0) + counts.get("both-bad", 0)
    rate = (wins + even / 2) / n if n else 0.0
    low, high = wilson(rate, n, confidence)
    return {"win_rate": rate, "ci_low": low, "ci_high": high,
            **{o.replace("-", "_"): counts.get(o, 0) for o in OUTCOMES},
            "skipped": counts.get("skip", 0), "questions": n}


def stored_verdict(db, session, question) -> str | None:
    """This rater id's latest non-skip comparison of answers made under the session's
    settings (same models, adapter weights, index and generation settings)."""
    row = db.execute(
        "select c.id from comparisons c join candidates ca on ca.id = c.candidate_a "
        "join questions q on q.id = c.question_id where q.text_hash = ? and c.rater_id = ? "
        "and c.choice != 'skip' and json_extract(ca.params_json, '$.settings') = ? "
        "order by c.created_at desc, c.rowid desc limit 1",
        [question.hash, session.rater_id, session.fingerprint]).fetchone()
    return row[0] if row else None


def outcome(db, comparison_id: str) -> str:
    """The adapter's (or evaluated prompt's) result in a stored comparison (choices there
    name candidate_a/_b); the baseline is the pair's slot "a" (older rows: no adapter)."""
    choice, a_is_base = db.execute(
        "select c.choice, coalesce(json_extract(ca.params_json, '$.slot') = 'a', "
        "ca.adapter is null) from comparisons c join candidates ca "
        "on ca.id = c.candidate_a where c.id = ?", [comparison_id]).fetchone()
    if choice in ("a", "b"):
        return "loss" if (choice == "a") == bool(a_is_base) else "win"
    return choice


class WinRateEvaluator(Evaluator):
    name = "winrate"
    description = "Win rate of the adapter against its base model on held-out questions."
    Config = WinRateOptions
    compares_prompts = True        # eval --baseline-prompt: the prompt against the baseline

    def check(self, context) -> None:
        context.rater.check()       # e.g. the human rater needs a terminal

    def evaluate(self, context) -> dict:
        questions, notes, source = context.held_out_questions()
        if not questions:
            return {"skipped": f"no held-out questions in {source}: the adapter trained on "
                               f"every one; give new ones with --questions FILE",
                    "notes": notes}
        questions = context.limit(questions)
        session = context.session()
        db, counts, details = context.ws.db, {}, []
        if hasattr(context, "answer_all") and not context.rater.interactive:
            # A person starts rating at once instead; their session prefetches as they go.
            unjudged = [q for q in questions
                        if not (self.config.reuse and stored_verdict(db, session, q))]
            context.answer_all(unjudged, "Answering (win rate)")
        advance = context.progress("Win rate", len(questions))
        for position, question in enumerate(questions, 1):
            comparison_id = stored_verdict(db, session, question) if self.config.reuse else None
            reused = comparison_id is not None
            if not reused:
                try:
                    comparison_id = session.rate(question, position, len(questions)).comparison_id
                except StopRating as stop:
                    raise RagloopError(f"stopped ({stop or 'quit'}) after {position - 1} of "
                                       f"{len(questions)} questions; the verdicts given are "
                                       f"saved and reused: run the same command to continue")
            result = outcome(db, comparison_id)
            counts[result] = counts.get(result, 0) + 1
            details.append({"question": question.text, "comparison_id": comparison_id,
                            "outcome": result, "reused": reused})
            advance(1)
        reused = sum(d["reused"] for d in details)
        if reused:
            notes.append(f"{reused} verdicts by {session.rater_id} on the same answers were reused")
        metrics = win_rate_metrics(counts, self.config.confidence)
        notes.append(f"rater {context.settings.rater} as {session.rater_id}; questions from "
                     f"{source}; interval: Wilson {self.config.confidence:.0%}")
        return {"metrics": metrics, "notes": notes, "details": details}

    def summary(self, result: dict) -> str:
        m = result["metrics"]
        return (f"win rate {m['win_rate']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]  "
                f"win {m['win']} tie {m['tie']} both-bad {m['both_bad']} loss {m['loss']}"
                f"  ({m['questions']} questions)")

    def plot(self, result: dict, ax) -> None:
        m = result["metrics"]
        values = [m[o.replace("-", "_")] for o in OUTCOMES]
        ax.bar(OUTCOMES, values, color=["tab:green", "tab:gray", "tab:brown", "tab:red"])
        ax.set_ylabel("questions")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_title(f"adapter vs base: win rate {m['win_rate']:.2f} "
                     f"[{m['ci_low']:.2f}, {m['ci_high']:.2f}]")


@hookimpl
def register_evaluators(register):
    register(WinRateEvaluator)
