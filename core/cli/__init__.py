"""The `ragloop` command line. Each topic's commands live in their own module."""

from .app import cli
from . import info_cmd, plugins_cmd  # noqa: F401  (they add their commands to `cli`)


def main() -> None:
    cli(prog_name="ragloop")
