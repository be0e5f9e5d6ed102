"""`ragloop store info | copy`: where the vectors live, and moving them to another store
(FAISS in the workspace folder, PostgreSQL with pgvector) without re-embedding."""

from __future__ import annotations

import click

from ragloop.core import registry
from ragloop.core.cli.app import cli, options_option, pass_workspace
from ragloop.core.cli.progress import progress_bar
from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.vector_index import VectorIndex, recorded_options
from ragloop.core.workspace import atomic_folder, write_transaction

BATCH = 2048


def _bare(options) -> list[str]:
    """`store.key=value` or `key=value`: both mean the target store's option."""
    return [o[len("store."):] if o.startswith("store.") else o for o in options]


def _indexed(ws) -> VectorIndex:
    index = VectorIndex(ws)
    if not index.state:
        raise RagloopError("nothing is indexed yet; run `ragloop index PATH` first (a new "
                           "workspace reaches a shared store with `ragloop store copy`)")
    return index


def copy_index(ws, to: str, options=(), progress=None) -> dict:
    """Copy the index's vectors (and, for a store that holds text, the chunk rows) into
    store `to`, then make it the workspace's store. A failure leaves the old one in use:
    a file store is written in a new folder swapped in at the end, a database store in one
    transaction committed as the workspace records the change."""
    index = VectorIndex(ws)
    state = index.state
    cls = registry.get_store(to)
    options = _bare(options)
    config = build_config(cls.Config, options, to)
    if state and state["store"] == to and sorted(options) == sorted(
            recorded_options(state["store_options_json"])):
        raise RagloopError(f"the index is already in the {to} store with these options")
    ids, source = [], None
    if state:
        index.ensure_consistent()
        source = index.store
        ids = sorted(int(i) for i in source.ids().tolist())
    dimension = state["dimension"] if state else index.embedder.dimension
    embedder_id = state["embedder_id"] if state else index.embedder.id

    def fill(target):
        target.clear()
        target.bind(embedder_id)
        for start in range(0, len(ids), BATCH):
            part = ids[start:start + BATCH]
            target.add(part, source.vectors(part))
            if progress:
                progress(len(part))

    if cls.holds_text:
        target = cls(config, index.directory, dimension, workspace=ws)
        fill(target)
    else:
        index.directory.parent.mkdir(parents=True, exist_ok=True)
        with atomic_folder(index.directory) as tmp:
            staged = cls(config, tmp, dimension, workspace=ws)
            fill(staged)
            staged.save()
        target = cls(config, index.directory, dimension, workspace=ws)
    was = state["store"] if state else None
    index.store_name, index.store_cls, index.store_options = to, cls, options
    index._store = target
    with write_transaction(ws.db):
        index.record()
    return {"from": was, "to": to, "vectors": len(ids)}


@cli.group()
def store():
    """Where the index's vectors live: show it, or copy them to another store."""


@store.command("info")
@pass_workspace
def info(ws):
    """Show the index's store, its options (no password) and what it holds."""
    index = _indexed(ws)
    opts = " ".join(recorded_options(index.state["store_options_json"]))
    click.echo(f"Store: {index.store_name}{' (' + opts + ')' if opts else ''}")
    click.echo(f"Vectors of this workspace: {len(index.store)}")
    for key, value in index.store.describe().items():
        click.echo(f"{key[:1].upper() + key[1:]}: {value}")


@store.command("copy")
@click.option("--to", "to", required=True, metavar="STORE",
              help="The store to copy into: faiss or pgvector (any registered store).")
@options_option
@pass_workspace
def copy(ws, to, options):
    """Copy the index's vectors into another store and switch the workspace to it; nothing
    is re-embedded. Options are the target's: -o store.url=postgresql://USER@HOST/DB
    -o store.table=NAME (a password in the URL is used, never recorded). The old store is
    left as it was. In a workspace with nothing indexed, this joins a shared store."""
    with progress_bar() as progress:
        task = progress.add_task("Copying vectors", total=None)
        done = copy_index(ws, to, options, progress=lambda n: progress.advance(task, n))
    click.echo(f"Copied {done['vectors']} vectors from {done['from'] or 'nothing'} to "
               f"{done['to']}; the workspace now uses {done['to']}.")
