"""`ragloop index` and `remove`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ragloop.core.cli.app import cli, options_option, pass_workspace
from ragloop.core.cli.progress import progress_bar, stderr
from ragloop.core.config import split_prefixed
from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.ingest import Indexer, discover, documents_under
from ragloop.core.pipeline.search import display_path

PARTS = ("chunker", "embedder", "store")


def _summary(report) -> list[str]:
    n = lambda xs: len(xs)  # noqa: E731
    lines = [f"Indexed: {n(report.added)} added, {n(report.updated)} updated, "
             f"{n(report.removed)} removed, {n(report.unchanged)} unchanged, "
             f"{n(report.skipped)} skipped; {report.chunks_embedded} chunks embedded."]
    if report.rechunked:
        lines.append(f"Chunker settings changed ({report.rechunked}): every indexed document "
                     f"was re-chunked.")
    if report.reconciled:
        lines.append(_repair_line(report.reconciled))
    lines += [f"  skipped {display_path(p)}: {why}" for p, why in report.skipped]
    lines += [f"  warning {display_path(p)}: {w}" for p, w in report.warnings]
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _repair_line(done: dict) -> str:
    """--repair's and reconcile's counts as a sentence (--json keeps the numbers)."""
    if "embedded" in done:
        return f"Rebuilt the vector index: {_plural(done['embedded'], 'chunk')} re-embedded."
    return (f"Repaired the vector index: {_plural(done['stale_removed'], 'stale vector')} "
            f"removed, {_plural(done['missing_embedded'], 'missing chunk')} embedded.")


# The index's own tables: rebuilt from the files, never copied from a damaged database.
INDEX_TABLES = ("documents", "chunks", "index_state", "chunks_fts", "chunks_fts_data",
                "chunks_fts_idx", "chunks_fts_docsize", "chunks_fts_config")


def _new_database(ws) -> None:
    """--rebuild: only for a database that SQLite (or its full-text index) finds damaged."""
    if ws.damage() is None:
        raise RagloopError(f"the workspace database {ws.db_path} is not damaged; --rebuild is "
                           f"for an unreadable one (to re-embed the vectors, use --repair)")
    aside = ws.set_aside()
    copied, failed = ws.carry_over(aside, skip=INDEX_TABLES)
    lost = f"; unreadable, left in it: {', '.join(failed)}" if failed else ""
    stderr.print(f"Moved the damaged database aside to {aside} (and indexes/ beside it); "
                 f"carried over: {', '.join(copied) or 'nothing'}{lost}. Indexing into a new "
                 f"database.", highlight=False, soft_wrap=True)


class _DocumentProgress:
    """A bar (or plain lines) for one huge document, in MB of its text, while it is chunked,
    embedded and committed; gone when it is done."""

    def __init__(self, progress):
        self.progress, self.tasks = progress, {}

    def __call__(self, path: str, done: int, total: int) -> None:
        task = self.tasks.get(path)
        if task is None:
            task = self.tasks[path] = self.progress.add_task(
                f"{Path(path).name} (MB)", total=round(total / 1e6, 1))
        self.progress.update(task, completed=round(done / 1e6, 1))
        if done >= total:
            self.progress.remove_task(self.tasks.pop(path))


@cli.command()
@click.argument("paths", nargs=-1)
@click.option("--glob", metavar="PATTERN", help="Only files whose name or relative path matches.")
@click.option("--filter", "filters", multiple=True, metavar="NAME",
              help="Data filter to apply to documents first; repeatable, applied in order.")
@click.option("--filter-option", "filter_options", multiple=True, metavar="NAME.KEY=VALUE",
              help="Option for a filter in the chain, repeatable: --filter-option near-dedup.threshold=0.9.")
@click.option("--prune", is_flag=True, help="Drop documents whose files were deleted.")
@click.option("--repair", is_flag=True, help="Re-embed every stored chunk into a fresh vector index.")
@click.option("--rebuild", is_flag=True, help="For a damaged workspace database: move it and "
              "its vector index aside, keep what can still be read of ratings and asks, and "
              "index PATHS into a new database.")
@click.option("--chunker", default=None, help="Chunker plugin (default: the index's, else "
              "tokens).")
@click.option("--embedder", default=None, help="Embedder plugin (default: the index's, "
              "else sentence-transformers).")
@click.option("--store", default=None, help="Vector store plugin (default: faiss).")
@options_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_workspace
def index(ws, paths, glob, filters, filter_options, prune, repair, rebuild, chunker, embedder,
          store, options, as_json):
    """Index files and folders for search and ask.

    Unchanged files are skipped (content hash); changed files replace their chunks.
    Plugin options go to a part: -o chunker.size=300 -o embedder.batch_size=64
    -o store.kind=flat. The index keeps its chunker settings; naming other ones re-chunks
    every indexed document.
    """
    if not paths and not repair:
        raise click.UsageError("give files or folders to index, or --repair")
    if rebuild and not paths:
        raise click.UsageError("--rebuild indexes the files and folders given: name them")
    opts = split_prefixed(options, PARTS)
    left_out: list[tuple[str, str]] = []
    files = discover(paths, glob, skipped=left_out)
    if rebuild:
        _new_database(ws)
    indexer = Indexer(ws, chunker=chunker, chunker_options=opts["chunker"], filters=filters,
                      filter_options=filter_options,
                      embedder=embedder, embedder_options=opts["embedder"], store=store,
                      store_options=opts["store"])
    indexer.report.skipped += left_out
    try:
        with progress_bar(as_json) as progress:
            task = progress.add_task("Embedding", total=None)
            embedded = lambda n: progress.advance(task, n)  # noqa: E731
            indexer.prepare(repair, progress=embedded, prune_roots=paths if prune else ())
            known = indexer.known()
            files_task = progress.add_task("Files", total=len(files))
            big = _DocumentProgress(progress)
            for path in files:
                indexer.add_file(path, known, progress=embedded, document_progress=big)
                progress.advance(files_task)
            # documents left half done by an interrupted run, wherever they are
            rest = indexer.unfinished({str(p) for p in files}, paths if prune else ())
            if rest:
                progress.update(files_task, total=len(files) + len(rest))
            for path in rest:
                indexer.add_file(path, known, progress=embedded, document_progress=big)
                progress.advance(files_task)
            indexer.flush(progress=embedded)
            if prune:
                indexer.prune(paths, {str(p) for p in files})
    except KeyboardInterrupt:
        stderr.print(f"Interrupted: {len(indexer.report.added) + len(indexer.report.updated)} "
                     f"files were indexed before the stop; run the same command to continue.")
        raise SystemExit(130)
    report = indexer.report
    if as_json:
        click.echo(json.dumps(report.__dict__, indent=2, default=str))
    else:
        click.echo("\n".join(_summary(report)))


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@pass_workspace
def remove(ws, paths):
    """Remove documents (files or whole folders) from the index."""
    targets = documents_under(ws, paths)
    indexer = Indexer(ws)
    indexer.remove_documents(targets)
    click.echo(f"Removed {len(targets)} document(s).")

