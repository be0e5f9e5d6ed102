"""`ragloop demo`: the whole loop on the example corpus, with progress and a summary."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import click

from ragloop.core.cli.app import cli, options_option
from ragloop.core.cli.progress import stderr
from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.demo import ROOT, DemoSettings, DemoUI, run_demo
from ragloop.core.workspace import default_home


class BarsUI(DemoUI):
    """One rich bar per stage on stderr; plain lines when stderr is not a terminal."""

    def __init__(self, progress, quiet=False):
        self.progress, self.quiet = progress, quiet
        self.tasks: list = []

    def _add(self, description, total):
        task = self.progress.add_task(description, total=total)
        self.tasks.append(task)
        return task

    def phase(self, text):
        # A phase's tasks end with it: one counted without a total (embedding) would
        # otherwise keep printing heartbeat lines through the phases after it.
        for task in self.tasks:
            self.progress.remove_task(task)
        self.tasks = []
        if not self.quiet:
            stderr.print(f"[bold]>[/bold] {text}", highlight=False)

    def track(self, description, total):
        task = self._add(description, total)
        return lambda n=1: self.progress.advance(task, n)

    @contextmanager
    def status(self, text):
        # A task of the same Progress, not a spinner: rich allows one live display at a time.
        task = self.progress.add_task(text, total=None)
        try:
            yield
        finally:
            self.progress.remove_task(task)

    def training_listeners(self):
        # Its own bar inside the same Progress: rich allows one live display at a time.
        task = self._add("Training dpo", None)

        def listen(event):
            if event["event"] == "begin":
                self.progress.update(task, total=event["max_steps"], completed=event["step"])
            elif event["event"] == "step":
                self.progress.update(task, completed=event["step"])
            elif event["event"] == "log" and "loss" in event["logs"]:
                self.progress.update(task, description=f"Training dpo (loss "
                                                       f"{event['logs']['loss']:.4f})")
        return [listen]


def _fmt(value, spec=".3f"):
    return "-" if value is None else format(value, spec)


def correctness_line(m: dict, head="Eval        correctness:", a="base", b="adapter") -> str:
    """Reference containment a -> b, the point of the loop, with its paired interval;
    token F1 beside it, as containment moves in whole questions."""
    return (f"{head} reference contained {a} {m['containment_base']:.2f} -> "
            f"{b} {m['containment_adapter']:.2f} ({m['containment_diff']:+.2f} "
            f"[{m['containment_diff_low']:+.2f}, {m['containment_diff_high']:+.2f}]), token F1 "
            f"{m['f1_base']:.2f} -> {m['f1_adapter']:.2f}, over {m['questions']} held-out "
            f"questions")


def few_shot_lines(r) -> list[str]:
    """The few-shot prompt against the default one (base model): ratings used before any
    training."""
    lines = []
    c, w = r.few_shot.get("correctness", {}), r.few_shot.get("winrate", {})
    if "containment_base" in c:
        lines.append(correctness_line(c, "Few-shot   ", "default prompt", "few-shot"))
    elif c.get("skipped"):
        lines.append(f"Few-shot    correctness: skipped ({c['skipped']})")
    if "win_rate" in w:
        lines.append(f"Few-shot    win rate vs the default prompt {w['win_rate']:.2f} "
                     f"[{w['ci_low']:.2f}, {w['ci_high']:.2f}] (win {w.get('win', 0)}, tie "
                     f"{w.get('tie', 0)}, both-bad {w.get('both_bad', 0)}, loss "
                     f"{w.get('loss', 0)})")
    elif w.get("skipped"):
        lines.append(f"Few-shot    win rate: skipped ({w['skipped']})")
    return lines


def summary(r, seconds: float) -> str:
    t, v = r.train, r.verdicts
    lines = [f"Workspace   {r.home}",
             f"Indexed     {r.documents} documents, {r.chunks} chunks",
             f"Rated       {r.train_questions} questions by {r.rater}: "
             + ", ".join(f"{k} {n}" for k, n in sorted(v.items())) + f" -> {r.pairs} pairs"
             + (f" ({r.reward_pairs} held out)" if r.reward_pairs else ""),
             f"Trained     {r.adapter} ({t.get('global_step')} DPO steps, loss "
             f"{_fmt(t.get('first_loss'), '.4f')} -> {_fmt(t.get('final_loss'), '.4f')})"]
    for name, m in r.eval.items():
        if m.get("skipped") and len(m) == 1:
            lines.append(f"Eval        {name}: skipped ({m['skipped']})")
        elif name == "winrate":
            lines.append(f"Eval        win rate vs base {m['win_rate']:.2f} "
                         f"[{m['ci_low']:.2f}, {m['ci_high']:.2f}] over {r.held_out} held-out "
                         f"questions (win {m.get('win', 0)}, tie {m.get('tie', 0)}, "
                         f"both-bad {m.get('both_bad', 0)}, loss {m.get('loss', 0)})")
        elif name == "correctness":
            lines.append(correctness_line(m))
        elif name == "reward":
            lines.append(f"Eval        reward accuracy {m['accuracy']:.2f} over {m['pairs']} "
                         f"held-out pairs (mean margin {m['mean_margin']:+.4f})")
        else:
            lines.append(f"Eval        {name}: " + ", ".join(
                f"{k} {_fmt(x) if isinstance(x, float) else x}" for k, x in m.items()))
    lines += few_shot_lines(r)
    steps = ", ".join(f"{k} {s:.0f}s" for k, s in r.timings.items())
    lines += [f"Time        {seconds:.0f}s ({steps})",
              f"Adapter     {r.adapter_dir}", f"Run folder  {r.run_dir}", f"Report      {r.report}",
              "", "Next:",
              f"  ragloop --home {r.home} ask \"How many vacation days do I get?\" "
              f"--adapter {r.adapter}",
              f"  ragloop --home {r.home} rate --questions FILE     # add your own ratings",
              f"  ragloop --home {r.home} adapters use {r.adapter}  # ask and rate use it"]
    return "\n".join(lines)


@cli.command()
@click.option("--questions", type=click.IntRange(1), default=12, show_default=True,
              help="Training questions to answer twice and rate with the judge.")
@click.option("--held-out", type=click.IntRange(1), default=4, show_default=True,
              help="Other questions for the adapter-vs-base win rate and reference "
                   "containment.")
@click.option("--max-steps", type=click.IntRange(1), default=10, show_default=True,
              help="DPO optimizer steps (batch 2).")
@click.option("--eval-split", type=click.FloatRange(0, 1, max_open=True), default=0.25,
              show_default=True,
              help="Share of the rated pairs kept from training, to check the adapter's "
                   "reward accuracy on (0: train on all).")
@click.option("--max-new-tokens", type=click.IntRange(1), default=48, show_default=True,
              help="Longest answer, in tokens.")
@click.option("-k", type=click.IntRange(1), default=2, show_default=True,
              help="Passages per answer.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which questions train.")
@click.option("--rater", default="judge", show_default=True,
              help="Rater plugin for the training answers and the win rate (not human).")
@click.option("--corpus", type=click.Path(exists=True, path_type=Path),
              default=ROOT / "examples" / "corpus", help="Folder to index.")
@click.option("--questions-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=ROOT / "examples" / "questions.jsonl", help="Questions (JSONL or lines).")
@click.option("--generator", default="transformers", show_default=True,
              help="Generator plugin that answers (e.g. openvino: faster on a CPU, "
                   "docs/generation.md).")
@click.option("--quiet", is_flag=True, help="No progress, only the summary.")
@click.option("--home", "demo_home_option", metavar="DIR",
              type=click.Path(file_okay=False, path_type=str),
              help="Where to run, as with `ragloop --home DIR demo` (this one wins if both "
                   "are given).")
@options_option
@click.pass_context
def demo(ctx, questions, held_out, max_steps, eval_split, max_new_tokens, k, seed, rater, corpus,
         questions_file, generator, quiet, demo_home_option, options):
    """Run the whole loop on the example corpus, offline, in a fresh workspace.

    Indexes the corpus, answers training questions twice and has the judge rate the
    answers, trains a DPO LoRA adapter on the pairs, and compares it with the base model on
    held-out questions: the judge's win rate, and how often each model's answer contains
    the question's reference answer (questions file lines with "answer"); then the
    few-shot prompt (the rated answers as examples) against the default prompt on the same
    questions, base model. Works in --home
    (or $RAGLOOP_HOME) when that is empty or an earlier demo's, else in its demo/ subfolder;
    each run starts afresh there, keeping only the converted model.
    Models: -o embedder.model=PATH -o generator.model=PATH.
    """
    from rich.panel import Panel

    from ragloop.core.cli.progress import progress_bar
    home = demo_home_option or (ctx.obj.home if ctx.obj is not None else default_home())
    if rater == "human":
        raise RagloopError("the demo rates on its own; rate yourself afterwards with `ragloop rate`")
    settings = DemoSettings(Path(home), questions, held_out, max_steps, max_new_tokens, k, seed,
                            rater, corpus, questions_file, tuple(options), eval_split,
                            generator)
    started = time.perf_counter()
    with progress_bar(quiet) as bars:
        result = run_demo(settings, BarsUI(bars, quiet))
    text = summary(result, time.perf_counter() - started)
    if stderr.is_terminal and not quiet:
        from rich.console import Console
        Console().print(Panel(text, title="ragloop demo", expand=False), highlight=False)
    else:
        click.echo(text)
