"""Writing training rows to a file or folder and importing them back, in the row formats
that plugins register (`register_row_formats`; built-in: `jsonl`, and `hf`, a `datasets`
folder).

Export writes all or nothing, through the format's `write` (a temp file or folder swapped
into place); the checks on --out that every format needs are made here first. Import reads
a path with the first format that recognizes it (a regular file none recognizes is read as
JSONL, which says what is wrong with it), validates every row before it touches the
database, then writes everything in one transaction: a bad row is reported with its line
(or row) number and nothing is imported. Imported rows become questions (origin "import"),
candidates and comparisons (chosen as a, rejected as b) or scores (KTO True -> 5, False ->
1; SFT -> 5), by rater "import", so that exporting them again gives the same rows.
Questions and candidates already present are reused, so importing a file twice adds no rows
to export.
"""

from __future__ import annotations

import json
from pathlib import Path

from ragloop.core import registry
from ragloop.core.components import RowFormat
from ragloop.core.errors import RagloopError
from ragloop.core.ids import new_id
from ragloop.core.pipeline.prefs import IMPORT_RATER, question_hash
from ragloop.core.rows import ROW_FIELDS, row_kind
from ragloop.core.workspace import utcnow, write_transaction

# What export writes without --format, and how import reads a file no format recognizes.
DEFAULT_FORMAT = "jsonl"


def row_formats() -> list[RowFormat]:
    """Every registered row format, built, in registration order (built-ins first)."""
    return [entry.cls() for entry in registry.entries("row format").values()]


def row_format(name: str) -> RowFormat:
    return registry.get_row_format(name)()


def _either(phrases: list[str]) -> str:
    return " or ".join(filter(None, [", ".join(phrases[:-1]), phrases[-1]]))


# ---- export -------------------------------------------------------------------------------

def check_out(fmt: RowFormat, out: Path | None) -> None:
    """Refuse, before any work, a format that writes a folder without --out."""
    if out is None and fmt.writes_folder:
        raise RagloopError(f"--format {fmt.name} writes a folder: give it with --out")


def write_rows(fmt: RowFormat, rows: list[dict], out: Path) -> None:
    """Write `rows` to `out` in `fmt`, all or nothing. A folder format replaces only an empty
    folder or one in its own format; a file format never writes over a folder."""
    if fmt.writes_folder:
        replaceable = out.is_dir() and (fmt.recognizes(out) or not any(out.iterdir()))
        if out.exists() and not replaceable:
            raise RagloopError(f"{out} exists and is not {fmt.noun}; choose another --out")
    elif out.is_dir():
        raise RagloopError(f"{out} is a folder; give a file path with --out")
    if not out.parent.is_dir():
        raise RagloopError(f"the folder {out.parent} does not exist; "
                           f"create it or choose another --out")
    fmt.write(rows, out)


# ---- import -------------------------------------------------------------------------------

def read_rows(path: Path) -> tuple[list[tuple[int, object]], str]:
    """(number, parsed row) pairs and the word for a number ("line" or "row"), read by the
    format that recognizes `path`; a row that cannot be parsed is kept as a ValueError so
    validation reports it in order."""
    formats = row_formats()
    folders = [f for f in formats if f.writes_folder]
    if path.is_dir():
        found = next((f for f in formats if f.recognizes(path)), None)
        if found is None:
            if not folders:
                raise RagloopError(f"{path} is a folder; give "
                                   f"{_either([f.noun for f in formats])}")
            raise RagloopError(f"{path} is a folder but not " + _either(
                [f"{f.noun} saved by `ragloop prefs export --format {f.name}`" for f in folders]))
        return found.read(path)
    if not path.exists():
        raise RagloopError(f"no such file: {path}")
    if not path.is_file():      # a FIFO or device would block or never end
        wanted = [f.noun for f in formats if not f.writes_folder] + [
            f"a folder written by `prefs export --format {f.name}`" for f in folders]
        raise RagloopError(f"{path} is not a regular file (a FIFO, socket or device?); "
                           f"give {_either(wanted)}")
    found = next((f for f in formats if not f.writes_folder and f.recognizes(path)), None)
    return (found or row_format(DEFAULT_FORMAT)).read(path)


def _problem(row, kind: str | None) -> str | None:
    if isinstance(row, ValueError):
        return str(row)
    if not isinstance(row, dict):
        return "not a JSON object"
    if row_kind(row) is None:
        shapes = [f"{'/'.join(fields)} ({name})" for name, fields in ROW_FIELDS.items()]
        return f"expected fields {', '.join(shapes[:-1])} or {shapes[-1]}"
    if row_kind(row) != kind:
        return f"a {row_kind(row)} row in a {kind} file"
    for name in ROW_FIELDS[kind]:
        value = row.get(name)
        if name == "label":
            if not isinstance(value, bool):
                return "field 'label' must be true or false"
        elif value is None:
            return f"field {name!r} is missing"
        elif not isinstance(value, str):
            return f"field {name!r} must be text"
        elif not value.strip():
            return f"field {name!r} is empty"
    question = row.get("question")
    if question is not None and not (isinstance(question, str) and question.strip()):
        return "field 'question' must be non-empty text when given"
    # A reference answer and its document, as a questions file gives them; exported kto and
    # sft rows use "source" for what decided their label ("score" or "choice"), so any text.
    answer = row.get("answer")
    if answer is not None and not (isinstance(answer, str) and answer.strip()):
        return "field 'answer' (a reference answer) must be non-empty text when given"
    source = row.get("source")
    if source is not None and not (isinstance(source, str) and source.strip()):
        return "field 'source' must be non-empty text when given"
    if kind == "pairs" and row["chosen"] == row["rejected"]:
        return "chosen and rejected are the same text"
    return None


def validate(rows, word: str, path: Path) -> str:
    """The file's kind, or a RagloopError naming the first bad line and how many there are."""
    if not rows:
        raise RagloopError(f"{path} holds no rows")
    first = rows[0][1]
    kind = row_kind(first) if isinstance(first, dict) else None
    bad = [(n, p) for n, row in rows if (p := _problem(row, kind))]
    if bad:
        more = f" ({len(bad)} bad {word}s in all)" if len(bad) > 1 else ""
        raise RagloopError(f"{path} {word} {bad[0][0]}: {bad[0][1]}; nothing imported{more}")
    return kind


def import_file(ws, path, rater_id: str | None = None) -> dict:
    path = Path(path)
    rows, word = read_rows(path)
    kind = validate(rows, word, path)
    rater_id = rater_id or IMPORT_RATER
    db, now, session = ws.db, utcnow(), new_id()
    counts = {"kind": kind, "rows": len(rows), "questions": 0, "candidates": 0}
    questions, candidates = {}, {}

    def question(row) -> str:
        text = (row.get("question") or row["prompt"]).strip()
        if text not in questions:
            found = db.execute("select id from questions where text = ? or text_hash = ?",
                               [text, question_hash(text)]).fetchone()
            if found is None:
                found = (new_id(),)
                db["questions"].insert({"id": found[0], "text": text,
                                        "text_hash": question_hash(text), "origin": "import",
                                        "origin_ref": str(path), "created_at": now})
                counts["questions"] += 1
            questions[text] = found[0]
        return questions[text]

    def candidate(qid, prompt, text, number) -> str:
        key = (qid, prompt, text)
        if key not in candidates:
            found = db.execute("select id from candidates where question_id = ? and prompt = ? "
                               "and text = ? order by created_at, rowid limit 1", key).fetchone()
            if found is None:
                found = (new_id(),)
                params = {"imported_from": str(path), word: number, "session": session}
                db["candidates"].insert({
                    "id": found[0], "question_id": qid, "text": text, "prompt": prompt,
                    "messages_json": "[]", "chunk_ids_json": "[]", "scores_json": "[]",
                    "params_json": json.dumps(params), "created_at": now})
                counts["candidates"] += 1
            candidates[key] = found[0]
        return candidates[key]

    with write_transaction(db):
        for number, row in rows:
            qid = question(row)
            rated = {"rater": IMPORT_RATER, "rater_id": rater_id, "created_at": now}
            if kind == "pairs":
                chosen = candidate(qid, row["prompt"], row["chosen"], number)
                rejected = candidate(qid, row["prompt"], row["rejected"], number)
                db["comparisons"].insert({
                    "id": new_id(), "question_id": qid, "candidate_a": chosen,
                    "candidate_b": rejected, "left_candidate": chosen, "choice": "a",
                    "session": session, "seconds": None, **rated})
            else:
                cid = candidate(qid, row["prompt"], row["completion"], number)
                score = 5 if kind == "sft" or row["label"] else 1
                db["scores"].insert({"id": new_id(), "comparison_id": None, "candidate_id": cid,
                                     "score": score, **rated})
    return counts
