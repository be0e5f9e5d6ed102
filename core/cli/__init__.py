"""The `ragloop` command line. Each topic's commands live in their own module."""

from .app import cli
from . import ask_cmd, filter_cmd, index_cmd, info_cmd, plugins_cmd, prefs_cmd, rate_cmd  # noqa: F401  (they add commands)


def main() -> None:
    cli(prog_name="ragloop")
