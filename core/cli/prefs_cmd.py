"""`ragloop prefs stats | export | import`: the ratings as statistics and as training data."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ragloop.core import registry
from ragloop.core.cli.app import cli, pass_workspace
from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.prefs import collect, dataset_hash
from ragloop.core.pipeline.prefs_io import DEFAULT_FORMAT, check_out, row_format, write_rows
from ragloop.core.rows import ROW_KINDS, ROW_NOUNS


class RowFormatName(click.Choice):
    """The names of the registered row formats, read when the option is used rather than
    when this module is imported, so a plugin registered later (a test's) is offered too."""

    def __init__(self):
        super().__init__(())

    @property
    def choices(self):
        return tuple(registry.names("row format"))

    @choices.setter
    def choices(self, value):
        pass        # click.Choice.__init__ sets it; the registry is the list


@cli.group()
def prefs():
    """Preference data: statistics, export for training, import."""


@prefs.command()
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_workspace
def stats(ws, as_json):
    """Ratings per rater, position bias and agreement.

    Counts per rater and rater id, tie and both-bad rates, how often the left answer wins,
    Cohen's kappa (two raters) or Krippendorff's alpha (more) on shared items.
    """
    from ragloop.core.pipeline.prefs_stats import compute_stats, format_stats
    report = compute_stats(ws)
    click.echo(json.dumps(report, indent=2) if as_json else "\n".join(format_stats(report)))


@prefs.command()
@click.option("--format", "fmt", type=RowFormatName(), default=DEFAULT_FORMAT,
              show_default=True, help="JSON lines, or a folder for datasets.load_from_disk.")
@click.option("--kind", type=click.Choice(ROW_KINDS), default="pairs", show_default=True,
              help="pairs: prompt/chosen/rejected; kto: prompt/completion/label; "
                   "sft: prompt/completion.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), metavar="X",
              help="Keep items where at least this share of raters agree (one rater: 1.0).")
@click.option("--rater", "rater_id", metavar="ID", help="Only this rater id's ratings.")
@click.option("--out", type=click.Path(path_type=Path), help="File or folder to write "
              "(jsonl default: stdout; required with --format hf).")
@click.option("--filter", "filter_names", multiple=True, metavar="NAME",
              help="Data filter to apply to the rows; repeatable, applied in order "
                   "(`ragloop filter` lists them).")
@click.option("-o", "--filter-option", "options", multiple=True, metavar="NAME.KEY=VALUE",
              help="Filter option, repeatable, e.g. -o near-dedup.threshold=0.9.")
@pass_workspace
def export(ws, fmt, kind, min_agreement, rater_id, out, filter_names, options):
    """Write the ratings as training rows.

    Only each rater's latest rating of an item counts; several raters on one item vote, and
    a tied vote drops it. Ties, both-bad and skips are not pairs. With --filter, the rows
    pass through the filter chain first; if it removes them all, nothing is written.
    """
    fmt = row_format(fmt)
    check_out(fmt, out)
    from ragloop.core.pipeline.filtering import build_chain, run_chain
    chain = build_chain(ws, filter_names, kind, options)
    built = collect(ws, kind, rater_id, min_agreement)
    rows = built.rows
    noun = ROW_NOUNS[kind]
    if not rows:
        filters = " ".join(f for f in (f"--rater {rater_id}" if rater_id else "",
                                       f"--min-agreement {min_agreement}"
                                       if min_agreement is not None else "") if f)
        if filters and collect(ws, kind).rows:
            raise RagloopError(f"no {noun} match {filters}; `ragloop prefs stats` lists raters")
        raise RagloopError(f"no {noun} yet; run `ragloop rate` first")
    rows, report = run_chain(chain, rows, kind)
    if out is None:
        click.echo(fmt.dumps(rows), nl=False)
    else:
        write_rows(fmt, rows, out)
    for reason, n in sorted(built.dropped.items()):
        click.echo(f"Note: {n} left out: {reason}.", err=True)
    for note in report.notes():
        click.echo(f"Note: {note}", err=True)
    where = f" to {out}" if out else ""
    click.echo(f"Exported {len(rows)} {noun}{where} (sha256 {dataset_hash(rows)[:12]}).",
               err=True)


@prefs.command(name="import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--rater-id", metavar="ID", help="Rater id for the imported ratings "
              "(default: import).")
@pass_workspace
def import_(ws, file, rater_id):
    """Import training rows as ratings.

    FILE is JSONL or a folder written by `export --format hf`; pairs, KTO or SFT rows, told
    apart by their fields. A bad line is reported with its number and nothing is imported.
    """
    from ragloop.core.pipeline.prefs_io import import_file
    counts = import_file(ws, file, rater_id)
    click.echo(f"Imported {counts['rows']} rows ({counts['kind']}) from {file} "
               f"({counts['questions']} new questions, {counts['candidates']} new answers).")
