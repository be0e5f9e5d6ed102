"""Load test of `ragloop serve` on 127.0.0.1 only (issue 14's targets), with the default
models on the example corpus (`--tiny`: the tests' tiny random models, for a quick run).

1. Feedback: CLIENTS concurrent clients post feedback for SECONDS, each RATE times a second
   at random moments (latency counted from when a post was due), then again each as fast as
   it can (the capacity run: there latency is just CLIENTS / throughput, by Little's law);
   after each, the `serve_feedback` rows are counted against the successes the clients saw
   (none lost, none twice); p50/p99 latency of `/v1/feedback` (target p99 <= 50 ms).
2. Answers: the same distinct questions (greedy, the cache off) answered back to back by a
   `Ragloop` in this process and by 8 concurrent clients of the server, in alternating
   rounds (in-process, server, server, in-process); throughput ratio server / in-process
   (target >= 0.9).
3. Memory: the server worker's peak RSS against a plain `ragloop ask` process's (target
   <= 1.2x).

The server runs as `ragloop serve` in its own process; clients share the machine with it,
so on a loaded machine every latency is noisy: compare ratios from one run.

    python bench/bench_serve.py [--clients 50] [--rate 2] [--seconds 60] [--questions 16]
        [--concurrency 8] [--max-new-tokens 32] [--tiny] [--skip-asks] [--save FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from _common import CORPUS, QUESTIONS, finish, say, temp_workspace

RAGLOOP = str(Path(sys.executable).parent / "ragloop")


def tiny_options() -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from tiny_models import tiny_causal_lm, tiny_embedder
    return [f"embedder.model={tiny_embedder()}", f"model={tiny_causal_lm()}"]


def start_server(home: Path, gen_options: list[str]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "RAGLOOP_HOME": str(home)}
    args = [RAGLOOP, "serve", "--port", "0", "--cache-size", "0"]
    for option in gen_options:
        args += ["-o", option]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    url = re.search(r"Serving on (http://\S+)", proc.stderr.readline()).group(1)
    # Keep reading its log: a full pipe would stop the server at its next log line.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit("the server stopped: " + proc.stderr.read()[-2000:])
        time.sleep(0.5)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def feedback_load(url: str, traces: list[str], clients: int, seconds: float,
                        rate: float | None) -> dict:
    """`clients` clients post feedback for `seconds`. With `rate`, each posts `rate` times a
    second at random (Poisson) moments, and a latency counts from the moment the request was
    due, so a client held up by a slow reply cannot hide the delay (coordinated omission).
    Without it, each posts again as soon as its reply arrives: the server's capacity."""
    latencies, when, ids, errors = [], [], [], 0
    ready, opened = asyncio.Event(), []
    # This process imported torch (the tiny models); a full collection walking all of it
    # stalls every client for 0.2-0.5 s and counts as server latency. Nothing loaded so far
    # needs collecting.
    gc.collect()
    gc.freeze()
    begin = stop = 0.0

    async def client(n: int):
        nonlocal errors
        spacing = random.Random(n)
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            await c.get("/healthz")       # its connection opened before the clock starts
            opened.append(n)
            if len(opened) == clients:
                start_clock()
            await ready.wait()
            due = begin + (spacing.expovariate(rate) if rate else 0.0)
            i = 0
            while due < stop:
                if rate:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                else:
                    due = time.perf_counter()
                body = {"trace_id": traces[(n + i) % len(traces)],
                        "thumbs": "up" if (n + i) % 2 else "down"}
                r = await c.post("/v1/feedback", json=body, headers={"X-User": f"u{n}"})
                latencies.append(time.perf_counter() - due)
                when.append(due - begin)
                if r.status_code == 200:
                    ids.append(r.json()["feedback_id"])
                else:
                    errors += 1
                i += 1
                if rate:
                    due += spacing.expovariate(rate)

    def start_clock():
        nonlocal begin, stop
        begin = time.perf_counter()
        stop = begin + seconds
        ready.set()

    await asyncio.gather(*(client(n) for n in range(clients)))
    ordered = sorted(latencies)
    # The worst latency of each tenth of the run: a tail spread evenly or a few stalls.
    tenths = [max((lat for lat, at in zip(latencies, when) if int(10 * at / seconds) == t),
                  default=0.0) for t in range(10)]
    return {"requests": len(latencies), "ok": len(ids), "errors": errors, "ids": ids,
            "p50_ms": round(1000 * ordered[len(ordered) // 2], 1),
            "p99_ms": round(1000 * _p99(latencies), 1),
            "worst_ms_by_tenth": [round(1000 * x) for x in tenths],
            # The same without the first fifth, where the server meets its first posts: the
            # steady state, reported beside (never instead of) the whole run's.
            "p99_ms_after_first_fifth": round(1000 * _p99(
                [lat for lat, at in zip(latencies, when) if at >= seconds / 5]), 1),
            "per_s": round(len(latencies) / seconds, 1)}


def _p99(values: list[float]) -> float:
    ordered = sorted(values) or [0.0]
    return ordered[int(0.99 * (len(ordered) - 1))]


def count_feedback(db, before: int, load: dict) -> dict:
    """None lost, none twice: the rows added against the ids the clients were given."""
    rows = db.execute("select id from serve_feedback").fetchall()
    stored = {r[0] for r in rows}
    ids = load.pop("ids")
    load.update(rows_added=len(rows) - before, lost=len(set(ids) - stored),
                duplicated=len(ids) - len(set(ids)),
                extra_rows=len(rows) - before - len(set(ids)))
    return load


async def concurrent_asks(url: str, questions: list[str], concurrency: int, tokens: int):
    pending = list(questions)
    errors = 0

    async def client():
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=600) as c:
            while pending:
                q = pending.pop()
                r = await c.post("/v1/ask", json={"question": q, "max_new_tokens": tokens})
                errors += r.status_code != 200

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - started, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=2.0,
                        help="feedback posts per second per client in the paced run (a "
                             "capacity run, each client as fast as it can, follows)")
    parser.add_argument("--skip-asks", action="store_true",
                        help="only the feedback load (and memory)")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--tiny", action="store_true", help="The tests' tiny random models.")
    parser.add_argument("--save", type=Path, help="Write the numbers as JSON here.")
    args = parser.parse_args()

    ws = temp_workspace()
    home = ws.home
    os.environ["RAGLOOP_HOME"] = str(home)
    options = tiny_options() if args.tiny else []
    embedder = [o for o in options if o.startswith("embedder.")]
    gen = [o for o in options if not o.startswith("embedder.")]
    say(f"indexing {CORPUS} into {home}")
    subprocess.run([RAGLOOP, "index", str(CORPUS), *sum((["-o", o] for o in embedder), [])],
                   check=True, stdout=subprocess.DEVNULL)
    base = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines()
            if line.strip()]
    # Distinct questions, so no answer repeats (the server's cache is off as well).
    questions = [q if i < len(base) else f"{q} (take {i // len(base) + 1})"
                 for i, q in enumerate(base * (args.questions // len(base) + 1))]
    questions = questions[:args.questions]
    report = {"clients": args.clients, "seconds_of_load": args.seconds, "tiny": args.tiny,
              "questions": len(questions), "max_new_tokens": args.max_new_tokens,
              "cpus": os.cpu_count()}

    say("memory: a plain `ragloop ask`")
    ask = subprocess.Popen([RAGLOOP, "ask", questions[0], "--max-new-tokens",
                            str(args.max_new_tokens), *sum((["-o", o] for o in gen), [])],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # wait4 gives this child's own peak, where RUSAGE_CHILDREN would be the largest of all
    # children so far (the indexer's included).
    _, status, usage = os.wait4(ask.pid, 0)
    if status:
        raise SystemExit(f"`ragloop ask` failed with status {status}")
    report["ask_process_peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)

    rl = None
    if not args.skip_asks:
        from ragloop.core import Ragloop
        rl = Ragloop(home)
        rl.ask(questions[0], max_new_tokens=4, generator_options=gen)           # load first

    say("starting `ragloop serve`")
    proc, url = start_server(home, gen)
    try:
        if rl is not None:
            # In-process and server rounds alternate (A B B A), so that a load that rises or
            # falls during the run weighs on both sides alike.
            spent = {"in_process": 0.0, "server": 0.0}
            for side in ("in_process", "server", "server", "in_process"):
                say(f"answers: {len(questions)} questions, "
                    + ("back to back in this process" if side == "in_process" else
                       f"{args.concurrency} concurrent clients of the server"))
                started = time.perf_counter()
                if side == "in_process":
                    for q in questions:
                        rl.ask(q, max_new_tokens=args.max_new_tokens, generator_options=gen)
                    errors = 0
                else:
                    _, errors = asyncio.run(concurrent_asks(
                        url, questions, args.concurrency, args.max_new_tokens))
                spent[side] += time.perf_counter() - started
                if errors:
                    raise SystemExit(f"{errors} asks to the server failed")
            rl.close()
            asked = 2 * len(questions)
            report["asks"] = {
                "rounds": "in-process, server, server, in-process",
                "in_process_s": round(spent["in_process"], 2),
                "server_s": round(spent["server"], 2), "errors": 0,
                "in_process_per_s": round(asked / spent["in_process"], 3),
                "server_per_s": round(asked / spent["server"], 3),
                "throughput_ratio": round(spent["in_process"] / spent["server"], 3)}
            say(f"  {report['asks']}")

        traces = [httpx.post(url + "/v1/ask", timeout=600, json={
            "question": q, "max_new_tokens": 4}).json()["trace_id"] for q in questions[:8]]
        db = sqlite3.connect(home / "ragloop.db")
        for name, rate in (("feedback", args.rate), ("feedback_capacity", None)):
            before = db.execute("select count(*) from serve_feedback").fetchone()[0]
            pace = f"each {rate}/s at random moments" if rate else "each as fast as it can"
            say(f"{name}: {args.clients} clients for {args.seconds:.0f} s, {pace}")
            load = asyncio.run(feedback_load(url, traces, args.clients, args.seconds, rate))
            report[name] = {"rate_per_client": rate, **count_feedback(db, before, load)}
            say(f"  {report[name]}")
        report["server_peak_rss_mb"] = round(peak_rss_mb(proc.pid), 1)
        report["rss_ratio"] = round(report["server_peak_rss_mb"]
                                    / report["ask_process_peak_rss_mb"], 3)
        say(f"  peak RSS server {report['server_peak_rss_mb']} MB, `ragloop ask` "
            f"{report['ask_process_peak_rss_mb']} MB")
    finally:
        proc.terminate()
        proc.wait(60)
    finish(report, args.save)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
