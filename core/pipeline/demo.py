"""`ragloop demo`: the whole loop on the example corpus, offline, in a fresh workspace:
index -> two sampled answers per training question, rated by the judge -> a DPO LoRA
adapter -> adapter against base on held-out questions (judge win rate, and reference
containment by the `correctness` evaluator from the questions' reference answers) -> the
few-shot prompt against the default one on the same questions, base model -> a summary.

    result = run_demo(DemoSettings(...), ui)   # ui: DemoUI (progress bars, phase lines)

The demo workspace is `home` when it is empty or was made by an earlier demo (it holds the
MARKER file); otherwise `home/demo/` (under the same rule), so a real workspace is never
touched. Each run starts afresh there, keeping only `models/` (the converted default
model), so a second run takes no conversion time and gives the same kind of result.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from ragloop.core.config import split_prefixed
from ragloop.core.errors import RagloopError

MARKER = ".ragloop-demo"
KEEP = ("models", MARKER)            # what a re-run keeps: the converted model
ROOT = Path(__file__).resolve().parents[2]
PARTS = ("embedder", "generator")


@dataclass
class DemoSettings:
    home: Path
    questions: int = 12                 # training questions rated by the judge
    held_out: int = 4                   # questions for the win rate, never trained on
    max_steps: int = 10
    max_new_tokens: int = 48
    k: int = 2                          # passages per answer: shorter prompts, faster steps
    seed: int = 0
    rater: str = "judge"                # rates the training answers and the win rate
    corpus: Path = ROOT / "examples" / "corpus"
    questions_file: Path = ROOT / "examples" / "questions.jsonl"
    options: tuple[str, ...] = ()       # embedder.KEY=VALUE, generator.KEY=VALUE
    eval_split: float = 0.25            # rated pairs kept from training for the reward check
    generator: str = "transformers"     # the generator plugin that answers, base and adapter

    def __post_init__(self):
        for name in ("questions", "max_steps", "max_new_tokens", "k"):
            if getattr(self, name) < 1:
                raise RagloopError(f"--{name.replace('_', '-')} must be at least 1")
        if self.held_out < 1:
            raise RagloopError("--held-out must be at least 1")
        if not 0 <= self.eval_split < 1:
            raise RagloopError(f"--eval-split must be at least 0 and below 1, not {self.eval_split}")
        for what, path in (("--corpus", self.corpus), ("--questions-file", self.questions_file)):
            if not Path(path).exists():
                raise RagloopError(f"{what} {path} does not exist (the examples ship with the "
                                   f"source tree; give {what} PATH)")
        self.parts = split_prefixed(self.options, PARTS)


class DemoUI:
    """What the demo reports along the way; the CLI draws bars, tests pass nothing."""

    def phase(self, text: str) -> None: ...

    def track(self, description: str, total: int | None):
        return lambda n=1: None

    def status(self, text: str):
        """A context for a wait with nothing to count (loading a model)."""
        return nullcontext()

    def training_listeners(self) -> list:
        return []


@dataclass
class DemoResult:
    home: Path
    rater: str = "judge"
    documents: int = 0
    chunks: int = 0
    train_questions: int = 0
    held_out: int = 0
    verdicts: dict = field(default_factory=dict)
    pairs: int = 0
    reward_pairs: int = 0               # of `pairs`, held out from training
    adapter: str = ""
    adapter_dir: Path | None = None
    run_dir: Path | None = None
    train: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)
    report: Path | None = None
    few_shot: dict = field(default_factory=dict)    # evaluator -> metrics, prompt vs default
    few_shot_report: Path | None = None
    timings: dict = field(default_factory=dict)


def demo_home(home: Path) -> Path:
    """Where the demo may work: `home`, else `home/demo`; never a folder holding other data."""
    home = Path(home).expanduser()
    for folder in (home, home / "demo"):
        if not folder.exists() or (folder / MARKER).exists() or \
                (folder.is_dir() and not any(folder.iterdir())):
            return folder
    raise RagloopError(f"{home} and {home / 'demo'} both hold data that is not an earlier "
                       f"demo's; run the demo with --home NEW_FOLDER")


def fresh(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        if item.name not in KEEP:
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
    (folder / MARKER).write_text("made by `ragloop demo`; each run empties this folder except "
                                 "models/\n", encoding="utf-8")


def pick_questions(s: DemoSettings):
    from ragloop.core.pipeline.rating_questions import from_file
    questions = from_file(s.questions_file)
    if len(questions) < s.questions + s.held_out:
        raise RagloopError(f"{s.questions_file} holds {len(questions)} questions; --questions "
                           f"{s.questions} plus {s.held_out} held out need more")
    random.Random(s.seed).shuffle(questions)
    return questions[:s.questions], questions[s.questions:s.questions + s.held_out]


def run_demo(s: DemoSettings, ui: DemoUI | None = None) -> DemoResult:
    from ragloop.core.workspace import Workspace
    ui = ui or DemoUI()
    home = demo_home(s.home)
    fresh(home)
    result = DemoResult(home, s.rater)
    train_qs, held_qs = pick_questions(s)
    result.train_questions, result.held_out = len(train_qs), len(held_qs)
    ws = Workspace(home)
    try:
        for name, step in (("index", _index), ("rate", _rate), ("train", _train),
                           ("eval", _evaluate), ("few-shot", _few_shot)):
            started = time.perf_counter()
            step(ws, s, ui, result, train_qs, held_qs)
            result.timings[name] = round(time.perf_counter() - started, 1)
    finally:
        ws.close()
    return result


def _index(ws, s, ui, result, train_qs, held_qs):
    from ragloop.core.pipeline.ingest import Indexer, discover
    ui.phase(f"Indexing {s.corpus}")
    files = discover([s.corpus])
    indexer = Indexer(ws, embedder_options=s.parts["embedder"])
    chunks = ui.track("Embedding", None)
    indexer.prepare(progress=chunks)
    advance = ui.track("Indexing files", len(files))
    known = indexer.known()
    for path in files:
        indexer.add_file(path, known, progress=chunks)
        advance()
    indexer.flush(progress=chunks)
    result.documents = len(indexer.report.added)
    result.chunks = indexer.report.chunks_embedded


def _rate(ws, s, ui, result, train_qs, held_qs):
    from collections import Counter

    from ragloop.core.pipeline.prefs import build_rows
    from ragloop.core.pipeline.rating import Session, Settings, load_rater
    from ragloop.core.pipeline.rating_batches import Ahead
    ui.phase(f"Answering {len(train_qs)} questions twice and rating the answers ({s.rater})")
    rater = load_rater(s.rater, ws)
    session = Session(ws, rater, s.rater, rater.default_rater_id(),
                      Settings(k=s.k, max_new_tokens=s.max_new_tokens, generator=s.generator,
                               generator_options=tuple(s.parts["generator"])))
    session.status = ui.status          # says "Loading the model" while open() loads it
    session.open()
    session.status = DemoUI().status    # from here the Rating bar tells the progress
    advance = ui.track("Rating", len(train_qs))
    verdicts: Counter = Counter()
    ahead = Ahead(session, train_qs)       # the answers come a batch of questions at a time
    try:
        for i, question in enumerate(train_qs, 1):
            ahead.before(question)
            verdicts[session.rate(question, i, len(train_qs)).choice] += 1
            advance()
    finally:
        session.close()
    result.verdicts = dict(verdicts)
    result.pairs = len(build_rows(ws, "pairs"))
    if not result.pairs:
        raise RagloopError(f"rater {s.rater} preferred neither answer for any of the {len(train_qs)} "
                           f"questions ({dict(verdicts)}), so there is nothing to train on; "
                           f"run the demo with more --questions")


def _model(s) -> str | None:
    for pair in s.parts["generator"]:
        key, _, value = pair.partition("=")
        if key.strip() == "model":
            return value.strip()
    return None


def _train(ws, s, ui, result, train_qs, held_qs):
    from ragloop.core.pipeline.training import TrainSettings, prepare_training, run_training
    held = int(result.pairs * s.eval_split)
    if held < 1 or held == result.pairs:     # too few pairs to spare any: train on them all
        held = 0
    result.reward_pairs = held
    ui.phase(f"Training a DPO adapter on {result.pairs - held} pairs ({s.max_steps} steps)"
             + (f", {held} held out for the reward check" if held else ""))
    job = prepare_training(ws, method="dpo", name="demo-dpo", model=_model(s),
                           settings=TrainSettings(max_steps=s.max_steps, batch_size=2,
                                                  seed=s.seed, save_steps=max(s.max_steps, 50),
                                                  eval_split=s.eval_split if held else 0.0))
    trained = run_training(ws, job, listeners=ui.training_listeners())
    result.adapter, result.adapter_dir, result.run_dir = (trained.adapter, trained.adapter_dir,
                                                          trained.run_dir)
    m = trained.metrics
    result.train = {k: m.get(k) for k in ("first_loss", "final_loss", "final_reward_margin",
                                          "global_step", "seconds_per_step")}


def _evaluate(ws, s, ui, result, train_qs, held_qs):
    from ragloop.core.pipeline.evaluation import EvalSettings, prepare_eval, run_eval
    ui.phase(f"Comparing the adapter with the base model on {len(held_qs)} held-out questions")
    held = _held_file(ws, held_qs)
    context = prepare_eval(ws, EvalSettings(
        adapter=result.adapter, questions=str(held), rater=s.rater, limit=0, k=s.k,
        max_new_tokens=s.max_new_tokens, generator=s.generator,
        options=tuple(s.parts["generator"])))
    context.progress = ui.track
    with ui.status("Evaluating"):      # the evaluators load their models before counting
        evaluated = run_eval(context)
    result.report = evaluated.folder / "report.md"
    for name, r in evaluated.results.items():
        result.eval[name] = r.get("metrics") or {"skipped": r.get("skipped")}


def _few_shot(ws, s, ui, result, train_qs, held_qs):
    """The ratings used at once, before any training: the `few-shot` prompt (the best-rated
    answers to the nearest rated questions as examples) against the default prompt, on the
    base model and the same held-out questions (eval comparisons never become examples)."""
    from ragloop.core.pipeline.evaluation import EvalSettings, prepare_eval, run_eval
    ui.phase(f"Trying the few-shot prompt against the default prompt on {len(held_qs)} "
             f"held-out questions (base model)")
    context = prepare_eval(ws, EvalSettings(
        questions=str(_held_file(ws, held_qs)), rater=s.rater, limit=0, k=s.k,
        max_new_tokens=s.max_new_tokens, generator=s.generator,
        options=tuple(s.parts["generator"]),
        evaluators=("correctness", "winrate"), prompt="few-shot", baseline_prompt="default"))
    context.progress = ui.track
    with ui.status("Evaluating"):
        evaluated = run_eval(context)
    result.few_shot_report = evaluated.folder / "report.md"
    for name, r in evaluated.results.items():
        result.few_shot[name] = r.get("metrics") or {"skipped": r.get("skipped")}


def _held_file(ws, held_qs) -> Path:
    # JSONL with the reference answers, so `correctness` checks both answers against them.
    held = ws.home / "held-out-questions.jsonl"
    held.write_text("".join(json.dumps(_question_record(q)) + "\n" for q in held_qs),
                    encoding="utf-8")
    return held


def _question_record(question) -> dict:
    record = {"question": question.text}
    record.update({k: v for k in ("answer", "source") if (v := getattr(question, k))})
    return record
