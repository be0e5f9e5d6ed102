"""`ragloop adapters list | show | use | merge | export | rm`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ragloop.core.cli.app import cli, options_option, pass_workspace
from ragloop.core.cli.progress import stderr
from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.adapters import (
    check_base,
    export_adapter,
    find_adapter,
    get_adapter,
    list_adapters,
    merge_adapter,
    remove_adapter,
    require_lora,
    use_adapter,
)


def _model(ws, options, meta: dict):
    """The generator, configured as `ask` would load its model (nothing is loaded); an
    adapter for another base model is refused."""
    from ragloop.core.config import parse_pairs
    from ragloop.core.pipeline.ask import DEFAULT_GENERATOR, load_generator
    pairs = parse_pairs(options)
    unknown = sorted(set(pairs) - {"model"})
    if unknown:
        raise RagloopError(f"unknown option {unknown[0]!r}; valid options: model")
    if "model" not in pairs and meta.get("model"):
        # Said without loading (or first converting) the default model.
        raise RagloopError(f"adapter {meta['name']!r} was trained on {meta['model']}, not on "
                           f"the default model; give -o model={meta['model']}")
    model = pairs.get("model")
    generator = load_generator(ws, DEFAULT_GENERATOR, [f"model={model}"] if model else [])
    checkpoint = generator.checkpoint()        # the packaged model is converted here, once
    check_base(meta, generator.model_id, checkpoint)
    return generator


def _metric(meta: dict, key: str) -> str:
    value = (meta.get("metrics") or {}).get(key)
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


@cli.group()
def adapters():
    """Trained adapters: list, inspect, choose the default, merge, export, remove."""


@adapters.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_workspace
def list_cmd(ws, as_json):
    """Every adapter with its method, base model and final loss; * marks the default."""
    found = list_adapters(ws)
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
        return
    if not found:
        click.echo("No adapters yet; train one with `ragloop train`.")
        return
    rows = [[m["name"], m.get("method", "?"), m.get("kind", "?"),
             f"base {m.get('base_model_id') or m.get('base_model')}",
             f"steps {(m.get('metrics') or {}).get('global_step', '-')}"
             + (f" (stopped early, kept {m['metrics'].get('kept_step')})"
                if (m.get("metrics") or {}).get("stopped_early") else ""),
             f"loss {_metric(m, 'final_loss')}", (m.get("created_at") or "")[:19]]
            for m in found]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for m, row in zip(found, rows):
        cells = "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths))
        click.echo(f"{'*' if m['default'] else ' '} {cells}".rstrip())


@adapters.command()
@click.argument("name")
@pass_workspace
def show(ws, name):
    """Everything recorded about an adapter (JSON): metrics, settings and lineage. NAME is
    an adapter of the workspace, or a folder given as a path (./NAME)."""
    if Path(name).name == name and not name.startswith("."):
        meta = get_adapter(ws, name)           # a bare name is the workspace's, never a folder here
    else:
        meta = find_adapter(ws, name)
        if meta.get("kind") == "unknown":
            raise RagloopError(f"{meta['path']} is not an adapter folder (it holds neither "
                               f"ragloop-adapter.json nor adapter_config.json)")
    click.echo(json.dumps(meta, indent=2, default=str))


@adapters.command()
@click.argument("name", required=False)
@click.option("--none", "clear", is_flag=True, help="Go back to no adapter.")
@options_option
@pass_workspace
def use(ws, name, clear, options):
    """Make `ask` and `rate` use adapter NAME by default (checked against the base model,
    which -o model=... can name)."""
    if clear == bool(name):
        raise RagloopError("give an adapter NAME, or --none to use none")
    if clear:
        use_adapter(ws, None)
        click.echo("No default adapter; `ask` and `rate` use the base model.")
        return
    meta = get_adapter(ws, name)
    require_lora(meta, "used by `ask`")          # before the base model is looked up
    _model(ws, options, meta)
    use_adapter(ws, name)
    click.echo(f"`ask` and `rate` now use adapter {name!r} by default.")


@adapters.command()
@click.argument("name")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="New folder for the merged model.")
@options_option
@pass_workspace
def merge(ws, name, out, options):
    """Write base model + adapter as one model folder (safetensors) that transformers loads
    without PEFT; use it with -o model=DIR."""
    meta = get_adapter(ws, name)
    require_lora(meta, "merged")
    generator = _model(ws, options, meta)
    with stderr.status(f"Merging {name}..."):
        folder = merge_adapter(ws, name, out, generator)
    click.echo(f"Merged {name!r} into {folder}")


@adapters.command()
@click.argument("name")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="New folder for the copy.")
@pass_workspace
def export(ws, name, out):
    """Copy the workspace's adapter NAME, with its record, e.g. to share it."""
    click.echo(f"Exported {name!r} to {export_adapter(ws, name, out)}")


@adapters.command()
@click.argument("name")
@pass_workspace
def rm(ws, name):
    """Delete the workspace's adapter NAME (its run folder stays); nothing outside the
    workspace's adapters folder is ever deleted."""
    meta = remove_adapter(ws, name)
    click.echo(f"Removed {name!r}" + ("; no default adapter now." if meta["default"] else "."))
