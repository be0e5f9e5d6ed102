"""ragloop-example-plugin: one data filter and one command, added through ragloop's hooks.

The `drop-marker` filter drops records whose text contains a marker such as "TODO";
`ragloop example-filter FILE.jsonl` runs any registered filter over a JSONL file and says
what it kept and why it removed the rest.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import click

from ragloop.core import Filter, FilterResult, RagloopError, build_config, hookimpl, registry


@dataclass
class DropMarkerConfig:
    marker: str = field(default="TODO", metadata={"help": "Drop records whose text contains this."})
    key: str = field(default="text", metadata={"help": "The record field to search."})
    ignore_case: bool = field(default=False, metadata={"help": "Match the marker in any case."})

    def __post_init__(self):
        # An empty marker is found in every text and would silently drop everything.
        if not self.marker:
            raise ValueError("marker must not be empty")


class DropMarker(Filter):
    name = "drop-marker"
    description = "Drops records whose text contains a marker such as TODO."
    applies_to = ("documents",)
    Config = DropMarkerConfig

    def apply(self, records):
        marker, key = self.config.marker, self.config.key
        if self.config.ignore_case:
            marker = marker.casefold()
        result = FilterResult(kept=[])
        for record in records:
            text = str(record.get(key, ""))
            if marker in (text.casefold() if self.config.ignore_case else text):
                result.removed.append((record, f"{key} contains {self.config.marker!r}"))
            else:
                result.kept.append(record)
        return result


def read_jsonl(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RagloopError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise RagloopError(f"{path}, line {number}: expected a JSON object")
        records.append(record)
    return records


@hookimpl
def register_filters(register):
    register(DropMarker)


@hookimpl
def register_commands(cli):
    @cli.command(name="example-filter")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("-f", "--filter", "filter_name", default="drop-marker", show_default=True,
                  metavar="NAME", help="Which registered filter to apply.")
    @click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
                  help="Filter option, repeatable, e.g. -o marker=FIXME.")
    @click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
                  help="Write the kept records here, as JSONL.")
    def example_filter(path, filter_name, options, output):
        """Apply a data filter to a JSONL file and count what it keeps."""
        cls = registry.get_filter(filter_name)
        config = build_config(cls.Config, options, owner=f"filter {filter_name!r}")
        records = read_jsonl(path)
        result = cls(config).apply(records)
        click.echo(f"Kept {len(result.kept)} of {len(records)} records.")
        for reason, count in Counter(reason for _, reason in result.removed).most_common():
            click.echo(f"Removed {count}: {reason}")
        if output:
            output.write_text("".join(json.dumps(r) + "\n" for r in result.kept), encoding="utf-8")
