"""The whole feedback loop on examples/questions.jsonl, automatic ratings only: does it help?

The questions are split by question, with a fixed seed, into a training half and a held-out
half (bench_few_shot's split). Through the real CLI, in a throwaway workspace:

  index      the example corpus
  rate 1     the judge rates the base model's candidates for each training question
             (`rate --candidates best-of-4` by default: best vs worst of four samples)
  few-shot   `eval --prompt few-shot --baseline-prompt default` on the held-out half: the
             round-1 ratings as in-context examples, no training
  train 1    `train --method sft+dpo` on round 1's pairs -> adapter loop-1
  eval 1     loop-1 against base on the held-out half
  rate 2     loop-1 made the default; the judge rates its candidates for the same training
             questions (a second rater id, so nothing is skipped as rated)
  train 2    sft+dpo from base on both rounds' pairs (exported, joined) -> adapter loop-2
  eval 2     loop-2 against base on the held-out half

Every eval reports held-out reference containment (and token F1) of both answers with a
paired bootstrap interval on the difference, and the judge's win rate against the baseline
with its interval. The evals' own comparisons get their own rater id, and training takes
only the rounds' rater ids, so no held-out question is ever trained on.

    nice -n 10 .venv/bin/python bench/bench_loop.py [--limit 16] [--held 16] [--steps 12]

On a quiet 2-core CPU the defaults take about 20 minutes; `--limit`, `--held`, `--steps` and
`--candidates sample` make it smaller.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import CORPUS, finish, say, temp_workspace
from bench_few_shot import ragloop, split

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
                args.max_new_tokens, "--rater-id", EVAL_RATER, "--json")
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
    phase(report, name, home, "rate", "--questions", train, "--rater", "judge", "--rater-id",
          rater_id, "--candidates", args.candidates, "-k", args.k, "--max-new-tokens",
          args.max_new_tokens)


def pairs_of(home: Path, rater_id: str) -> list[str]:
    out = home / f"pairs-{rater_id}.jsonl"
    ragloop(home, "prefs", "export", "--kind", "pairs", "--rater", rater_id, "--out", out)
    return [line for line in out.read_text().splitlines() if line.strip()]


def train(report: dict, name: str, home: Path, data: Path, adapter: str, args) -> None:
    out = phase(report, name, home, "train", "--method", args.method, "--data", data,
                "--max-steps", args.steps, "--name", adapter, "--seed", args.seed, "--json")
    metrics = json.loads(out).get("metrics", {})
    report.setdefault("training", {})[adapter] = {
        k: metrics.get(k) for k in ("first_loss", "final_loss", "global_step")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=16, help="Training questions rated.")
    parser.add_argument("--held", type=int, default=16, help="Held-out questions evaluated.")
    parser.add_argument("--steps", type=int, default=12, help="Optimizer steps per round.")
    parser.add_argument("--method", default="sft+dpo", help="Training method of both rounds.")
    parser.add_argument("--candidates", default="best-of-4",
                        help="rate --candidates: best-of-N or sample.")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("-k", type=int, default=2, help="Passages per answer.")
    parser.add_argument("--seed", type=int, default=13, help="Seed of the question split.")
    parser.add_argument("--out", type=Path, help="Save the numbers as JSON here.")
    args = parser.parse_args()

    home = Path(temp_workspace().home)
    report = {k: v for k, v in vars(args).items() if k != "out"}
    report["seconds_by_phase"] = {}
    rated, held = split(args.seed)
    rated, held = rated[:args.limit], held[:args.held]
    train_file, held_file = home / "train.jsonl", home / "held.jsonl"
    for path, rows in ((train_file, rated), (held_file, held)):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    say(f"{len(rated)} training and {len(held)} held-out questions; workspace {home}")

    phase(report, "index", home, "index", CORPUS)
    rate(report, "rate 1", home, train_file, ROUND_RATERS[0], args)
    report["few_shot"] = evaluate(report, "few-shot", home, held_file, args,
                                  "--prompt", "few-shot", "--baseline-prompt", "default")
    save(report, args.out)
    first = pairs_of(home, ROUND_RATERS[0])
    report["pairs"] = {"round 1": len(first)}
    data = home / "round1.jsonl"
    data.write_text("".join(line + "\n" for line in first))
    train(report, "train 1", home, data, "loop-1", args)
    report["round_1"] = evaluate(report, "eval 1", home, held_file, args, "--adapter", "loop-1")
    save(report, args.out)

    ragloop(home, "adapters", "use", "loop-1")     # rate 2 samples the first adapter
    rate(report, "rate 2", home, train_file, ROUND_RATERS[1], args)
    second = pairs_of(home, ROUND_RATERS[1])
    report["pairs"]["round 2"] = len(second)
    data = home / "rounds12.jsonl"
    data.write_text("".join(line + "\n" for line in first + second))
    train(report, "train 2", home, data, "loop-2", args)
    report["round_2"] = evaluate(report, "eval 2", home, held_file, args, "--adapter", "loop-2")
    finish(report, args.out)


if __name__ == "__main__":
    main()
