"""Where the questions of a rating session come from: a file, the logged asks, or the user
typing them. Each source yields `Question`s; the same question is recognized by the hash of
its normalized text, whatever its source. A JSONL questions file may also give each question
a reference answer (`answer`) and the document it comes from (`source`), which the
`correctness` evaluator scores answers against."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ragloop.core.errors import RagloopError

# Longer than any real question; a longer line is far more likely a pasted document or a
# file that is not a questions file at all.
MAX_QUESTION_CHARS = 2000
# The fields a line of a JSONL questions file may hold; any other is refused by name, so a
# misspelt "answer" does not silently leave a question without its reference.
QUESTION_FIELDS = ("question", "answer", "source")


@dataclass(frozen=True)
class Question:
    text: str
    origin: str                  # file | logs | typed
    origin_ref: str | None = None
    answer: str | None = None    # a reference answer, from a JSONL file's "answer"
    source: str | None = None    # the document the reference comes from ("source")

    @property
    def hash(self) -> str:
        return question_hash(self.text)


def normalize(text: str) -> str:
    return " ".join(text.split())


def question_hash(text: str) -> str:
    """sha256 of the whitespace-normalized text: the key `questions.text_hash` is unique on."""
    return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()


def _unique(questions: Iterator[Question]) -> list[Question]:
    seen: set[str] = set()
    out = []
    for q in questions:
        if q.hash not in seen:
            seen.add(q.hash)
            out.append(q)
    return out


def from_file(path: str | Path) -> list[Question]:
    """One question per line, or JSONL with a "question" field (detected from the first
    non-blank line). Blank lines are skipped, repeats dropped; a bad line is an error
    naming its number, so a session never starts on half a file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise RagloopError(f"{path} is not UTF-8 text; give a file with one question per line")
    except OSError as exc:
        raise RagloopError(f"cannot read {path} ({exc.strerror})")
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise RagloopError(f"{path} holds no questions; write one per line, or JSONL with a "
                           f'"question" field')
    jsonl = first.lstrip().startswith("{")

    def parse() -> Iterator[Question]:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            record = _jsonl_question(path, number, line) if jsonl else {"question": line}
            text = normalize(record["question"])
            if len(text) > MAX_QUESTION_CHARS:
                raise RagloopError(f"{path} line {number} is a question of {len(text)} "
                                   f"characters; the limit is {MAX_QUESTION_CHARS}")
            yield Question(text, "file", f"{path}:{number}", record.get("answer"),
                           record.get("source"))

    return _unique(parse())


def _jsonl_question(path: Path, number: int, line: str) -> dict:
    """The line's fields: "question", and "answer" and "source" (stripped) when given."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RagloopError(f"{path} line {number} is not JSON ({exc.msg}); the file is read "
                           f"as JSONL because its first line is a JSON object")
    text = record.get("question") if isinstance(record, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise RagloopError(f'{path} line {number} has no "question" text')
    unknown = sorted(set(record) - set(QUESTION_FIELDS))
    if unknown:
        raise RagloopError(f"{path} line {number} has unknown field {unknown[0]!r}; a line may "
                           f"hold {', '.join(QUESTION_FIELDS)}")
    out = {"question": text}
    for name in QUESTION_FIELDS[1:]:
        value = record.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise RagloopError(f"{path} line {number}: field {name!r} must be non-empty text "
                               f"when given")
        out[name] = value.strip()
    return out


def from_logs(ws) -> list[Question]:
    """The questions of logged asks, oldest first; over-long ones are left out."""
    rows = ws.db.execute("select id, question from asks order by created_at, id").fetchall()
    questions = _unique(Question(normalize(text), "logs", ask_id) for ask_id, text in rows
                        if text and text.strip() and len(normalize(text)) <= MAX_QUESTION_CHARS)
    if not questions:
        raise RagloopError("no asks are logged yet; ask with `ragloop ask \"...\"` first, or "
                           "give --questions FILE")
    return questions


def read_questions(ws, path: str | Path | None = None) -> list[Question]:
    """The questions of the file `path` (from_file), else of the logged asks (from_logs)."""
    return from_file(path) if path is not None else from_logs(ws)


def typed(read_line: Callable[[], str | None], say: Callable[[str], None]) -> Iterator[Question]:
    """Questions typed at a prompt until an empty line or end of input."""
    while True:
        text = read_line()
        if text is None or not text.strip():
            return
        text = normalize(text)
        if len(text) > MAX_QUESTION_CHARS:
            say(f"That question has {len(text)} characters; the limit is {MAX_QUESTION_CHARS}.")
            continue
        yield Question(text, "typed")
