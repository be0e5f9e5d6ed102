"""How long a person waits for each item in `ragloop rate`: a pexpect script drives the real
command on the packaged models over examples/questions.jsonl and answers each item (key `t`)
after --read-seconds (0: as soon as the prompt appears). A wait is the time from the key of
one item to the prompt of the next; the first is from the start, model load included.

    python bench/bench_rate_wait.py -n 6 --read-seconds 20 [--home INDEXED_WORKSPACE]

Prints the first wait and the median of the rest, beside the session's own record of each
wait (`comparisons.wait_seconds`, the time from the previous verdict to the item shown).
Without --home it indexes examples/corpus into a throwaway workspace first. With
--read-seconds 0 nothing can be prefetched in time: each wait is then one pair's generation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pexpect

from _common import CORPUS, QUESTIONS, finish, say, temp_workspace
from ragloop.core.workspace import Workspace

RAGLOOP = str(Path(sys.executable).parent / "ragloop")
PROMPT = "Which is better? "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=6, help="items to rate")
    parser.add_argument("--read-seconds", type=float, default=0.0,
                        help="seconds the simulated person reads each item before the key")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="passed to rate (default: rate's own)")
    parser.add_argument("--home", type=Path, default=None,
                        help="a workspace with examples/corpus indexed (default: index one)")
    parser.add_argument("--out", type=Path, default=None, help="save the numbers as JSON")
    args = parser.parse_args()

    if args.home:
        ws = Workspace(args.home)
    else:
        ws = temp_workspace()
        say(f"indexing {CORPUS} into {ws.home}")
        subprocess.run([RAGLOOP, "--home", str(ws.home), "index", str(CORPUS)], check=True,
                       stdout=subprocess.DEVNULL)
    rater_id = f"bench-{os.getpid()}"
    command = ["--home", str(ws.home), "rate", "--questions", str(QUESTIONS), "-n", str(args.n),
               "--rater-id", rater_id]
    if args.max_new_tokens:
        command += ["--max-new-tokens", str(args.max_new_tokens)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    child = pexpect.spawn(RAGLOOP, command, env=env, dimensions=(50, 120), encoding="utf-8",
                          timeout=1800)
    waits, since = [], time.perf_counter()
    for item in range(1, args.n + 1):
        child.expect_exact(PROMPT)
        waits.append(round(time.perf_counter() - since, 2))
        say(f"item {item}: waited {waits[-1]:.2f} s")
        time.sleep(args.read_seconds)
        child.send("t")
        since = time.perf_counter()
    child.expect(pexpect.EOF)
    child.close()
    recorded = [r[0] for r in ws.db.execute(
        "select wait_seconds from comparisons where rater_id = ? order by created_at",
        [rater_id])]
    rest = waits[1:]
    report = {"items": args.n, "read_seconds": args.read_seconds,
              "max_new_tokens": args.max_new_tokens, "waits": waits,
              "first_wait": waits[0], "median_wait_after_first":
                  statistics.median(rest) if rest else None,
              "recorded_wait_seconds": recorded,
              "recorded_median_after_first":
                  statistics.median(recorded[1:]) if len(recorded) > 1 else None,
              "load_average": os.getloadavg()}
    print(f"first item: {waits[0]:.2f} s (model load included); median wait after the first: "
          f"{report['median_wait_after_first']} s over {len(rest)} items "
          f"(session's record: {report['recorded_median_after_first']} s); "
          f"reading {args.read_seconds:g} s per item; load average "
          f"{report['load_average'][0]:.1f}")
    finish(report, args.out)
    if not args.home:
        shutil.rmtree(ws.home, ignore_errors=True)


if __name__ == "__main__":
    main()
