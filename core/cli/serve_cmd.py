"""`ragloop serve` and `serve token add|list|remove`. FastAPI and uvicorn are imported only
when a server starts (core/serve/server.py)."""

from __future__ import annotations

import click

from ragloop.core.cli.app import cli, options_option, pass_workspace
from ragloop.core.cli.progress import status, stderr
from ragloop.core.pipeline.ask import DEFAULT_GENERATOR


@cli.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but this machine needs --token or rater "
                   "tokens.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free one).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Processes, each with its own copy of the models.")
@click.option("--adapter", metavar="NAME", help="Answer with this adapter; default: the one "
              "chosen with `ragloop adapters use`, re-read on every request.")
@click.option("--ab", multiple=True, metavar="NAME:SHARE", help="Split users between adapters "
              "(repeat; `base` = no adapter), e.g. --ab base:0.5 --ab mine:0.5.")
@click.option("--token", envvar="RAGLOOP_SERVE_TOKEN", metavar="T", help="Require "
              "`Authorization: Bearer T` on /v1 requests (also $RAGLOOP_SERVE_TOKEN).")
@click.option("--cors", multiple=True, metavar="ORIGIN", help="Allow browser requests from "
              "this origin (repeat); off by default.")
@click.option("--generator", default=DEFAULT_GENERATOR, show_default=True,
              help="Generator plugin.")
@click.option("--compress", metavar="METHOD", help="Quantize the model as it loads, e.g. "
              "torchao-int8-dynamic.")
@click.option("--cache-size", default=256, show_default=True, type=click.IntRange(0),
              help="Greedy answers kept per worker for repeated questions (0: none).")
@options_option
@click.pass_context
def serve(ctx, host, port, workers, adapter, ab, token, cors, generator, compress, cache_size,
          options):
    """Serve answers, search and feedback over HTTP, with a web page at /.

    Feedback lands in the same tables as `ragloop rate`, so `prefs export` and `train` use
    it. The API is described at /openapi.json and in docs/serve.md.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ragloop.core.serve import server
    from ragloop.core.serve.engine import ServeSettings, parse_ab
    ws = ctx.obj
    if adapter and ab:
        raise click.UsageError("give --adapter or --ab, not both")
    settings = ServeSettings(home=str(ws.home), generator=generator,
                             generator_options=tuple(options), adapter=adapter,
                             ab=parse_ab(ab), compress=compress, cache_size=cache_size)
    server.check_exposure(ws, host, token)
    server._imports()
    sock = server.bind(host, port)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{sock.getsockname()[1]}"
    ws.close()         # each worker opens its own connections
    try:
        stderr.print(f"Serving on {where} (Ctrl-C stops)")
        server.run(settings, sock, workers=workers, token=token, cors=cors, loading=status)
    finally:
        sock.close()


@serve.group()
def token():
    """Rater tokens: each rater's feedback is attributed to their name."""


@token.command()
@click.argument("name")
@pass_workspace
def add(ws, name):
    """Make a token for rater NAME and print it (only its hash is kept)."""
    from ragloop.core.serve.auth import add_token
    click.echo(add_token(ws, name))
    stderr.print(f"Token for {name!r}: send it as `Authorization: Bearer TOKEN`; it is not "
                 f"shown again.")


@token.command(name="list")
@pass_workspace
def list_cmd(ws):
    """The raters that have tokens."""
    from ragloop.core.serve.auth import list_tokens
    rows = list_tokens(ws)
    if not rows:
        click.echo("No rater tokens; add one with `ragloop serve token add NAME`.")
    for row in rows:
        click.echo(f"{row['name']}  {row['created_at'][:19]}")


@token.command()
@click.argument("name")
@pass_workspace
def remove(ws, name):
    """Remove rater NAME's token (a running server refuses it within seconds)."""
    from ragloop.core.serve.auth import remove_token
    remove_token(ws, name)
    click.echo(f"Removed the token of {name!r}.")
