"""The `ragloop` command line. Each topic's commands live in their own module."""

from ragloop.core.cli import (  # noqa: F401  (each adds its commands to `cli`)
    adapters_cmd,
    ask_cmd,
    demo_cmd,
    eval_cmd,
    index_cmd,
    info_cmd,
    plugins_cmd,
    prefs_cmd,
    rate_cmd,
    train_cmd,
)
from ragloop.core.cli.app import cli


def main() -> None:
    cli(prog_name="ragloop")
