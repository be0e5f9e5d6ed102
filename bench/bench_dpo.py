"""`ragloop train --method dpo` against plain TRL DPOTrainer scripts, on the same pairs.

    python bench/bench_dpo.py [--pairs 24] [--steps 12] [--default-steps 2] [--home DIR]

Pairs from examples/questions.jsonl: the prompt is core.prompt.make_messages (one passage:
the start of the question's source file) rendered by the generator; chosen = the expected
answer, rejected = another question's answer. SmolLM2-135M (the converted checkpoint),
LoRA r=8 alpha=16 on q/v, batch 2, lr 5e-5, seed 42, one epoch when steps*2 == pairs.
Each run is its own subprocess, back to back, so peak RSS (ru_maxrss) is per run:

- ragloop:     core.training (fp32 on CPU, reference log-probs precomputed, each pair's
               prompt run once for both answers: plugins/training/dpo_shared_prompt.py)
- trl-fp32:    DPOConfig defaults with bf16=False
- trl-default: DPOConfig defaults (bf16 autocast on: emulated on this CPU, so only
               --default-steps steps, ~90 s each)

Model FLOPs (N parameters, T tokens the model runs in a step): policy forward 2NT +
activation backward 2NT (LoRA: no weight gradients for frozen weights) + reference forward
2NT = 6NT per step whether the reference pass runs per step or once up front over the same
rows. TRL runs prompt + chosen and prompt + rejected (T counts the prompt twice); ragloop
runs prompt + chosen + rejected (once). MFU = 6NT summed over steps / wall s / 140 GFLOP/s:
the share of the machine each spends on the work it does, not a speed ratio. (Wall time, as
the reference pass runs before the train loop when precomputed.)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
CEILING = 140e9
LR, BATCH, R = 5e-5, 2, 8


def build_pairs(n: int, home: Path) -> tuple[list[dict], str]:
    from ragloop.core.pipeline.ask import load_generator
    from ragloop.core.pipeline.prompt import make_messages
    from ragloop.core.workspace import Workspace
    gen = load_generator(Workspace(home))
    rows = [json.loads(line) for line in (REPO / "examples/questions.jsonl").read_text().splitlines()]
    rows = rows[:n]
    pairs = []
    for i, row in enumerate(rows):
        source = (REPO / "examples/corpus" / row["source"]).read_text(encoding="utf-8")
        hit = SimpleNamespace(text=" ".join(source.split())[:600])
        prompt = gen.render(make_messages(row["question"], [hit]))
        wrong = rows[(i + 7) % len(rows)]["answer"]
        pairs.append({"prompt": prompt, "chosen": row["answer"], "rejected": wrong})
    return pairs, gen.checkpoint()


def child(mode: str, data: Path, model: str, steps: int, out: Path, options: list[str]) -> None:
    import logging
    logging.disable(logging.WARNING)
    started = time.perf_counter()
    if mode == "ragloop":
        from ragloop.core.pipeline.training import TrainSettings, prepare_training, run_training
        from ragloop.core.workspace import Workspace
        ws = Workspace(out / "ws")
        job = prepare_training(ws, method="dpo", data=data, model=model, name="bench", options=options,
                               settings=TrainSettings(max_steps=steps, batch_size=BATCH,
                                                      learning_rate=LR, lora_r=R, save_steps=10**6))
        result = run_training(ws, job)
        history, runtime = result.record["log_history"], result.metrics.get("train_runtime")
    else:
        import torch
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import DPOConfig, DPOTrainer
        rows = [json.loads(line) for line in data.read_text().splitlines()]
        tok = AutoTokenizer.from_pretrained(model)
        # On a CPU, transformers refuses TRL's default bf16 unless use_cpu is set: that is the
        # least a user must add to run the defaults here (NOTES.md: bf16 is emulated, ~14x slower).
        extra = ({"bf16": False, "fp16": False} if mode == "trl-fp32" else {}) | (
            {"use_cpu": True} if not torch.cuda.is_available() else {})
        args = DPOConfig(output_dir=str(out / "trl"), per_device_train_batch_size=BATCH,
                         max_steps=steps, learning_rate=LR, logging_steps=1, save_strategy="no",
                         report_to="none", disable_tqdm=True, seed=42, **extra)
        trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
                             args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             peft_config=LoraConfig(r=R, lora_alpha=2 * R, lora_dropout=0.05,
                                                    target_modules=["q_proj", "v_proj"],
                                                    task_type="CAUSAL_LM"))
        output = trainer.train()
        history, runtime = trainer.state.log_history, output.metrics.get("train_runtime")
    wall = time.perf_counter() - started
    print(json.dumps({"mode": mode, "wall": wall, "train_runtime": runtime, "steps": steps,
                      "losses": [e["loss"] for e in history if "loss" in e],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def tokens_per_step(pairs: list[dict], model: str, steps: int, shared: bool) -> list[int]:
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model)
    n = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    # +1 per answer: the EOS token the trainers add
    per_row = [n(p["prompt"]) * (1 if shared else 2) + n(p["chosen"]) + n(p["rejected"]) + 2
               for p in pairs]
    # The trainers shuffle with seed 42; the token total of a full epoch does not depend on it.
    return [sum(per_row[(s * BATCH + i) % len(per_row)] for i in range(BATCH)) for s in range(steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--default-steps", type=int, default=2)
    parser.add_argument("--home", type=Path, help="workspace holding the converted model")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a `ragloop train -o` option for the ragloop run (repeatable)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        return child(a.child, a.data, a.model, a.steps, a.out, a.option)
    from _common import temp_folder
    tmp = temp_folder("bench-dpo-")          # removed at exit
    pairs, model = build_pairs(a.pairs, a.home or tmp / "home")
    data = tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    from transformers import AutoModelForCausalLM
    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model).parameters())
    results = {}
    for mode, steps in (("ragloop", a.steps), ("trl-fp32", a.steps), ("trl-default", a.default_steps)):
        if steps < 1:
            continue
        proc = subprocess.run([sys.executable, __file__, "--child", mode, "--data", str(data),
                               "--model", model, "--steps", str(steps), "--out", str(tmp / mode),
                               *(f"-o{o}" for o in a.option)],
                              capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        flops = sum(6 * n_params * t for t in tokens_per_step(
            pairs, model, steps, mode == "ragloop" and "share_prompts=false" not in a.option))
        r.update(samples_s=steps * BATCH / r["wall"], mfu=flops / r["wall"] / CEILING)
        results[mode] = r
        print(f"{mode:12s} {steps:3d} steps  wall {r['wall']:7.1f}s  train {r['train_runtime'] or 0:7.1f}s  "
              f"{r['samples_s']:.3f} samples/s  peak RSS {r['peak_rss_mb']:.0f} MB  "
              f"MFU {r['mfu']:.1%}", flush=True)
    base = results["ragloop"]
    for other in ("trl-fp32", "trl-default"):
        if other in results:
            o = results[other]
            print(f"ragloop vs {other}: {base['samples_s'] / o['samples_s']:.2f}x samples/s, "
                  f"{base['peak_rss_mb'] / o['peak_rss_mb']:.2f}x peak RSS")
    print("\nstep  " + "  ".join(f"{m:>11s}" for m in results))
    for i in range(max(len(r["losses"]) for r in results.values())):
        print(f"{i + 1:4d}  " + "  ".join(f"{r['losses'][i]:11.4f}" if i < len(r["losses"])
                                           else " " * 11 for r in results.values()))
    print(f"\nN = {n_params / 1e6:.1f}M parameters; MFU = 6*N*tokens per step / wall s / 140 GFLOP/s")


if __name__ == "__main__":
    main()
