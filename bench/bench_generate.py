"""Generation speed of the default model (SmolLM2-135M-Instruct) with every generator and
quantization side by side, loaded the way `ask --generator NAME -o ...` / `--compress METHOD`
loads them: the same RAG prompts, greedy, interleaved prompt by prompt in one process so
machine load hits every variant alike. Reported per variant:

- one stream: tokens/s, time to the first piece, and the ratio to float32 transformers;
- batches of 4 and 8 (`generate_many`) against the same answers one after another with the
  same generator (tokens/s of each, and their ratio): different prompts, as `eval` asks;
- candidates (`--candidates 4`): 4 sampled answers (temperature 0.7) to each prompt, as
  `rate` and best-of-N ask, one after another against one `generate_many` call, with a 95%
  bootstrap interval on the ratio over prompts (machine noise moves it by ~0.1-0.2x); and
  (`--across 4`) against calls holding 4 prompts' candidates, as `rate` with an automatic
  rater, the demo and `eval` hand them over (core/pipeline/rating_batches.py), the interval
  then over calls. The generators' batch size is the largest of --batches and --candidates;
- agreement with float32 transformers: greedy answers equal as a whole, and the share of
  float32's text reproduced before the first difference;
- export and load time (an onnx-genai or openvino export is made once per workspace, model,
  adapter and precision: the first run times it) and peak RSS, each variant in a child process;
- with `--correctness N`: reference containment (the `correctness` evaluator's check) of
  each variant's greedy answers to N questions that carry a reference answer, and its
  difference from float32 transformers with a paired bootstrap 95% interval (issue 16: a
  faster generator must not lose more than 1 point).

Prompts are questions from examples/questions.jsonl with passages from their source file
(the paragraphs sharing most words with the question: retrieval without building an index),
put together by core/prompt.make_messages as `ask` does.

    python bench/bench_generate.py [--variants transformers:fp32 onnx-genai:int8 ...]
        [--prompts 6] [--rounds 1] [--max-new-tokens 48] [--batches 4 8] [--candidates 4]
        [--across 4] [--home DIR]
        [--save FILE] [--no-rss] [--threads N] [--correctness N]
        [--correctness-tokens 256]

Variants are GENERATOR:SETTING: transformers:fp32 (float32, one token per step:
`-o lookup=0`), transformers:lookup (float32 with prompt-lookup decoding, the default),
transformers:plain (float32 with `-o packed=false -o lookup=0`), transformers:METHOD (a
compressor, e.g. torchao-int8-dynamic), onnx-genai:fp32|int8|int4, openvino:fp16|int8|int4
(prompt lookup on, the runtime's own arithmetic), openvino:fp16-f32 (float32
arithmetic), and the anchor llama-cpp:fp16|int8|int4 (llama.cpp on the same weights written
as GGUF; needs llama-cpp-python, bench/llama_cpp_anchor.py). Targets (issue 16): one
stream >= 3x float32 transformers; a batch of 4 candidates >= 2x one after another;
agreement >= torchao int8-dynamic's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

from _common import CORPUS, QUESTIONS, finish, say
from retrieval_metrics import speed_ratio

from ragloop.core.pipeline.ask import load_generator
from ragloop.core.pipeline.prompt import make_messages
from ragloop.core.workspace import Workspace

VARIANTS = ["transformers:fp32", "transformers:lookup", "transformers:plain",
            "transformers:torchao-int8-dynamic",
            "onnx-genai:fp32", "onnx-genai:int8", "onnx-genai:int4",
            "openvino:fp16", "openvino:int8", "openvino:int4", "openvino:fp16-f32"]
REFERENCE = "transformers:fp32"


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]{3,}", text.lower()))


def questions(count: int) -> list[dict]:
    """`count` questions spread evenly over the file, each with its reference answer."""
    rows = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["source"].endswith((".md", ".txt", ".rst"))]
    return rows[:: max(1, len(rows) // count)][:count]


def conversation(row: dict, passages: int = 3) -> list[dict]:
    paragraphs = [p for p in (CORPUS / row["source"]).read_text().split("\n\n") if p.strip()]
    asked = words(row["question"])
    best = sorted(paragraphs, key=lambda p: -len(asked & words(p)))[:passages]
    return make_messages(row["question"], [SimpleNamespace(text=p) for p in best])


def prompts(count: int) -> list[list[dict]]:
    return [conversation(row) for row in questions(count)]


def correctness(generators, count: int, max_new_tokens: int) -> dict:
    """Reference containment per variant over `count` questions, against float32's."""
    from ragloop.core.pipeline.evaluation_report import paired_bootstrap
    from ragloop.core import contains_reference
    rows = questions(count)
    hits: dict = defaultdict(list)
    for i, row in enumerate(rows):
        message = conversation(row)
        for label, gen in generators.items():
            text = "".join(gen.generate(message, max_new_tokens=max_new_tokens))
            hits[label].append(int(contains_reference(text, row["answer"])))
        if (i + 1) % 5 == 0 or i + 1 == len(rows):
            say(f"correctness: {i + 1}/{len(rows)} questions")
    out = {}
    for label, values in hits.items():
        diff = paired_bootstrap(values, hits[REFERENCE])
        out[label] = {"containment": round(sum(values) / len(values), 3),
                      "vs_fp32": round(diff["difference"], 3),
                      "interval": [round(diff["low"], 3), round(diff["high"], 3)]}
    return out


def prefix_share(reference: str, other: str) -> float:
    same = next((i for i, (a, b) in enumerate(zip(reference, other)) if a != b),
                min(len(reference), len(other)))
    return same / max(len(reference), 1)


def load(ws: Workspace, variant: str, batch: int):
    name, setting = variant.split(":", 1)
    if name == "llama-cpp":                 # the anchor, not a ragloop generator
        from llama_cpp_anchor import LlamaCppAnchor
        started = time.perf_counter()
        gen = LlamaCppAnchor(ws, setting)
        return gen, {"load_s": round(time.perf_counter() - started, 2),
                     "export_s": gen.export_seconds and round(gen.export_seconds, 1)}
    options = [f"batch_size={batch}"]
    compress = None
    if name == "onnx-genai":
        options.append(f"precision={setting}")
    elif name == "openvino":                # fp16-f32: float32 arithmetic (-o compute=f32)
        precision, _, compute = setting.partition("-")
        options += [f"precision={precision}", f"compute={compute or 'auto'}"]
    elif setting == "lookup":               # the default: float32 with prompt-lookup decoding
        pass
    elif setting == "plain":                # float32 without the oneDNN-packed weights
        options += ["packed=false", "lookup=0"]
    elif setting == "fp32":                 # the reference: one token per step
        options.append("lookup=0")
    else:
        compress = setting
    gen = load_generator(ws, name, options, compress=compress)
    started = time.perf_counter()
    gen.context_length  # noqa: B018  (load, and export once, outside the timed loops)
    seconds = time.perf_counter() - started
    export = getattr(gen, "export", None)
    record = json.loads((export / "ragloop-export.json").read_text()) if export else {}
    return gen, {"load_s": round(seconds, 2), "export_s": record.get("seconds")}


def rss_of(ws_home: str, variant: str, max_new_tokens: int) -> float:
    """Peak RSS (MB) of a child that loads `variant` and answers one prompt."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            f"import bench_generate as b\n"
            f"from ragloop.core.workspace import Workspace\n"
            f"gen, _ = b.load(Workspace({ws_home!r}), {variant!r}, 1)\n"
            f"''.join(gen.generate(b.prompts(1)[0], max_new_tokens={max_new_tokens}))\n"
            # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would
            # report this process's peak when it is the larger.
            f"print(next(l.split()[1] for l in open('/proc/self/status') "
            f"if l.startswith('VmHWM')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return float("nan")
    return int(out.stdout.split()[-1]) / 1024


def one_stream(generators, messages, rounds, max_new_tokens, stats, texts):
    for round_ in range(rounds):
        for i, message in enumerate(messages):
            order = list(generators.items())
            if (round_ + i) % 2:                # alternate who goes first
                order.reverse()
            for label, gen in order:
                text = "".join(gen.generate(message, max_new_tokens=max_new_tokens))
                last = gen.last_generation
                s = stats[label]
                s["tokens"] += last["new_tokens"]
                s["seconds"] += last["seconds"]
                s["first_s"] += last["first_piece_seconds"]
                s["answers"] += 1
                texts[label, i] = text
            say(f"one stream: prompt {i + 1}/{len(messages)}, round {round_ + 1}")


def batches(generators, messages, sizes, max_new_tokens, stats):
    for size in sizes:
        conversations = [messages[i % len(messages)] for i in range(size)]
        for label, gen in generators.items():
            started = time.perf_counter()
            tokens = 0
            for c in conversations:
                "".join(gen.generate(c, max_new_tokens=max_new_tokens))
                tokens += gen.last_generation["new_tokens"]
            serial = time.perf_counter() - started
            started = time.perf_counter()
            gen.generate_many(conversations, max_new_tokens=max_new_tokens)
            together = time.perf_counter() - started
            batched = sum(r["new_tokens"] for r in gen.last_generations)
            stats[label][f"serial{size}"] = tokens / serial
            stats[label][f"batch{size}"] = batched / together
            say(f"batch of {size}: {label} done")


def candidates(generators, messages, size, max_new_tokens, stats, per_call=1,
               temperature=0.7):
    """`size` sampled answers to each prompt (a rating's candidates, best-of-N), one after
    another against `generate_many` calls of `per_call` prompts' candidates each (1: one
    question's; more: several questions' at once, as `rate` hands them over ahead of rating).
    Which goes first alternates by call: a generator that keeps a read prompt (openvino's
    prefix cache) gives it to whichever comes second. The ratio's interval is over calls."""
    key = candidates_key(size, per_call)
    calls = [list(range(at, min(at + per_call, len(messages))))
             for at in range(0, len(messages), per_call)]
    for label, gen in generators.items():
        # per call: tokens and seconds one after another, then together
        serial_tokens, serial_s, batch_tokens, batch_s = [], [], [], []
        for c, call in enumerate(calls):
            for one_by_one in (c % 2 == 0, c % 2 == 1):
                started = time.perf_counter()
                if one_by_one:
                    tokens = 0
                    for i in call:
                        for k in range(size):
                            "".join(gen.generate(messages[i], max_new_tokens=max_new_tokens,
                                                 temperature=temperature, seed=i * size + k))
                            tokens += gen.last_generation["new_tokens"]
                    serial_s.append(time.perf_counter() - started)
                    serial_tokens.append(tokens)
                else:
                    # answer j of the call draws with seed call[0] * size + j: the same
                    # seeds as one after another
                    gen.generate_many([messages[i] for i in call for _ in range(size)],
                                      max_new_tokens=max_new_tokens, temperature=temperature,
                                      seed=call[0] * size)
                    batch_s.append(time.perf_counter() - started)
                    batch_tokens.append(sum(r["new_tokens"] for r in gen.last_generations))
        stats[label][f"cserial{key}"] = sum(serial_tokens) / sum(serial_s)
        stats[label][f"cand{key}"] = sum(batch_tokens) / sum(batch_s)
        stats[label][f"cratio{key}"] = speed_ratio(batch_tokens, batch_s, serial_tokens,
                                                   serial_s)
        say(f"{size} candidates per prompt, {per_call} prompt(s) per call: {label} done")


def candidates_key(size: int, per_call: int) -> str:
    return str(size) if per_call == 1 else f"{size}x{per_call}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", nargs="*", default=VARIANTS)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batches", type=int, nargs="*", default=[4, 8])
    parser.add_argument("--candidates", type=int, nargs="*", default=[4],
                        help="sampled answers per prompt, one after another and as one batch")
    parser.add_argument("--across", type=int, default=4, metavar="N",
                        help="also hand N prompts' candidates to one generate_many call, as "
                             "rate does ahead of rating (0: skip); the generators' batch size "
                             "is the largest of --batches and --candidates")
    parser.add_argument("--home", default=None,
                        help="workspace (default: the user's: conversions and exports kept)")
    parser.add_argument("--save", type=Path, default=None, help="write the report as JSON")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS children")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; docs/compression.md says why "
                             "1 can be faster on a busy machine)")
    parser.add_argument("--correctness", type=int, default=0, metavar="N",
                        help="also check reference containment on N questions (0: skip)")
    parser.add_argument("--correctness-tokens", type=int, default=256,
                        help="new tokens per answer there (eval's default: answers end first)")
    args = parser.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)

    variants = [REFERENCE, *[v for v in args.variants if v != REFERENCE]]
    ws = Workspace(args.home) if args.home else Workspace()
    generators, loading = {}, {}
    batch = max([*args.batches, *args.candidates], default=1)
    for variant in variants:
        say(f"loading {variant}")
        generators[variant], loading[variant] = load(ws, variant, batch)
    messages = prompts(args.prompts)
    load_before = os.getloadavg()
    stats: dict = defaultdict(lambda: defaultdict(float))
    texts: dict = {}
    one_stream(generators, messages, args.rounds, args.max_new_tokens, stats, texts)
    batches(generators, messages, args.batches, args.max_new_tokens, stats)
    per_call = [1, *([args.across] if args.across > 1 else [])]
    sets = [(size, n) for size in args.candidates for n in per_call]
    for size, n in sets:
        candidates(generators, messages, size, args.max_new_tokens, stats, n)
    rss = {} if args.no_rss else {v: rss_of(str(ws.home), v, 8) for v in variants}
    base_rate = stats[REFERENCE]["tokens"] / stats[REFERENCE]["seconds"]
    print(f"\n{len(messages)} prompts x {args.rounds} rounds, greedy, up to "
          f"{args.max_new_tokens} new tokens; load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after; peak RSS of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    sizes = args.batches
    head = "".join(f" {'b' + str(n) + ' tok/s':>11s} {'vs 1by1':>7s}" for n in sizes)
    head += "".join(f" {'c' + candidates_key(*c) + ' tok/s':>11s} {'vs 1by1':>7s}"
                    for c in sets)
    print(f"{'variant':34s} {'tok/s':>6s} {'vs fp32':>7s} {'TTFT s':>6s}{head} "
          f"{'exact':>5s} {'prefix':>6s} {'RSS MB':>6s} {'export s':>8s} {'load s':>6s}")
    report = {"prompts": len(messages), "rounds": args.rounds, "load_before": load_before[0],
              "batch_size": batch,
              "max_new_tokens": args.max_new_tokens, "variants": {}}
    for label in variants:
        s = stats[label]
        rate = s["tokens"] / s["seconds"]
        exact = sum(texts[label, i] == texts[REFERENCE, i] for i in range(len(messages)))
        prefix = sum(prefix_share(texts[REFERENCE, i], texts[label, i])
                     for i in range(len(messages))) / len(messages)
        row = {"tokens_per_s": round(rate, 2), "vs_fp32": round(rate / base_rate, 2),
               "first_piece_s": round(s["first_s"] / s["answers"], 3), "exact": exact,
               "prefix_agreement": round(prefix, 3), "peak_rss_mb": round(rss.get(label, 0)),
               **loading[label]}
        cells = ""
        for n in sizes:
            row[f"batch{n}_tokens_per_s"] = round(s[f"batch{n}"], 2)
            row[f"batch{n}_vs_one_by_one"] = round(s[f"batch{n}"] / s[f"serial{n}"], 2)
            cells += f" {s[f'batch{n}']:11.1f} {row[f'batch{n}_vs_one_by_one']:6.2f}x"
        for c in sets:
            n = candidates_key(*c)
            ratio = s[f"cratio{n}"]
            row[f"candidates{n}_tokens_per_s"] = round(s[f"cand{n}"], 2)
            row[f"candidates{n}_vs_one_by_one"] = round(ratio.mean, 2)
            row[f"candidates{n}_vs_one_by_one_interval"] = [round(ratio.low, 2),
                                                            round(ratio.high, 2)]
            cells += f" {s[f'cand{n}']:11.1f} {ratio.mean:6.2f}x"
        report["variants"][label] = row
        export = f"{row['export_s']:8.1f}" if row["export_s"] is not None else f"{'-':>8s}"
        print(f"{label:34s} {rate:6.1f} {row['vs_fp32']:6.2f}x {row['first_piece_s']:6.2f}"
              f"{cells} {exact:>2d}/{len(messages):<2d} {prefix:6.1%} "
              f"{row['peak_rss_mb']:6d} {export} {row['load_s']:6.1f}")
    for size, per_call in sets:
        n = candidates_key(size, per_call)
        calls = -(-len(messages) // per_call)
        print(f"\n{size} candidates of {per_call} prompt(s) per call (batch size "
              f"{batch}) vs one after another, 95% bootstrap over the {calls} calls:")
        for label in variants:
            ratio = stats[label][f"cratio{n}"]
            print(f"{label:34s} {ratio.mean:.2f}x [{ratio.low:.2f}, {ratio.high:.2f}]")
    if args.correctness:
        report["correctness"] = correctness(generators, args.correctness,
                                           args.correctness_tokens)
        print(f"\nreference containment, {args.correctness} questions, greedy:")
        for label, row in report["correctness"].items():
            low, high = row["interval"]
            print(f"{label:34s} {row['containment']:.3f}  vs fp32 {row['vs_fp32']:+.3f} "
                  f"[{low:+.3f}, {high:+.3f}]")
    finish(report, args.save)


if __name__ == "__main__":
    main()
