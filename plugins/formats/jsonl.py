"""JSON Lines rows: one JSON object a line, UTF-8. The default format: `prefs export` writes
it without --format (to stdout without --out), and a file no format recognizes is read as
JSONL, so a stray file gets a message about JSONL rather than "unknown format"."""

from __future__ import annotations

import json
from pathlib import Path

from ragloop.core import RagloopError, RowFormat, atomic_write_bytes, hookimpl

SUFFIXES = (".jsonl", ".ndjson", ".json")


class JsonlRows(RowFormat):
    name = "jsonl"
    description = "JSON lines: one row a line."
    noun = "a JSONL file"

    def recognizes(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in SUFFIXES

    def dumps(self, rows: list[dict]) -> bytes:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()

    def write(self, rows: list[dict], out: Path) -> None:
        atomic_write_bytes(out, self.dumps(rows))

    def read(self, path: Path) -> tuple[list[tuple[int, object]], str]:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise RagloopError(f"{path} is not UTF-8 text; expected JSONL")
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                rows.append((number, ValueError(f"not JSON ({exc.msg})")))
        return rows, "line"


@hookimpl
def register_row_formats(register):
    register(JsonlRows)
