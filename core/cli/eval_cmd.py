"""`ragloop eval`: evaluate an adapter against its base model, or a prompt against another,
and the retrieval under it."""

from __future__ import annotations

import json
from contextlib import ExitStack

import click

from ragloop.core import registry
from ragloop.core.cli.app import cli, options_option, pass_workspace
from ragloop.core.cli.progress import progress_bar, stderr
from ragloop.core.pipeline.ask import DEFAULT_GENERATOR
from ragloop.core.pipeline.evaluation import EvalSettings, prepare_eval, run_eval
from ragloop.core.pipeline.evaluation_report import summary_line
from ragloop.core.pipeline.prompt import DEFAULT_PROMPT


@cli.command("eval")
@click.option("--adapter", metavar="NAME", help="Adapter to evaluate (name or folder); "
              "default: the one `ragloop adapters use` chose.")
@click.option("--questions", "questions_file", metavar="FILE", help="Held-out questions, one "
              "per line or JSONL (\"question\", and \"answer\" and \"source\" for "
              "correctness); default: rated questions not trained on.")
@click.option("--rater", default="judge", show_default=True,
              help="Rater for the win rate: judge, human, llm-judge, or an installed one; its "
              "options: -o rater.key=value.")
@click.option("--rater-id", metavar="ID", help="Who is rating (default as for `ragloop rate`).")
@click.option("--out", metavar="DIR", help="Report folder; default: <workspace>/runs/eval-<id>.")
@click.option("--evaluators", metavar="A,B", help="Evaluators to run, comma-separated; "
              "default: all (retrieval, reward, winrate, correctness, and installed ones).")
@click.option("-n", "limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="At most N questions or pairs per evaluator; 0 for all.")
@click.option("-k", type=click.IntRange(min=1), default=4, show_default=True,
              help="Passages per answer, and the k of recall@k.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True,
              help="Longest answer, in tokens.")
@click.option("--generator", default=DEFAULT_GENERATOR, show_default=True, help="Generator plugin.")
@click.option("--prompt", "prompt_name", default=DEFAULT_PROMPT, show_default=True,
              metavar="NAME", help="Prompt plugin the answers are given with (see `ragloop ask "
              "--prompt`); its options: -o NAME.key=value.")
@click.option("--baseline-prompt", metavar="NAME", help="Compare --prompt against this prompt "
              "on one model (the adapter given or chosen, else none) instead of the adapter "
              "against its base: winrate and correctness.")
@click.option("--compress", metavar="METHOD", help="Quantize both models as they load, e.g. "
              "torchao-int8-dynamic (see docs/compression.md).")
@click.option("--live", is_flag=True, help="Print what `ragloop serve` collected instead: "
              "thumbs-up rate and head-to-head win rate per served adapter, with 95% "
              "intervals; generates nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@options_option
@pass_workspace
def eval_command(ws, adapter, questions_file, rater, rater_id, out, evaluators, limit, k,
                 max_new_tokens, generator, prompt_name, baseline_prompt, compress, live,
                 as_json, options):
    """Evaluate an adapter (or a prompt) and the retrieval; write a report.

    Evaluators: retrieval (recall@k, MRR@10, nDCG@10 against your passage judgments),
    reward (the adapter's implicit reward on held-out pairs), winrate (adapter against
    base on held-out questions, judged by --rater) and correctness (the same answers
    checked against the reference answers of a --questions file). Options go to an
    evaluator as -o NAME.key=value (e.g. -o reward.beta=0.1), to the generator otherwise
    (-o model=PATH). With --baseline-prompt, --prompt is compared against it instead:
    in the metrics, "base" is the baseline prompt and "adapter" the prompt. With --live,
    nothing is evaluated: the served feedback's numbers per adapter are printed.
    """
    if live:
        return _live(ws, as_json)
    if compress:               # a generator option, as in `rate`, so the report records it
        registry.get_compressor(compress)
        options = (*options, f"compress={compress}")
    names = tuple(n.strip() for n in (evaluators or "").split(",") if n.strip())
    settings = EvalSettings(adapter, questions_file, rater, rater_id, out, names, limit, k,
                            max_new_tokens, generator, tuple(options), prompt_name,
                            baseline_prompt)
    context = prepare_eval(ws, settings)
    with ExitStack() as stack:
        # A progress bar would draw over the human rater's screen.
        if rater != "human" or "winrate" not in context.evaluators:
            bar = stack.enter_context(progress_bar(quiet=as_json))

            def track(description, total):
                task = bar.add_task(description, total=total)
                return lambda n=1: bar.advance(task, n)

            context.progress = track
        result = run_eval(context)
    if as_json:
        click.echo(json.dumps({**result.record, "report": str(result.folder / "report.md")},
                              indent=2, default=str))
        return
    for name, r in result.results.items():
        for note in r.get("notes", []):
            stderr.print(f"Note ({name}): {note}", highlight=False, soft_wrap=True)
    for name, evaluator in context.evaluators.items():
        click.echo(summary_line(name, evaluator, result.results[name]))
    click.echo(f"Report: {result.folder / 'report.md'}")


def _live(ws, as_json: bool) -> None:
    """`eval --live`: the live numbers of `prefs stats`, alone. No feedback yet is a normal
    state of a new server, not an error: one line, exit 0."""
    ctx = click.get_current_context()
    given = [p for p in ctx.command.params if p.name not in ("live", "as_json")
             and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        raise click.UsageError(f"--live reads the served feedback and evaluates nothing; "
                               f"drop {max(given[0].opts, key=len)}")
    from ragloop.core.pipeline.prefs_stats import format_live, live_stats
    report = live_stats(ws.db)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif not (report["served"] or report["head_to_head"]):
        click.echo("No served feedback yet: thumbs and compare verdicts sent to "
                   "`ragloop serve` show here.")
    else:
        click.echo("\n".join(format_live(report)))
