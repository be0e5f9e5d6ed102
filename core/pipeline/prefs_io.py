"""Writing training rows (JSONL or a `datasets` folder) and importing them back.

Export writes all or nothing: JSONL through a temp file and os.replace, a `datasets` folder
saved into a temp folder and then swapped into place (`atomic_folder`). Import validates
every row before it touches the database, then writes everything in one transaction: a bad
row is reported with its line (or row) number and nothing is imported. Imported rows become
questions (origin "import"), candidates and comparisons (chosen as a, rejected as b) or
scores (KTO True -> 5, False -> 1; SFT -> 5), by rater "import", so that exporting them
again gives the same rows. Questions and candidates already present are reused, so
importing a file twice adds no rows to export.
"""

from __future__ import annotations

import json
from pathlib import Path

from ragloop.core.errors import RagloopError
from ragloop.core.ids import new_id
from ragloop.core.pipeline.prefs import IMPORT_RATER, question_hash
from ragloop.core.rows import ROW_FIELDS, row_kind
from ragloop.core.workspace import atomic_folder, atomic_write_bytes, utcnow, write_transaction


def to_jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _require_parent(out: Path) -> None:
    if not out.parent.is_dir():
        raise RagloopError(f"the folder {out.parent} does not exist; "
                           f"create it or choose another --out")


def write_jsonl(rows: list[dict], out: Path) -> None:
    if out.is_dir():
        raise RagloopError(f"{out} is a folder; give a file path with --out")
    _require_parent(out)
    atomic_write_bytes(out, to_jsonl(rows))


def _is_dataset_folder(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()


def write_hf(rows: list[dict], out: Path) -> None:
    replaceable = out.is_dir() and (_is_dataset_folder(out) or not any(out.iterdir()))
    if out.exists() and not replaceable:
        raise RagloopError(f"{out} exists and is not a datasets folder; choose another --out")
    _require_parent(out)
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar
    disable_progress_bar()
    with atomic_folder(out) as tmp:
        Dataset.from_list(rows).save_to_disk(str(tmp))


# ---- import -------------------------------------------------------------------------------

def read_rows(path: Path) -> tuple[list[tuple[int, object]], str]:
    """(number, parsed row) pairs and the word for a number ("line" or "row"); a JSON error
    is kept as the row so validation reports it in order."""
    if path.is_dir():
        if not _is_dataset_folder(path):
            raise RagloopError(f"{path} is a folder but not a datasets folder saved by "
                               f"`ragloop prefs export --format hf`")
        from datasets import DatasetDict, load_from_disk
        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            if len(ds) != 1:
                raise RagloopError(f"{path} holds splits {', '.join(ds)}; import one split")
            ds = next(iter(ds.values()))
        return list(enumerate(ds.to_list(), 1)), "row"
    if not path.exists():
        raise RagloopError(f"no such file: {path}")
    if not path.is_file():      # a FIFO or device would block or never end
        raise RagloopError(f"{path} is not a regular file (a FIFO, socket or device?); "
                           f"give a JSONL file or a folder written by `prefs export --format hf`")
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
