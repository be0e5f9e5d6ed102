"""The `ragloop` command line. Each topic's commands live in their own module, imported when
one of its commands runs (`BUILTIN_COMMANDS` in core/cli/app.py), so a command starts without
importing the others' code."""

from ragloop.core.cli.app import cli


def main() -> None:
    cli(prog_name="ragloop")
