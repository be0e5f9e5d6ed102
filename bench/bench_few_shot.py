"""Few-shot against the default prompt on held-out questions, with the packaged models.

examples/questions.jsonl is split by question, with a fixed seed, into a "rated" half and a
held-out half. The rated half gets ratings built from its reference answers: for each
question, the passages `ask` would retrieve and, as the answer a person scored 5, the
reference answer citing the first of those passages from the reference's source document
(no citation when none is). Then

    ragloop eval --prompt few-shot --baseline-prompt default --questions HELD.jsonl \
        --evaluators correctness,winrate

answers each held-out question twice with the packaged SmolLM2 (greedy, same passages) and
reports reference containment, token F1 and source citation of both, with the paired
bootstrap interval on few-shot − default, and the judge's win rate of few-shot.

    nice -n 10 .venv/bin/python bench/bench_few_shot.py [--held 12] [--max-new-tokens 32]

Two greedy answers per held-out question are what take time: on a quiet 2-core CPU about
two seconds per answer; on a busy one, minutes. Raise --held when the machine allows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from _common import CORPUS, QUESTIONS, REPO, finish, say, temp_workspace

from ragloop.core.ids import new_id
from ragloop.core.pipeline.rating_questions import question_hash
from ragloop.core.pipeline.search import Searcher
from ragloop.core.workspace import utcnow

RAGLOOP = str(Path(sys.executable).with_name("ragloop"))


def ragloop(home: Path, *args) -> str:
    env = {**os.environ, "RAGLOOP_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([RAGLOOP, *map(str, args)], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"ragloop {' '.join(map(str, args))} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def split(seed: int) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    half = len(rows) // 2
    return rows[:half], rows[half:]


def rate_with_references(ws, rows: list[dict], k: int) -> int:
    """One answer per question, built from its reference and scored 5; returns how many cite
    a passage from the reference's source."""
    searcher, db, citing = Searcher(ws), ws.db, 0
    for row in rows:
        hits = searcher.search(row["question"], k=k)
        source = row.get("source") or ""
        numbers = [n for n, h in enumerate(hits, 1) if source and h.path.endswith(source)]
        answer = row["answer"] + (f" [{numbers[0]}]" if numbers else "")
        citing += bool(numbers)
        qid, cid, now = new_id(), new_id(), utcnow()
        db["questions"].insert({"id": qid, "text": row["question"],
                                "text_hash": question_hash(row["question"]),
                                "origin": "import", "origin_ref": "bench", "created_at": now})
        db["candidates"].insert({
            "id": cid, "question_id": qid, "text": answer, "prompt": "", "messages_json": "[]",
            "chunk_ids_json": json.dumps([h.chunk_id for h in hits]),
            "scores_json": json.dumps([h.score for h in hits]), "params_json": "{}",
            "created_at": now})
        db["scores"].insert({"id": new_id(), "comparison_id": None, "candidate_id": cid,
                             "score": 5, "rater": "reference", "rater_id": "reference",
                             "created_at": now})
    db.conn.commit()
    return citing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held", type=int, default=12, help="Held-out questions evaluated.")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--k", type=int, default=2, help="Examples the few-shot prompt shows.")
    parser.add_argument("--seed", type=int, default=13, help="Seed of the question split.")
    parser.add_argument("--out", type=Path, help="Save the numbers as JSON here.")
    args = parser.parse_args()

    ws = temp_workspace()
    home = Path(ws.home)
    report = {"seed": args.seed, "max_new_tokens": args.max_new_tokens, "k": args.k}
    say(f"indexing {CORPUS.relative_to(REPO)} into {home}")
    ragloop(home, "index", CORPUS)
    rated, held = split(args.seed)
    held = held[:args.held]
    report["citing"] = rate_with_references(ws, rated, 4)
    report.update(rated=len(rated), held=len(held))
    say(f"{len(rated)} rated questions ({report['citing']} answers cite their source); "
        f"evaluating {len(held)} held-out questions")
    held_file = home / "held.jsonl"
    held_file.write_text("".join(json.dumps(r) + "\n" for r in held))
    started = time.perf_counter()
    out = ragloop(home, "eval", "--prompt", "few-shot", "--baseline-prompt", "default",
                  "--questions", held_file, "--evaluators", "correctness,winrate", "-n", 0,
                  "--max-new-tokens", args.max_new_tokens, "-o", f"few-shot.k={args.k}",
                  "--json")
    report["eval_seconds"] = round(time.perf_counter() - started, 1)
    record = json.loads(out)
    report["correctness"] = record["evaluators"]["correctness"]["metrics"]
    report["winrate"] = record["evaluators"]["winrate"]["metrics"]
    c, w = report["correctness"], report["winrate"]
    for name in ("containment", "f1", "cites_source"):
        if f"{name}_base" in c:
            say(f"{name}: default {c[f'{name}_base']:.3f}, few-shot {c[f'{name}_adapter']:.3f}, "
                f"difference {c[f'{name}_diff']:+.3f} [{c[f'{name}_diff_low']:+.3f}, "
                f"{c[f'{name}_diff_high']:+.3f}]")
    say(f"judged win rate of few-shot {w['win_rate']:.3f} [{w['ci_low']:.3f}, "
        f"{w['ci_high']:.3f}] (win {w['win']}, tie {w['tie']}, both-bad {w['both_bad']}, "
        f"loss {w['loss']})")
    finish(report, args.out)


if __name__ == "__main__":
    main()
