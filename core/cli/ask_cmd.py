"""`ragloop ask` and `logs`."""

from __future__ import annotations

import json

import click

from ragloop.core.cli.app import cli, options_option, pass_workspace
from ragloop.core.cli.progress import status, stderr
from ragloop.core.pipeline.ask import (
    DEFAULT_GENERATOR,
    generate,
    load_generator,
    log_ask,
    prepare,
    resolve_adapter,
)
from ragloop.core.pipeline.prompt import DEFAULT_PROMPT, load_prompt, route_options
from ragloop.core.pipeline.search import MODES, Searcher
from ragloop.core.pipeline.sections import EXPANSIONS
from ragloop.core.pipeline.session import answer_sources


@cli.command()
@click.argument("question")
@click.option("-k", default=4, show_default=True, help="Passages to retrieve.")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True,
              help="Retrieval mode.")
@click.option("--expand", type=click.Choice(EXPANSIONS), default="chunk", show_default=True,
              help="section: give the model the section around each matched chunk (up to "
                   "~4,000 characters) instead of the chunk.")
@click.option("--adapter", metavar="NAME", help="LoRA adapter (name or folder); default: the "
              "one chosen with `ragloop adapters use`, else none.")
@click.option("--generator", default=DEFAULT_GENERATOR, show_default=True, help="Generator plugin.")
@click.option("--prompt", "prompt_name", default=DEFAULT_PROMPT, show_default=True,
              metavar="NAME", help="Prompt plugin: default, few-shot (rated answers to similar "
              "questions as examples), or an installed one; its options: -o NAME.key=value.")
@click.option("--compress", metavar="METHOD", help="Quantize the model as it loads, e.g. "
              "torchao-int8-dynamic (see docs/compression.md).")
@click.option("--max-new-tokens", default=256, show_default=True, help="Longest answer, in tokens.")
@click.option("--temperature", default=0.0, show_default=True, help="0 = greedy; above 0 samples.")
@click.option("--seed", type=int, default=None, help="Seed for sampling (recorded in the log).")
@click.option("--no-stream", is_flag=True, help="Print the answer only when it is complete.")
@options_option
@click.option("--json", "as_json", is_flag=True, help="Output JSON (implies --no-stream).")
@pass_workspace
def ask(ws, question, k, mode, expand, adapter, generator, prompt_name, compress, max_new_tokens,
        temperature, seed, no_stream, options, as_json):
    """Answer a question from your documents, with citations.

    Retrieves passages, streams an answer that cites them as [n], lists the sources,
    and logs the ask so it can be rated later.
    """
    searcher = Searcher(ws)
    searcher.require_index()
    adapter_path = resolve_adapter(ws, adapter)
    if temperature < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--temperature")
    routed, options = route_options(options, [prompt_name])
    prompt = load_prompt(ws, prompt_name, routed[prompt_name])
    model = load_generator(ws, generator, options, adapter_path, compress)
    _check_before_loading(model)
    # Status lines on stderr while nothing else shows (a spinner on a terminal); both end
    # before the answer streams to stdout, so nothing is written between its pieces.
    with status("Loading the model"):
        model.context_length
    with status("Retrieving passages"):
        answer = prepare(ws, question, model, k=k, mode=mode, max_new_tokens=max_new_tokens,
                         searcher=searcher, expand=expand, prompt=prompt)
    for note in answer.prompt.notes:
        stderr.print(f"Note: {note}.")
    stream = not (no_stream or as_json)
    for piece in generate(answer, model, temperature=temperature, seed=seed):
        if stream:
            click.echo(piece, nl=False)
    ask_id = log_ask(ws, answer, model, generator, adapter_path, searcher.index.version)
    sources = answer_sources(answer)
    if as_json:
        click.echo(json.dumps({"id": ask_id, "question": question, "answer": answer.text,
                               "sources": sources, "model_id": model.model_id,
                               "adapter": adapter_path, "params": answer.params,
                               "timings": answer.timings, "notes": answer.prompt.notes},
                              indent=2, default=str))
        return
    if not stream:
        click.echo(answer.text, nl=False)
    click.echo("\n\nSources:")
    for s in sources:
        heading = f" ({s['heading']})" if s["heading"] else ""
        click.echo(f"[{s['n']}] {s['source']}{heading}")


def _check_before_loading(model) -> None:
    """What loading would refuse at once, refused before the loading line: a missing model
    folder (resolving the model's id), and what the generator checks (e.g. a --compress
    method that cannot load on this machine)."""
    model.model_id
    model.check()


@cli.command()
@click.option("-n", "count", default=20, show_default=True, help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Output JSON, with prompts and timings.")
@pass_workspace
def logs(ws, count, as_json):
    """List logged asks, newest first."""
    rows = list(ws.db.query("select * from asks order by created_at desc, id desc limit ?", [count]))
    if as_json:
        for row in rows:
            for key in [k for k in row if k.endswith("_json")]:
                row[key[:-5]] = json.loads(row.pop(key) or "null")
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No asks logged yet; try `ragloop ask \"...\"`.")
    for row in rows:
        answer = " ".join((row["answer"] or "").split())
        click.echo(f"{row['id']}  {row['created_at'][:19]}  {row['model_id']}"
                   f"{'  adapter ' + row['adapter'] if row['adapter'] else ''}")
        click.echo(f"  Q: {row['question']}")
        click.echo(f"  A: {answer[:160]}{'...' if len(answer) > 160 else ''}")
