"""JSON Lines loader: one Document per file, one record per line.

Each record's `text` field becomes a paragraph; records are separated by blank lines. A
record with a string `title` is preceded by a "# title" line, so the chunker starts a new
section there: chunks never mix titled records, and each gets its title as heading path
(an untitled record falls under the title before it, as a paragraph would).
The other fields are kept in `metadata["records"]`, with the record's line number and its
character span in the document text, so a chunk can be traced back to its record. A bad
line is a warning naming its line number; a file with no usable line is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from ragloop.core import Document, Loader, SkipFile, hookimpl
from ragloop.plugins.loaders.text import read_text

TEXT_FIELD = "text"
TITLE_FIELD = "title"
MAX_LINE_WARNINGS = 10


def _problem(line: str) -> tuple[dict | None, str | None]:
    """(record, None) for a usable line, else (None, why it is not)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(record, dict):
        return None, f"a JSON {type(record).__name__}, not an object"
    text = record.get(TEXT_FIELD)
    if not isinstance(text, str):
        return None, f'no string "{TEXT_FIELD}" field'
    if not text.strip():
        return None, f'empty "{TEXT_FIELD}" field'
    return record, None


class JsonlLoader(Loader):
    name = "jsonl"
    description = 'JSON Lines: each line\'s "text" field; other fields kept as metadata.'
    extensions = (".jsonl", ".ndjson")

    def load(self, path: Path) -> Document:
        doc = read_text(Path(path))
        raw, doc.text = doc.text, ""
        parts: list[str] = []
        records: list[dict] = []
        problems: list[str] = []
        offset = 0
        # split("\n"), not splitlines(): JSON strings may hold U+2028 and friends unescaped
        for number, line in enumerate(raw.split("\n"), 1):
            if not line.strip():
                continue
            record, problem = _problem(line)
            if problem:
                problems.append(f"line {number}: {problem}")
                continue
            title = record.get(TITLE_FIELD)
            if isinstance(title, str) and title.strip():
                heading = "# " + " ".join(title.split())
                parts.append(heading)
                offset += len(heading) + 2
            text = record.pop(TEXT_FIELD).strip()
            parts.append(text)
            records.append({"line": number, "start_char": offset, "end_char": offset + len(text),
                            "fields": record})
            offset += len(text) + 2
        doc.warnings += [f"{p}; skipped" for p in problems[:MAX_LINE_WARNINGS]]
        if len(problems) > MAX_LINE_WARNINGS:
            doc.warnings.append(f"{len(problems) - MAX_LINE_WARNINGS} more bad lines skipped")
        if problems and not records:
            raise SkipFile(f"no usable JSONL line ({len(problems)} bad; first: {problems[0]})")
        doc.text = "\n\n".join(parts)
        doc.metadata["records"] = records
        return doc


@hookimpl
def register_loaders(register):
    register(JsonlLoader)
