"""`ragloop compress`."""

from __future__ import annotations

import json

import click

from ragloop.core import (
    RagloopError,
    hookimpl,
    option_help,
    options_option,
    pass_workspace,
    registry,
    stderr,
)
from ragloop.plugins.compression.common import compress as run_compress


@click.command()
@click.option("--method", metavar="NAME", help="Compressor, e.g. torchao-int8-dynamic or "
              "prune-magnitude; without it, the installed ones are listed with their options.")
@click.option("--model", metavar="M", help="Model folder or hub id (default: the generator's "
              "default model).")
@click.option("--adapter", metavar="NAME", help="LoRA adapter (name or folder) merged in first.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder to write; must not exist (or be empty).")
@click.option("--eval-text", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Held-out text for perplexity (default: the workspace's chunks, else the "
                   "example corpus).")
@click.option("--eval-tokens", default=2048, show_default=True, type=click.IntRange(min=0),
              help="Tokens to measure perplexity on, before and after; 0 skips it.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto",
              show_default=True, help="Saved weights; auto keeps the source's (float32 when an "
              "adapter is merged).")
@options_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_workspace
def compress(ws, method, model, adapter, out, eval_text, eval_tokens, dtype, options, as_json):
    """Quantize or prune a model into a folder that loads again (`ask -o model=DIR`).

    Pruned folders hold the pruned weights; torchao-int8 and -int8-dynamic folders hold the
    int8 weights and scales (safetensors); int4 and bitsandbytes folders hold full-precision
    weights quantized again on load. Reports parameters, zeroed weights, what the folder
    stores and its size, and perplexity on held-out text before and after. `-o key=value`
    sets the method's options.
    """
    if not method:
        click.echo("\n".join(_listing()))
        return
    registry.get_compressor(method)
    if not out:
        raise RagloopError("give --out DIR, the folder to write the compressed model to")
    announce = (lambda message: None) if as_json else \
        (lambda message: stderr.print(f"{message}...", highlight=False))
    report = run_compress(ws, method, options, out=out, model=model, adapter=adapter,
                          eval_text=eval_text, eval_tokens=eval_tokens, dtype=dtype,
                          announce=announce)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    before, after = report["before"], report["after"]
    removed = before["parameters"] - after["parameters"]
    click.echo(f"Wrote {report['out']} ({method}: {report['summary']})")
    click.echo(f"  parameters   {before['parameters']:,} -> {after['parameters']:,} "
               f"({removed:,} removed)")
    click.echo(f"  zero weights {before['zeros']:,} -> {after['zeros']:,} of "
               f"{after['linear_weights']:,} Linear weights "
               f"({after['zeros'] / max(after['linear_weights'], 1):.1%})")
    source = report.get("source_weights_bytes")
    click.echo(f"  stored       {_size(report['weights_bytes'])} of weights"
               f"{f' (source {_size(source)})' if source else ''}: {report['stored']}")
    if "perplexity_after" in report:
        click.echo(f"  perplexity   {report['perplexity_before']:.2f} -> "
                   f"{report['perplexity_after']:.2f} ({report['eval_tokens']:,} tokens of "
                   f"{report['eval_source']})")
    click.echo(f"  took {report['seconds']} s; use it with: ragloop ask -o model={report['out']} "
               f"\"...\"")


def _size(count: int) -> str:
    for unit in ("bytes", "KB", "MB"):
        if count < 1000 or unit == "MB":
            return f"{count:,} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1000
    return ""


def _listing() -> list[str]:
    lines = []
    for name, entry in registry.entries("compressor").items():
        lines.append(f"{name} ({entry.cls.kind}): {entry.cls.description}")
        lines += [f"  {key} = {str(default).lower() if isinstance(default, bool) else default}: "
                  f"{text}" for key, _, default, text in option_help(entry.cls.Config)]
    return lines or ["No compressors installed."]


@hookimpl
def register_commands(cli):
    cli.add_command(compress)
