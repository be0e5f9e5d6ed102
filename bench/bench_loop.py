"""The whole feedback loop on examples/questions.jsonl, automatic ratings only: does it help?

The questions are split by question, with a fixed seed, into a training half and a held-out
half (bench_few_shot's split). Through the real CLI, in a throwaway workspace:

  index      the example corpus
  rate 1     the rater (`--rater`: the judge, or `reference`, which prefers the answer
             that contains the question's reference answer) rates the base model's
             candidates for each training question (`rate --candidates best-of-4` by
             default: best vs worst of four samples). Only the training half's references
             are ever handed to `rate`; the bench asserts that no held-out question is
             rated or trained on
  few-shot   `eval --prompt few-shot --baseline-prompt default` on the held-out half: the
             round-1 ratings as in-context examples, no training
  train 1    `train --method sft+dpo` on round 1's pairs -> adapter loop-1
  eval 1     loop-1 against base on the held-out half
  variant    with `--variant contained`: `train --method sft` on round 1's candidates that
             contain their question's reference (all N samples, not only the rated pairs)
             -> adapter loop-1c, evaluated as eval 1 is
  rate 2     loop-1 made the default; the rater rates its candidates for the same training
             questions (a second rater id, so nothing is skipped as rated)
  train 2    sft+dpo from base on both rounds' pairs (exported, joined) -> adapter loop-2
  eval 2     loop-2 against base on the held-out half (`--rounds 1` stops before rate 2)

Every eval reports held-out reference containment (and token F1) of both answers with a
paired bootstrap interval on the difference, and the judge's win rate against the baseline
with its interval. The evals' own comparisons get their own rater id, and training takes
only the rounds' rater ids, so no held-out question is ever trained on.

    nice -n 10 .venv/bin/python bench/bench_loop.py [--limit 16] [--held 16] [--steps 12] [--lr X]
        [--rater judge|reference] [--rounds 2] [--variant contained] [--generator NAME]

On a quiet 2-core CPU the defaults take about 20 minutes; `--limit`, `--held`, `--steps`,
`--rounds 1`, `--no-few-shot` and `--candidates sample` make it smaller. On a machine busy
with other jobs, run it with OMP_NUM_THREADS=1: two torch threads fighting for the cores
generated ten times slower there (docs/evaluation.md, "Measured: does the loop help?").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import CORPUS, finish, say, temp_workspace
from bench_few_shot import ragloop, split

from ragloop.core import contains_reference
from ragloop.core.pipeline.rating_questions import question_hash
from ragloop.core.workspace import Workspace

ROUND_RATERS = ("loop-r1", "loop-r2")
EVAL_RATER = "loop-eval"


def phase(report: dict, name: str, home: Path, *args) -> str:
    started = time.perf_counter()
    out = ragloop(home, *args)
    report["seconds_by_phase"][name] = round(time.perf_counter() - started, 1)
    say(f"{name}: {report['seconds_by_phase'][name]:.0f}s")
    return out


def save(report: dict, path: Path | None) -> None:
    # After every round too: a run stopped at its time limit keeps the rounds it finished.
    if path:
        path.write_text(json.dumps(report, indent=1, default=str))


def evaluate(report: dict, name: str, home: Path, held: Path, args, *what) -> dict:
    out = phase(report, name, home, "eval", *what, "--questions", held, "--evaluators",
                "correctness,winrate", "-n", 0, "-k", args.k, "--max-new-tokens",
                args.max_new_tokens, "--rater-id", EVAL_RATER, "--generator", args.generator,
                "--json")
    record = json.loads(out)["evaluators"]
    c, w = record["correctness"]["metrics"], record["winrate"]["metrics"]
    summary = {"containment_base": c["containment_base"], "containment": c["containment_adapter"],
               "containment_diff": [c["containment_diff"], c["containment_diff_low"],
                                    c["containment_diff_high"]],
               "f1_base": c["f1_base"], "f1": c["f1_adapter"],
               "f1_diff": [c["f1_diff"], c["f1_diff_low"], c["f1_diff_high"]],
               "win_rate": [w["win_rate"], w["ci_low"], w["ci_high"]],
               "verdicts": {k: w.get(k, 0) for k in ("win", "tie", "both_bad", "loss")},
               "questions": c["questions"]}
    d, r = summary["containment_diff"], summary["win_rate"]
    say(f"{name}: containment {summary['containment_base']:.3f} -> {summary['containment']:.3f} "
        f"({d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]), win rate {r[0]:.2f} [{r[1]:.2f}, "
        f"{r[2]:.2f}] {summary['verdicts']}")
    return summary


def rate(report: dict, name: str, home: Path, train: Path, rater_id: str, args) -> None:
    phase(report, name, home, "rate", "--questions", train, "--rater", args.rater, "--rater-id",
          rater_id, "--candidates", args.candidates, "-k", args.k, "--max-new-tokens",
          args.max_new_tokens, "--generator", args.generator)


def training_only(rows: list[dict], held: set[str], what: str) -> None:
    """The held-out half's questions (and so their references) never reach training."""
    leaked = [r["question"] for r in rows if question_hash(r["question"]) in held]
    assert not leaked, f"{what} holds {len(leaked)} held-out questions, e.g. {leaked[0]!r}"


def pairs_of(home: Path, rater_id: str, held: set[str]) -> list[str]:
    out = home / f"pairs-{rater_id}.jsonl"
    ragloop(home, "prefs", "export", "--kind", "pairs", "--rater", rater_id, "--out", out)
    lines = [line for line in out.read_text().splitlines() if line.strip()]
    training_only([json.loads(line) for line in lines], held, f"pairs of {rater_id}")
    return lines


def contained_rows(home: Path, rated: list[dict], held: set[str]) -> list[dict]:
    """SFT rows: every stored candidate to a training question that contains the question's
    reference (as `correctness` reads it), each distinct answer once per prompt."""
    references = {question_hash(r["question"]): r["answer"] for r in rated}
    db = Workspace(home).db
    found = db.execute("select q.text, q.text_hash, c.prompt, c.text from candidates c "
                       "join questions q on q.id = c.question_id order by c.created_at")
    rows, seen = [], set()
    for question, text_hash, prompt, answer in found:
        if text_hash in references and (prompt, answer) not in seen \
                and contains_reference(answer, references[text_hash]):
            seen.add((prompt, answer))
            rows.append({"prompt": prompt, "completion": answer, "question": question})
    db.conn.close()
    training_only(rows, held, "the contained sft rows")
    return rows


def train(report: dict, name: str, home: Path, data: Path, adapter: str, args,
          method: str | None = None) -> None:
    extra = ("--lr", args.lr) if args.lr else ()
    out = phase(report, name, home, "train", "--method", method or args.method, "--data", data,
                "--max-steps", args.steps, "--name", adapter, "--seed", args.seed, *extra,
                "--json")
    metrics = json.loads(out).get("metrics", {})
    report.setdefault("training", {})[adapter] = {
        k: metrics.get(k) for k in ("first_loss", "final_loss", "global_step")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=16, help="Training questions rated.")
    parser.add_argument("--held", type=int, default=16, help="Held-out questions evaluated.")
    parser.add_argument("--steps", type=int, default=12, help="Optimizer steps per round.")
    parser.add_argument("--lr", type=float, help="Learning rate (default: the method's).")
    parser.add_argument("--method", default="sft+dpo", help="Training method of both rounds.")
    parser.add_argument("--rater", default="judge", choices=("judge", "reference"),
                        help="Who rates the rounds: the judge, or `reference` (the answer "
                             "that contains the reference answer; training questions only).")
    parser.add_argument("--rounds", type=int, default=2, choices=(1, 2),
                        help="Rounds of rate, train and eval.")
    parser.add_argument("--variant", choices=("contained",),
                        help="Also train round 1's variant: contained = sft on the round's "
                             "candidates that contain their reference.")
    parser.add_argument("--candidates", default="best-of-4",
                        help="rate --candidates: best-of-N or sample.")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--generator", default="transformers",
                        help="Generator plugin of every rate and eval (e.g. openvino).")
    parser.add_argument("-k", type=int, default=2, help="Passages per answer.")
    parser.add_argument("--seed", type=int, default=13, help="Seed of the question split.")
    parser.add_argument("--no-few-shot", action="store_true",
                        help="Leave out the few-shot evaluation.")
    parser.add_argument("--home", type=Path,
                        help="Workspace to run in (say, an interrupted run's, to resume it: "
                             "its index is reused, rated questions are not rated again); "
                             "default: a throwaway one, removed when the bench exits.")
    parser.add_argument("--out", type=Path, help="Save the numbers as JSON here.")
    args = parser.parse_args()

    home = args.home or Path(temp_workspace().home)
    home.mkdir(parents=True, exist_ok=True)
    report = {k: v for k, v in vars(args).items() if k not in ("out", "home")}
    report["seconds_by_phase"] = {}
    rated, held = split(args.seed)
    rated, held = rated[:args.limit], held[:args.held]
    held_hashes = {question_hash(r["question"]) for r in held}
    training_only(rated, held_hashes, "the training half")
    train_file, held_file = home / "train.jsonl", home / "held.jsonl"
    for path, rows in ((train_file, rated), (held_file, held)):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    say(f"{len(rated)} training and {len(held)} held-out questions; workspace {home}")

    if not (home / "indexes").is_dir():
        phase(report, "index", home, "index", CORPUS)
    rate(report, "rate 1", home, train_file, ROUND_RATERS[0], args)
    if not args.no_few_shot:
        report["few_shot"] = evaluate(report, "few-shot", home, held_file, args,
                                      "--prompt", "few-shot", "--baseline-prompt", "default")
    save(report, args.out)
    first = pairs_of(home, ROUND_RATERS[0], held_hashes)
    report["pairs"] = {"round 1": len(first)}
    data = home / "round1.jsonl"
    data.write_text("".join(line + "\n" for line in first))
    train(report, "train 1", home, data, "loop-1", args)
    report["round_1"] = evaluate(report, "eval 1", home, held_file, args, "--adapter", "loop-1")
    save(report, args.out)
    if args.variant == "contained":
        rows = contained_rows(home, rated, held_hashes)
        report["pairs"]["contained sft rows"] = len(rows)
        say(f"variant: {len(rows)} candidates of round 1 contain their reference")
        if rows:
            data = home / "contained.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in rows))
            train(report, "train 1c", home, data, "loop-1c", args, method="sft")
            report["round_1_contained"] = evaluate(report, "eval 1c", home, held_file, args,
                                                   "--adapter", "loop-1c")
        save(report, args.out)
    if args.rounds == 1:
        finish(report, args.out)
        return

    ragloop(home, "adapters", "use", "loop-1")     # rate 2 samples the first adapter
    rate(report, "rate 2", home, train_file, ROUND_RATERS[1], args)
    second = pairs_of(home, ROUND_RATERS[1], held_hashes)
    report["pairs"]["round 2"] = len(second)
    data = home / "rounds12.jsonl"
    data.write_text("".join(line + "\n" for line in first + second))
    train(report, "train 2", home, data, "loop-2", args)
    report["round_2"] = evaluate(report, "eval 2", home, held_file, args, "--adapter", "loop-2")
    finish(report, args.out)


if __name__ == "__main__":
    main()
