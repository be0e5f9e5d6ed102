"""`ragloop search`. Its own module, apart from `index`, so that a search imports neither
the indexing code nor the progress display (it has no progress to show)."""

from __future__ import annotations

import json

import click

from ragloop.core.cli.app import cli, pass_workspace
from ragloop.core.config import split_prefixed
from ragloop.core.pipeline.search import FUSIONS, MODES, Searcher
from ragloop.core.pipeline.sections import EXPANSIONS
from ragloop.core.pipeline.vector_index import VectorIndex


@cli.command()
@click.argument("query")
@click.option("-k", default=5, show_default=True, help="Number of results.")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True,
              help="dense = vectors, bm25 = keywords, hybrid = both fused.")
@click.option("--where", multiple=True, metavar="path=GLOB", help="Only chunks of matching files.")
@click.option("--fusion", type=click.Choice(FUSIONS), default="weighted", show_default=True,
              help="How hybrid mode fuses the two rankings.")
@click.option("--rerank", metavar="NAME", help="Reranker plugin to reorder results (off by default).")
@click.option("--rerank-option", "rerank_options", multiple=True, metavar="KEY=VALUE",
              help="Option for the reranker, repeatable.")
@click.option("--expand", type=click.Choice(EXPANSIONS), default="chunk", show_default=True,
              help="section: return the section around each matched chunk (up to ~4,000 "
                   "characters), one hit per section.")
@click.option("-o", "--option", "options", multiple=True, metavar="embedder.KEY=VALUE",
              help="Embedder option over the index's recorded ones, repeatable: "
                   "-o embedder.trust_remote_code=true (never recorded) or "
                   "-o embedder.device=cpu.")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_workspace
def search(ws, query, k, mode, where, fusion, rerank, rerank_options, expand, options, as_json):
    """Search indexed passages (hybrid, dense or BM25).

    Shows each passage's source path, line range and score.
    """
    given = split_prefixed(options, ("embedder",))["embedder"]
    index = VectorIndex(ws, embedder_options=given) if given else None
    hits = Searcher(ws, index).search(query, k=k, mode=mode, where=where, fusion=fusion,
                                      rerank=rerank, rerank_options=rerank_options,
                                      expand=expand)
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in hits], indent=2))
        return
    if not hits:
        click.echo("No results.")
    for rank, hit in enumerate(hits, 1):
        heading = f"  ({hit.heading})" if hit.heading else ""
        click.echo(f"{rank}. {hit.source}  score {hit.score:.4f}{heading}")
        snippet = " ".join(hit.text.split())
        click.echo(f"   {snippet[:200]}{'...' if len(snippet) > 200 else ''}")
