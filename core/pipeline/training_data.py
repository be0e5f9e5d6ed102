"""Training rows for `ragloop train`: where they come from, their shape, the held-out split,
and the lineage (dataset hash and rating ids) that the run and the adapter record.

Rows come from the workspace's ratings (`prefs.build_rows`) or from a file or folder in a
row format (`--data`, read by the format plugin that recognizes it: `prefs_io.read_rows`).
Shapes are the row kinds of `core.rows`: "pairs" (prompt/chosen/rejected), "kto"
(prompt/completion/label) and "sft" (prompt/completion). Pairs can feed the other two
shapes (chosen -> True / rejected -> False for kto, chosen answers for sft); kto and sft rows
cannot become pairs.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.prefs import collect, dataset_hash
from ragloop.core.rows import ROW_FIELDS, ROW_NOUNS

BELOW = "below --min-agreement"     # core.prefs' reason for items the filter drops
# Without --method: the method that trains on each shape.
DEFAULT_METHOD = {"pairs": "dpo", "kto": "kto", "sft": "sft"}


@dataclass
class TrainingData:
    kind: str                       # the shape of `rows`
    rows: list[dict]                # every selected row, before the split
    source: str                     # "workspace" or the --data path
    train: list[dict] = field(default_factory=list)
    eval: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def hash(self) -> str:
        """sha256 of the rows' canonical JSON: the hash `ragloop prefs export` prints."""
        return dataset_hash(self.rows)

    def lineage(self) -> dict:
        return {"source": self.source, "kind": self.kind, "dataset_hash": self.hash,
                "rows": len(self.rows), "train_rows": len(self.train),
                "eval_rows": len(self.eval), **ids_of(self.train),
                **{f"eval_{k}": v for k, v in ids_of(self.eval).items()}}


def ids_of(rows: list[dict]) -> dict:
    """The rating ids behind rows: comparisons, and answers (candidates) where rows have them."""
    def unique(key):
        return list(dict.fromkeys(r[key] for r in rows if r.get(key)))
    ids = {"comparison_ids": unique("comparison_id")}
    candidates = unique("candidate_id") or unique("chosen_id") + unique("rejected_id")
    ids["candidate_ids"] = list(dict.fromkeys(candidates))
    return ids


def convert(rows: list[dict], source: str, target: str) -> list[dict]:
    """Rows of shape `source` as shape `target`; a RagloopError names what cannot be done."""
    if source == target:
        return rows
    if source != "pairs":
        raise RagloopError(f"this method trains on {ROW_NOUNS[target]} but the data holds "
                           f"{ROW_NOUNS[source]}; give pairs (prompt/chosen/rejected) or pick a "
                           f"method for {ROW_NOUNS[source]} (--method {DEFAULT_METHOD[source]})")
    keep = ("question", "question_id", "comparison_id", "rater_id")
    out = []
    for row in rows:
        meta = {k: row[k] for k in keep if k in row}
        answers = [(row["chosen"], True, row.get("chosen_id"))]
        if target == "kto":
            answers.append((row["rejected"], False, row.get("rejected_id")))
        for text, label, cid in answers:
            new = {"prompt": row["prompt"], "completion": text}
            if target == "kto":
                new["label"] = label
            out.append({**new, **meta, **({"candidate_id": cid} if cid else {})})
    return out


def _from_file(path: Path) -> tuple[str, list[dict]]:
    from ragloop.core.pipeline.prefs_io import read_rows, validate
    numbered, word = read_rows(path)
    kind = validate(numbered, word, path)
    return kind, [row for _, row in numbered]


def _from_workspace(ws, kind: str | None, rater, min_agreement) -> tuple[str, list[dict], list]:
    notes = []
    kinds = [kind] if kind else ["pairs", "kto"]     # pairs first: they say the most
    for k in kinds:
        built = collect(ws, k, rater, min_agreement)
        if built.rows:
            dropped = dict(built.dropped)
            if dropped.pop(BELOW, 0):
                # The count is of rated items; for kto rows an answer may keep its label
                # from elsewhere (a score), so say how many rows the filter really removed.
                left = len(collect(ws, k, rater).rows) - len(built.rows)
                if left > 0:
                    notes.append(f"{left} {ROW_NOUNS[k]} left out: {BELOW}")
            notes += [f"{n} left out: {reason}" for reason, n in sorted(dropped.items())]
            return k, built.rows, notes
    filters = " ".join(f for f in (f"--rater {rater}" if rater else "",
                                   f"--min-agreement {min_agreement}"
                                   if min_agreement is not None else "") if f)
    wanted = ROW_NOUNS[kind] if kind else "ratings"
    if filters and any(collect(ws, k).rows for k in kinds):
        raise RagloopError(f"no {wanted} match {filters}; `ragloop prefs stats` lists raters")
    raise RagloopError(f"no {wanted} to train on yet; run `ragloop rate` first "
                       f"(or train on a file with --data)")


def select(ws, data_kind: str | None, data: Path | None = None, rater: str | None = None,
           min_agreement: float | None = None) -> TrainingData:
    """The rows to train on. `data_kind` is the method's shape, or None to let the data
    decide (pairs if there are any, else kto rows)."""
    if data is not None:
        if rater or min_agreement is not None:
            raise RagloopError("--rater and --min-agreement filter the workspace's ratings; "
                               "they do not apply to --data")
        kind, rows = _from_file(Path(data))
        source, notes = str(data), []
    else:
        kind, rows, notes = _from_workspace(ws, data_kind, rater, min_agreement)
        source = "workspace"
    target = data_kind or kind
    if target != kind:
        notes.append(f"the {len(rows)} pairs give {ROW_NOUNS[target]}: " +
                     ("chosen answers as good, rejected as bad" if target == "kto"
                      else "their chosen answers"))
    return TrainingData(target, convert(rows, kind, target), source, notes=notes)


def split(data: TrainingData, fraction: float, seed: int) -> TrainingData:
    """Hold out `fraction` of the rows (chosen with `seed`) for evaluation; training rows
    keep their order."""
    n = len(data.rows)
    if not fraction:
        data.train, data.eval = list(data.rows), []
        return data
    held = int(n * fraction)
    noun = ROW_NOUNS[data.kind]
    if held < 1 or n - held < 1:
        need = max(2, math.ceil(1 / fraction - 1e-9))
        raise RagloopError(f"--eval-split {fraction} of {n} {noun} leaves {held} for evaluation "
                           f"and {n - held} for training; it needs at least {need} {noun} "
                           f"(rate more, raise --eval-split, or use --eval-split 0)")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held_out = set(order[:held])
    data.eval = [data.rows[i] for i in sorted(held_out)]
    data.train = [r for i, r in enumerate(data.rows) if i not in held_out]
    return data


def text_rows(rows: list[dict], kind: str) -> list[dict]:
    """Only the columns a trainer reads: plain strings (the prompt is already the rendered
    chat prompt), so no trainer applies the chat template a second time."""
    return [{c: r[c] for c in ROW_FIELDS[kind]} for r in rows]
