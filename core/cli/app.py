"""The `ragloop` click group: global options, error handling, and commands from plugins."""

from __future__ import annotations

import sys
from importlib import import_module

import click

from ragloop.core.errors import RagloopError
from ragloop.core.quiet import no_library_bars, quiet_library_logs
from ragloop.core.workspace import Workspace


# Each built-in command's module, named as a string (as core/plugins.py names the built-in
# plugins) and imported when its command runs, or when a listing needs them all: so
# `ragloop search` does not import the training, rating and evaluation code.
BUILTIN_COMMANDS = {
    "adapters": "adapters_cmd", "ask": "ask_cmd", "logs": "ask_cmd", "demo": "demo_cmd",
    "eval": "eval_cmd", "index": "index_cmd", "remove": "index_cmd", "search": "search_cmd",
    "info": "info_cmd", "plugins": "plugins_cmd", "install": "plugins_cmd",
    "uninstall": "plugins_cmd", "prefs": "prefs_cmd", "rate": "rate_cmd", "train": "train_cmd",
    "store": "store_cmd", "serve": "serve_cmd",
}


def load_builtin_commands(names=None) -> None:
    """Import the modules of the built-in commands `names` (default: all of them)."""
    for name in BUILTIN_COMMANDS if names is None else names:
        if name in BUILTIN_COMMANDS:
            import_module(f"ragloop.core.cli.{BUILTIN_COMMANDS[name]}")


class RagloopGroup(click.Group):
    """Adds plugin commands (the register_commands hook) to the built-in ones, and turns
    unexpected exceptions into one line unless --debug is given."""

    def _plugin_commands(self) -> dict[str, click.Command]:
        from ragloop.core.plugins import call_each
        extra = click.Group()
        call_each("register_commands", lambda plugin: {"cli": extra})
        return {n: c for n, c in extra.commands.items()
                if n not in self.commands and n not in BUILTIN_COMMANDS}

    def list_commands(self, ctx):
        load_builtin_commands()
        return sorted(set(self.commands) | set(self._plugin_commands()))

    def get_command(self, ctx, name):
        if name not in self.commands:
            load_builtin_commands([name])
        return self.commands.get(name) or self._plugin_commands().get(name)

    def resolve_command(self, ctx, args):
        name = click.utils.make_str(args[0]) if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            available = ", ".join(self.list_commands(ctx))
            raise RagloopError(f"unknown command {name!r}; available: {available}")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:      # the reader left (`| head`): click's main stops quietly
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            text = " ".join(str(exc).split())[:500]
            raise RagloopError(f"{type(exc).__name__}: {text} "
                               f"(run `ragloop --debug ...` for the traceback)") from None


@click.group(cls=RagloopGroup, context_settings={"help_option_names": ["-h", "--help"],
                                               "max_content_width": 100})
@click.version_option(package_name="ragloop", prog_name="ragloop")
@click.option("--home", type=click.Path(file_okay=False, path_type=str), envvar="RAGLOOP_HOME",
              help="Workspace folder (default: $RAGLOOP_HOME, else the user data folder).")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx, home, debug):
    """ragloop: answer questions from your documents with citations, rate the answers,
    and train a LoRA adapter on your ratings."""
    quiet_library_logs()
    no_library_bars()
    _sqlite_utils_without_pandas()
    ctx.obj = Workspace(home)
    ctx.call_on_close(ctx.obj.close)


def _sqlite_utils_without_pandas() -> None:
    """sqlite-utils imports pandas whenever it is installed (about a second of every command
    here) only to map pandas Timestamp values to a column type, and ragloop never stores
    one. Hidden while sqlite-utils is imported; importing pandas later works as usual."""
    if "sqlite_utils" in sys.modules or "pandas" in sys.modules:
        return
    sys.modules["pandas"] = None       # `import pandas` raises ImportError meanwhile
    try:
        import sqlite_utils  # noqa: F401
    finally:
        del sys.modules["pandas"]


pass_workspace = click.pass_obj


def options_option(f):
    """`-o key=value`, repeatable: options for the plugin a command uses."""
    return click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
                        help="Plugin option, repeatable; unknown keys list the valid ones.")(f)
