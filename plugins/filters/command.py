"""`ragloop filter`: what a chain of data filters does to the workspace's data.

The filters family brings this command, registered through `register_commands`.
"""

from __future__ import annotations

import json

import click

from ragloop.core import (
    RECORD_KINDS,
    Indexer,
    RagloopError,
    all_of,
    build_chain,
    build_rows,
    hookimpl,
    indexed_documents,
    noun,
    option_help,
    pass_workspace,
    registry,
    run_chain,
)


def _shown(value) -> str:
    """A default as it would be written after -o NAME.key=."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "(empty)"
    if value is None or isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _list_filters() -> list[str]:
    lines = []
    for name, entry in registry.entries("filter").items():
        lines.append(f"{name} ({', '.join(entry.cls.applies_to)}): {entry.cls.description}")
        lines += [f"  {key} = {_shown(default)}: {text}" for key, _, default, text
                  in option_help(entry.cls.Config)]
    return lines or ["No filters installed."]


def _records(ws, kind: str) -> list[dict]:
    if kind == "documents":
        records = indexed_documents(ws)
        if not records:
            raise RagloopError("nothing is indexed yet; run `ragloop index PATH` first")
        return records
    records = build_rows(ws, kind)
    if not records:
        raise RagloopError(f"no {kind} rows yet; run `ragloop rate` first")
    return records


def _apply_to_index(ws, records, kept, report) -> list[str]:
    """Remove from the index what the chain dropped; rewrites cannot reach stored chunks."""
    removed = sorted({r["path"] for r, _, _ in report.removed})
    if removed:
        Indexer(ws).remove_documents(removed)
    before = {r["path"]: r["text"] for r in records}
    rewritten = sum(before.get(r["path"]) != r["text"] for r in kept)
    lines = [f"Removed {noun('documents', len(removed))} from the index."]
    if rewritten:
        lines.append(f"{noun('documents', rewritten)} would be rewritten; the index keeps "
                     f"their text. To index them rewritten, `ragloop remove` them and index "
                     f"them again with --filter.")
    return lines


@click.command(name="filter")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--on", "kind", type=click.Choice(RECORD_KINDS), default="documents",
              show_default=True, help="documents: the indexed documents; pairs, kto, sft: the "
                                       "training rows `prefs export` would write.")
@click.option("-o", "--filter-option", "options", multiple=True, metavar="NAME.KEY=VALUE",
              help="Filter option, repeatable, e.g. -o near-dedup.threshold=0.9.")
@click.option("--dry-run/--apply", default=True, show_default=True,
              help="Only show what the chain would do, or (documents only) remove what it "
                   "drops from the index.")
@click.option("--examples", default=3, show_default=True, metavar="N",
              help="Removed records shown per reason.")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_workspace
def filter_(ws, names, kind, options, dry_run, examples, as_json):
    """Preview a chain of data filters on the workspace's data.

    NAME... are filters, applied in order; without one, lists the filters and their
    options. Shows how many records each kept and removed, why, and a few examples.
    Filters act where data is used: `ragloop index --filter`, `ragloop prefs export
    --filter` and `ragloop train --filter`.
    """
    if not names:
        click.echo("\n".join(_list_filters()))
        return
    if not dry_run and kind != "documents":
        raise RagloopError("--apply only removes documents from the index; training rows are "
                           "filtered where they are used (`ragloop prefs export --filter`, "
                           "`ragloop train --filter`), and ratings are never deleted")
    chain = build_chain(ws, names, kind, options)
    records = _records(ws, kind)
    kept, report = run_chain(chain, records, kind, allow_empty=dry_run)
    lines = report.lines(examples)
    if not kept:
        lines.append(f"The chain removes {all_of(kind, len(records))}; a command using it "
                     f"would stop and write nothing.")
    applied = [] if dry_run else _apply_to_index(ws, records, kept, report)
    if as_json:
        click.echo(json.dumps({**report.to_dict(examples), "dry_run": dry_run,
                               "applied": applied}, indent=2))
        return
    lines += applied or ["Dry run: nothing was changed."]
    click.echo("\n".join(lines))


@hookimpl
def register_commands(cli):
    cli.add_command(filter_)
