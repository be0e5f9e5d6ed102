"""Evaluating an adapter (or a prompt against another: `baseline_prompt`), and the
retrieval under it: the API behind `ragloop eval`.

    context = prepare_eval(ws, EvalSettings(...))   # checks everything, writes nothing
    result = run_eval(context)                      # runs the evaluators, writes the report

Evaluators are plugins (`register_evaluators`), each built with its Config from
`-o NAME.key=value`, and called in turn as `evaluate(context)` with the EvalContext below.
`evaluate` returns ``{"metrics": {name: number}, "notes": [str], "details": [dict]}`` (a
plain ``{name: number}`` dict is taken as the metrics), or ``{"skipped": "reason"}`` when
there is nothing to measure yet; a skip is reported, not an error. An evaluator may also
define `check(context)` (refuse bad input before anything runs), `summary(result) -> str`
(one line for the terminal) and `plot(result, ax)` (draw into a matplotlib Axes for
report.png); `needs_adapter = False` lets it run without an adapter. `context.answers(q)`
gives the base and adapter answers to a question, generated once per run and shared by the
evaluators that score them (winrate judges them, correctness checks them against references).

The report folder (<ws>/runs/eval-<id>/ or --out) is written whole at the end
(core.evaluation_report); comparisons the win-rate evaluator makes are stored as ratings
the moment they are given, like `ragloop rate`'s, with the run id as their session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ragloop.core import registry
from ragloop.core.config import build_config, parse_pairs
from ragloop.core.errors import RagloopError
from ragloop.core.ids import new_id
from ragloop.core.pipeline.adapters import ADAPTER_SETTING, check_base, require_lora
from ragloop.core.pipeline.adapters import find_adapter as adapter_record
from ragloop.core.pipeline.ask import DEFAULT_GENERATOR, load_generator
from ragloop.core.pipeline.evaluation_data import (
    Trained,
    held_out_pairs,
    held_out_questions,
    rated_questions,
    trained_on,
)
from ragloop.core.pipeline.prompt import DEFAULT_PROMPT, load_prompt, route_options
from ragloop.core.pipeline.rating import BASE_VS_ADAPTER, PROMPTS, Session, Settings, load_rater
from ragloop.core.pipeline.rating_questions import Question, from_file
from ragloop.core.pipeline.search import Searcher


@dataclass
class EvalSettings:
    adapter: str | None = None            # name or folder; None: the workspace default
    questions: str | None = None          # a questions file for the win-rate
    rater: str = "judge"
    rater_id: str | None = None
    out: str | None = None                # report folder; None: <ws>/runs/eval-<id>
    evaluators: tuple[str, ...] = ()      # empty: every registered one
    limit: int = 20                       # items (questions, pairs) per evaluator; 0: all
    k: int = 4                            # passages per answer, and recall@k
    max_new_tokens: int = 256
    generator: str = DEFAULT_GENERATOR
    options: tuple[str, ...] = ()         # -o: NAME.key=value for evaluators, else generator
    prompt: str = DEFAULT_PROMPT          # the prompt the answers are given with
    baseline_prompt: str | None = None    # set: prompt against this prompt, on one model

    def __post_init__(self):
        if self.limit < 0:
            raise RagloopError("-n must be 0 (everything) or more")
        if self.k < 1:
            raise RagloopError("-k must be at least 1")
        if self.max_new_tokens < 1:
            raise RagloopError("--max-new-tokens must be at least 1")
        if self.baseline_prompt is not None and self.baseline_prompt == self.prompt:
            raise RagloopError(f"--prompt and --baseline-prompt are both {self.prompt!r}; "
                               f"give two different prompts to compare")

    @property
    def compares_prompts(self) -> bool:
        return self.baseline_prompt is not None


@dataclass
class Answers:
    """One held-out question's pair: the base model's and the adapter's answer, and the
    passages both were given, numbered from 1 as their [n] citations count them."""
    base: str
    adapter: str
    passages: list


def _no_progress(description: str, total: int) -> Callable[[int], None]:
    return lambda n=1: None


class EvalContext:
    """What an evaluator gets: the workspace, the settings, the adapter and its lineage,
    and shared, lazily loaded models (the base and adapter generators, loaded once for
    every evaluator that needs them)."""

    def __init__(self, ws, settings: EvalSettings):
        self.ws = ws
        self.settings = settings
        self.id = f"eval-{new_id()}"
        self.adapter: dict | None = None          # the adapter's record (core.adapters)
        self.evaluators: dict[str, Any] = {}
        self.generator_options: tuple[str, ...] = ()
        self.prompt_options: tuple[str, ...] = ()     # NAME.key=value for the prompts
        self.questions_file: list[Question] | None = None
        self.out: Path = Path(ws.runs_dir) / self.id
        # `progress(description, total)` returns `advance(n=1)`; the CLI draws a bar.
        self.progress: Callable[[str, int], Callable[[int], None]] = _no_progress
        self._rater = None
        self._session: Session | None = None
        self._trained: Trained | None = None
        self.base_model_id: str | None = None

    def limit(self, items: list) -> list:
        n = self.settings.limit
        return items[:n] if n else items

    @property
    def rater(self):
        if self._rater is None:
            self._rater = load_rater(self.settings.rater, self.ws)
        return self._rater

    @property
    def trained(self) -> Trained:
        if self._trained is None:
            self._trained = trained_on(self.ws, self.adapter or {})
        return self._trained

    @property
    def labels(self) -> tuple[str, str]:
        """What the two answers of a pair are: (baseline, evaluated)."""
        s = self.settings
        if s.compares_prompts:
            return f"prompt {s.baseline_prompt}", f"prompt {s.prompt}"
        return "base", "adapter"

    def held_out_pairs(self, by: str = "question") -> tuple[list[dict], list[str]]:
        return held_out_pairs(self.ws, self.trained, by), self.trained.note(self.adapter["name"])

    def held_out_questions(self) -> tuple[list[Question], list[str], str]:
        """(questions, notes, where they came from): --questions FILE, else the rated
        questions; either way less those the adapter (if any) trained on."""
        notes = self.trained.note(self.adapter["name"]) if self.adapter else []
        if self.questions_file is not None:
            source, questions = self.settings.questions, self.questions_file
        else:
            source, questions = "the rated questions", rated_questions(self.ws)
        kept = held_out_questions(questions, self.trained)
        if len(kept) < len(questions):
            notes.append(f"{len(questions) - len(kept)} of {len(questions)} questions from "
                         f"{source} were trained on and left out")
        return kept, notes, source

    def session(self) -> Session:
        """A rating session (greedy) of base against adapter, or of the baseline prompt
        against the prompt on one model; opened: the models loaded."""
        if self._session is None:
            s = self.settings
            if s.compares_prompts:
                candidates = PROMPTS + (f":{self.adapter['path']}" if self.adapter else "")
            else:
                candidates = f"{BASE_VS_ADAPTER}:{self.adapter['path']}"
            settings = Settings(candidates, k=s.k, max_new_tokens=s.max_new_tokens,
                                generator=s.generator, generator_options=self.generator_options,
                                prompt=s.prompt, prompt_options=self.prompt_options,
                                baseline_prompt=s.baseline_prompt)
            rater_id = s.rater_id or self.rater.default_rater_id()
            session = Session(self.ws, self.rater, s.rater, rater_id, settings)
            session.id = self.id           # the comparisons' session: this run, for audits
            session.open()
            self._session = session
        return self._session

    def generators(self) -> list:
        """[base generator, adapter generator], loaded."""
        return self.session().generators

    def answer_all(self, questions: list[Question], what: str = "Answering") -> None:
        """Generates the pairs `answers` will give for `questions`, each model answering them
        in batches (core/pipeline/rating_batches.py); an evaluator calls it before scoring
        pairs one by one. Pairs stored already are left as they are."""
        from ragloop.core.pipeline.rating_batches import generate_pairs
        session = self.session()
        generate_pairs(session, questions, self.progress(what, len(questions)))

    def answers(self, question: Question) -> Answers:
        """Both models' greedy answers to `question` and the passages they saw: the very
        pair the win rate judges. A pair stored under this run's settings (by the win rate,
        or by an earlier run) is read back; otherwise it is generated and stored, so every
        evaluator of a run, whichever runs first, sees the same answers, generated once."""
        _, pair, hits = self.session().pair(question)
        return Answers(pair[0].text, pair[1].text, list(hits))


def _route_options(pairs, evaluator_names) -> tuple[dict[str, list[str]], list[str]]:
    """`-o NAME.key=value` goes to evaluator NAME; everything else to the generator."""
    routed: dict[str, list[str]] = {n: [] for n in evaluator_names}
    generator = []
    for pair in pairs:
        key = pair.partition("=")[0]
        head, dot, rest = pair.partition(".")
        if dot and "." in key and head in routed:
            routed[head].append(rest)
        else:
            generator.append(pair)
    return routed, generator


def find_adapter(ws, name: str | None) -> dict:
    name = name or ws.get_setting(ADAPTER_SETTING)
    if not name:
        raise RagloopError("no adapter to evaluate; train one with `ragloop train` or pass "
                           "--adapter")
    meta = adapter_record(ws, name)                # a one-line error listing the adapters
    require_lora(meta, "evaluated against its base model")
    return meta


def prepare_eval(ws, settings: EvalSettings) -> EvalContext:
    """Check every input before anything is loaded at length, generated or written."""
    context = EvalContext(ws, settings)
    available = registry.entries("evaluator")
    names = list(settings.evaluators) or list(available)
    for name in names:
        registry.get_evaluator(name)               # unknown names list the valid ones
    if settings.compares_prompts:
        names = _prompt_evaluators(names, available, bool(settings.evaluators))
    if not names:
        raise RagloopError("no evaluators are installed")
    prompts = [p for p in (settings.baseline_prompt, settings.prompt) if p]
    by_prompt, options = route_options(settings.options, [*prompts, "rater"])
    if by_prompt["rater"]:                         # -o rater.key=value: checked now
        context._rater = load_rater(settings.rater, ws, by_prompt["rater"])
    for name in prompts:                           # unknown names and bad options, now
        load_prompt(ws, name, by_prompt[name])
    context.prompt_options = tuple(f"{n}.{o}" for n in prompts for o in by_prompt[n])
    routed, context.generator_options = _route_options(options, available)
    for name, pairs in routed.items():
        if pairs and name not in names:
            raise RagloopError(f"-o {name}.{pairs[0]} is for evaluator {name!r}, which is not "
                               f"selected with --evaluators")
    parse_pairs(context.generator_options)
    if settings.out:
        context.out = Path(settings.out).expanduser()
        if context.out.exists() and (not context.out.is_dir() or any(context.out.iterdir())):
            raise RagloopError(f"{context.out} already exists and is not an empty folder; "
                               f"choose another --out")
    Searcher(ws).require_index()
    for name in names:
        cls = available[name].cls
        config = build_config(cls.Config, routed[name], f"evaluator {name}")
        context.evaluators[name] = cls(config, workspace=ws)
    if settings.compares_prompts:
        # One model: the adapter named, else the workspace default, as `ask` answers; or none.
        if settings.adapter or ws.get_setting(ADAPTER_SETTING):
            context.adapter = find_adapter(ws, settings.adapter)
        base = load_generator(ws, settings.generator, context.generator_options)
        if context.adapter:
            checkpoint = getattr(base, "checkpoint", None)
            check_base(context.adapter, base.model_id, checkpoint() if checkpoint else None)
        context.base_model_id = base.model_id
    elif any(getattr(e, "needs_adapter", True) for e in context.evaluators.values()):
        context.adapter = find_adapter(ws, settings.adapter)
        base = load_generator(ws, settings.generator, context.generator_options)
        checkpoint = getattr(base, "checkpoint", None)     # the id needs no weights loaded
        check_base(context.adapter, base.model_id, checkpoint() if checkpoint else None)
        context.base_model_id = base.model_id
    if settings.questions:
        context.questions_file = from_file(settings.questions)
    for evaluator in context.evaluators.values():
        check = getattr(evaluator, "check", None)
        if check is not None:
            check(context)
    return context


def _prompt_evaluators(names: list[str], available: dict, chosen: bool) -> list[str]:
    """Comparing prompts, the evaluators that compare two answers to one question
    (`compares_prompts = True`: winrate, correctness); one named that measures an adapter
    itself is refused."""
    fit = [n for n in names if getattr(available[n].cls, "compares_prompts", False)]
    wrong = [n for n in names if n not in fit]
    if chosen and wrong:
        raise RagloopError(f"evaluator {wrong[0]!r} does not compare prompts; with "
                           f"--baseline-prompt use {', '.join(fit) or 'winrate, correctness'}")
    return fit


@dataclass
class EvalResult:
    folder: Path
    record: dict
    results: dict = field(default_factory=dict)


def run_eval(context: EvalContext) -> EvalResult:
    from ragloop.core.pipeline.evaluation_report import build_record, write_report
    results = {}
    started = time.perf_counter()
    for name, evaluator in context.evaluators.items():
        began = time.perf_counter()
        # One task per evaluator: its models load before its own bars start, and off a
        # terminal that stretch would otherwise print nothing.
        done = context.progress(f"Evaluating {name}", 1)
        result = dict(evaluator.evaluate(context) or {})
        done()
        if "metrics" not in result and "skipped" not in result:
            # A plain {name: number} dict, as a minimal evaluator returns, is its metrics.
            result = {"metrics": {k: v for k, v in result.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)}}
        result.setdefault("notes", [])
        result["seconds"] = round(time.perf_counter() - began, 2)
        results[name] = result
    record = build_record(context, results, round(time.perf_counter() - started, 2))
    folder = write_report(context, record, results)
    return EvalResult(folder, record, results)


__all__ = ["EvalSettings", "EvalContext", "EvalResult", "Answers", "prepare_eval", "run_eval",
           "find_adapter"]
