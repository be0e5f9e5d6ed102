"""Generation speed of the default model (SmolLM2-135M-Instruct) in float32 against each
quantization, loaded the way `ask --compress METHOD` loads it: the same RAG prompts, greedy,
interleaved prompt by prompt in one process so machine load hits every variant alike; plus
how often each variant's answer agrees with float32's (the whole answer, and the share of
float32's tokens it reproduces before the first difference). Target: int8 >= 1.5x float32.

Prompts are questions from examples/questions.jsonl with passages from their source file
(the paragraphs sharing most words with the question: retrieval without building an index),
put together by core/prompt.make_messages as `ask` does.

    python bench/bench_generate.py [--methods torchao-int8 ...] [--prompts 6] [--rounds 2]
                                   [--max-new-tokens 48] [--threads N] [--model PATH] [--direct]

--direct times a plain `model.generate` call instead of the generator's streaming path (which
runs generate in a greenlet on this same thread: plugins/hf/stream.py says why).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections import defaultdict
from types import SimpleNamespace

from _common import CORPUS, QUESTIONS

from ragloop.core.pipeline.ask import load_generator
from ragloop.core.pipeline.prompt import make_messages
from ragloop.core.workspace import Workspace

METHODS = ["torchao-int8", "torchao-int8-dynamic", "torchao-int4"]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]{3,}", text.lower()))


def prompts(count: int, passages: int = 3) -> list[list[dict]]:
    rows = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["source"].endswith((".md", ".txt", ".rst"))]
    picked = rows[:: max(1, len(rows) // count)][:count]
    result = []
    for row in picked:
        paragraphs = [p for p in (CORPUS / row["source"]).read_text().split("\n\n") if p.strip()]
        asked = words(row["question"])
        best = sorted(paragraphs, key=lambda p: -len(asked & words(p)))[:passages]
        hits = [SimpleNamespace(text=p) for p in best]
        result.append(make_messages(row["question"], hits))
    return result


def prefix_share(reference: list[int], other: list[int]) -> float:
    same = 0
    for a, b in zip(reference, other):
        if a != b:
            break
        same += 1
    return same / max(len(reference), 1)


def direct(gen, message, max_new_tokens: int) -> tuple[dict, list[int]]:
    """model.generate on this thread: the timing `last_generation` would hold, and the ids."""
    import torch
    ids = gen.tokenizer(gen.render(message), add_special_tokens=False, return_tensors="pt")
    started = time.perf_counter()
    with torch.inference_mode():
        out = gen.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=gen.tokenizer.eos_token_id)
    seconds = time.perf_counter() - started
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    return ({"new_tokens": len(new), "seconds": seconds, "first_piece_seconds": seconds,
             "prompt_tokens": ids["input_ids"].shape[1]}, new)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's)")
    parser.add_argument("--model", default=None, help="model folder (default: the packaged one)")
    parser.add_argument("--direct", action="store_true",
                        help="time model.generate on the main thread, not the streaming generator")
    args = parser.parse_args()

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    ws = Workspace()          # the user's: the packaged model is converted there once
    options = [f"model={args.model}"] if args.model else []
    variants = {"float32": None, **{m: m for m in args.methods}}
    generators = {}
    for label, method in variants.items():
        gen = load_generator(ws, "transformers", options, compress=method)
        gen.model  # noqa: B018  (load now, not inside the timed loop)
        generators[label] = gen
        print(f"loaded {label:22s} in {gen.load_seconds:5.2f} s  {gen.compressed or ''}",
              flush=True)
    messages = prompts(args.prompts)
    load_before = os.getloadavg()
    stats = defaultdict(lambda: defaultdict(float))
    answers: dict[tuple, list[int]] = {}
    started = time.perf_counter()
    for round_ in range(args.rounds):
        for i, message in enumerate(messages):
            order = list(generators.items())
            if (round_ + i) % 2:          # alternate who goes first
                order.reverse()
            for label, gen in order:
                if args.direct:
                    last, tokens = direct(gen, message, args.max_new_tokens)
                else:
                    text = "".join(gen.generate(message, max_new_tokens=args.max_new_tokens))
                    last = gen.last_generation
                    tokens = gen.tokenizer(text, add_special_tokens=False)["input_ids"]
                s = stats[label]
                s["tokens"] += last["new_tokens"]
                s["seconds"] += last["seconds"]
                s["decode_tokens"] += max(last["new_tokens"] - 1, 0)
                s["decode_seconds"] += last["seconds"] - last["first_piece_seconds"]
                s["prompt_tokens"] += last["prompt_tokens"]
                answers[label, i] = tokens
    elapsed = time.perf_counter() - started
    base = stats["float32"]
    base_rate = base["tokens"] / base["seconds"]
    mean_prompt = base["prompt_tokens"] / len(messages) / args.rounds
    print(f"\n{len(messages)} prompts (mean {mean_prompt:.0f} tokens) x {args.rounds} rounds, "
          f"greedy, up to {args.max_new_tokens} new tokens; "
          f"{'model.generate on the main thread' if args.direct else 'streaming generator'}; "
          f"torch threads {torch.get_num_threads()}; load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after; {elapsed:.0f} s")
    print(f"{'variant':22s} {'tok/s':>7s} {'decode':>7s} {'vs fp32':>8s} {'exact':>6s} "
          f"{'prefix':>7s}")
    report = {}
    for label in generators:
        s = stats[label]
        rate = s["tokens"] / s["seconds"]
        decode = s["decode_tokens"] / s["decode_seconds"] if s["decode_seconds"] else 0.0
        # --direct cannot split prompt from answer time: its decode column stays 0
        exact = sum(answers[label, i] == answers["float32", i] for i in range(len(messages)))
        prefix = sum(prefix_share(answers["float32", i], answers[label, i])
                     for i in range(len(messages))) / len(messages)
        report[label] = {"tokens_per_s": round(rate, 2), "decode_tokens_per_s": round(decode, 2),
                         "speedup": round(rate / base_rate, 2), "exact": exact,
                         "prefix_agreement": round(prefix, 3)}
        print(f"{label:22s} {rate:7.2f} {decode:7.2f} {rate / base_rate:7.2f}x "
              f"{exact:>3d}/{len(messages):<2d} {prefix:7.1%}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
