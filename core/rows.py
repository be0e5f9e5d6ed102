"""The record schema: documents and the three kinds of training row, their fields, and how
a record's kind is told from its fields.

Training rows are what `prefs export` writes, `prefs import` and `train --data` read,
trainers train on and filters judge:

- ``pairs``: prompt/chosen/rejected, for DPO-style methods;
- ``kto``: prompt/completion/label (True = desirable);
- ``sft``: prompt/completion.

Data filters also run over ``documents`` ({"path", "text", "metadata"}) at index time, so
the filters' record kinds are the row kinds plus documents. Rows may carry more keys
(question, rating ids); only `ROW_FIELDS` are required and trained on. The prompt is the
rendered chat prompt, retrieved passages included, as a plain string.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RecordKind:
    fields: tuple[str, ...]     # what a record holds: for rows, what import requires and
                                # trainers read
    texts: tuple[str, ...]      # "the text" of a record, for dedup and redaction
    answers: tuple[str, ...]    # what it says, for length and quality (a prompt is mostly
                                # retrieved passages, not the answer)
    one: str                    # a record counted in a filter report: "1 pair", "2 rows"
    many: str
    rows: str                   # rows named in training messages: "the data holds kto rows"


SCHEMA = {
    "documents": RecordKind(("path", "text", "metadata"), ("text",), ("text",),
                            "document", "documents", "documents"),
    "pairs": RecordKind(("prompt", "chosen", "rejected"), ("prompt", "chosen", "rejected"),
                        ("chosen", "rejected"), "pair", "pairs", "pairs"),
    # A filter report's header already names the kind ("Kto: kept 3 of 4."), so its
    # counts say "rows"; training messages compare kinds, so they name it.
    "kto": RecordKind(("prompt", "completion", "label"), ("prompt", "completion"),
                      ("completion",), "row", "rows", "kto rows"),
    "sft": RecordKind(("prompt", "completion"), ("prompt", "completion"), ("completion",),
                      "row", "rows", "sft rows"),
}

RECORD_KINDS = tuple(SCHEMA)                                    # what filters run over
ROW_KINDS = tuple(k for k in SCHEMA if k != "documents")        # what training takes
ROW_FIELDS = {k: SCHEMA[k].fields for k in ROW_KINDS}
TEXT_FIELDS = {k: v.texts for k, v in SCHEMA.items()}
ANSWER_FIELDS = {k: v.answers for k, v in SCHEMA.items()}
ROW_NOUNS = {k: SCHEMA[k].rows for k in ROW_KINDS}


def row_kind(row: dict) -> str | None:
    """pairs, kto or sft, told apart by a row's fields; None for none of them."""
    if "chosen" in row or "rejected" in row:
        return "pairs"
    if "label" in row:
        return "kto"
    if "completion" in row:
        return "sft"
    return None


def record_kind(record: dict) -> str:
    """The kind of any record: a training row's, else documents (as `prefs import` tells)."""
    return row_kind(record) or "documents"


def joined(record: dict, fields=None) -> str:
    """The record's text fields (`fields`, else TEXT_FIELDS of its kind) joined by newlines."""
    fields = fields or TEXT_FIELDS[record_kind(record)]
    return "\n".join(str(record.get(k) or "") for k in fields)


def noun(kind: str, n: int) -> str:
    """`n` records of `kind` as a filter report counts them: "1 pair", "3 documents"."""
    entry = SCHEMA.get(kind)
    singular, plural = (entry.one, entry.many) if entry else ("row", "rows")
    return f"{n} {singular if n == 1 else plural}"


def describe(record: dict) -> str:
    """A short name for a record in reasons and examples: its path, else its question."""
    if record.get("path"):
        try:
            return str(Path(record["path"]).relative_to(Path.cwd()))
        except ValueError:
            return str(record["path"])
    text = " ".join(str(record.get("question") or record.get("prompt") or "").split())
    return repr(text if len(text) <= 60 else text[:57] + "...")
