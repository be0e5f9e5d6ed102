"""The CUDA-only paths, each once, through the real CLI on a CUDA machine: bf16 training
(dpo, sft, sft+dpo), QLoRA (tests/gpu/qlora_smoke.py: bnb-nf4 and bnb-int8, then ask on the
full and on the quantized base), DeepSpeed ZeRO-2 and ZeRO-3 with CPU offload, FSDP. CI has
no GPU, so pytest never collects this (tests/gpu/conftest.py); run it by hand from the
repository root:

    OUT=/tmp/gpu-logs python tests/gpu/cuda_paths.py [bf16] [qlora] [zero] [fsdp]

with ragloop, bitsandbytes and deepspeed installed. Each step runs in its own workspace with
its own time limit and prints PASS/FAIL with the run record's facts; logs go to $OUT.
Random models are built from a config (tests/tiny_models.py): nothing comes from a hub. The
results of its runs so far are in docs/parallel.md."""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tiny_models
sys.path.insert(0, str(Path(__file__).resolve().parent))
from qlora_smoke import ragloop_command   # noqa: E402 - the CLI where no `ragloop` is on PATH
OUT = Path(os.environ.get("OUT", "/tmp/ragloop-gpu-logs"))
OUT.mkdir(parents=True, exist_ok=True)
WORK = Path("/tmp/gpuwork")
WORK.mkdir(exist_ok=True)
ONLY = set(sys.argv[1:])
results = []


def env():
    import torch, transformers, peft, trl, accelerate
    info = {"torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
            "transformers": transformers.__version__, "peft": peft.__version__,
            "trl": trl.__version__, "accelerate": accelerate.__version__}
    for name in ("bitsandbytes", "deepspeed"):
        try:
            info[name] = __import__(name).__version__
        except Exception as exc:          # noqa: BLE001 - reported, not fatal
            info[name] = f"import failed: {exc!r}"[:300]
    print("ENV", json.dumps(info), flush=True)


def ragloop(step, home, *args, limit=150):
    env_ = {**os.environ, "RAGLOOP_HOME": str(home)}
    t = time.time()
    try:
        p = subprocess.run([*ragloop_command(None), *args], capture_output=True, text=True,
                           timeout=limit, env=env_)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as exc:
        tail = f"{(exc.stdout or b'')[-3000:]!r}{(exc.stderr or b'')[-3000:]!r}"
        rc, out = 124, f"TIMEOUT after {limit}s\n{tail}"
    dt = time.time() - t
    (OUT / f"{step}.log").open("a").write(f"$ ragloop {' '.join(args)}\n{out}\n")
    return rc, out, dt


def record(step, ok, dt, facts):
    line = f"{'PASS' if ok else 'FAIL'} {step} {dt:.0f}s {facts}"
    results.append(line)
    print(line, flush=True)
    (OUT / "summary.txt").write_text("\n".join(results) + "\n")   # kept if the run is cut


def last_json(out):
    """The pretty-printed JSON object the command printed (notes may follow it)."""
    lines = out.splitlines()
    try:
        start = lines.index("{")
        end = lines.index("}", start)
        return json.loads("\n".join(lines[start:end + 1]))
    except ValueError:
        return {}


def train(step, data, model, *flags, limit=150):
    home = WORK / step
    rc, out, dt = ragloop(step, home, "train", "--data", str(data), "-o", f"model={model}",
                          "-o", "max_length=128", "--max-steps", "4", "--lr", "1e-4",
                          "--name", step, "--json", *flags, limit=limit)
    result = last_json(out)
    facts = {}
    if result.get("run_dir"):
        try:
            rec = json.loads((Path(result["run_dir"]) / "run.json").read_text())
            facts = {k: rec.get(k) for k in ("device", "precision", "backend", "compress")}
        except (OSError, ValueError) as exc:
            facts = {"record": repr(exc)}
        m = result.get("metrics") or {}
        facts.update({k: m[k] for k in m if "loss" in k or k in ("train_runtime", "global_step")})
    if not result:
        facts = {"rc": rc, "tail": out.strip().splitlines()[-3:] if out.strip() else ""}
    adapter = home / "adapters" / step
    ok = rc == 0 and adapter.is_dir()
    record(step, ok, dt, facts)
    return ok, home


def main():
    from tiny_models import make_tiny_causal_lm, make_tiny_embedder
    env()
    import torch
    tiny = make_tiny_causal_lm(WORK / "tiny")
    mid = make_tiny_causal_lm(WORK / "mid", hidden=576, layers=12)   # ~50M, SmolLM2-wide
    emb = make_tiny_embedder(WORK / "emb")
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny)
    rows = []
    for i in range(16):
        q = f"what is the capital of france {i}"
        p = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                    add_generation_prompt=True)
        rows.append({"prompt": p, "question": q, "chosen": f"paris {i}",
                     "rejected": f"london berlin {i}", "comparison_id": f"C{i}"})
    data = WORK / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sft = WORK / "sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": r["prompt"], "question": r["question"],
                                       "completion": r["chosen"]}) + "\n" for r in rows))

    want = lambda s: not ONLY or s in ONLY

    def qlora():
        # tests/gpu/qlora_smoke.py: train dpo with bnb-nf4 and bnb-int8, ask on the full and
        # on the quantized base, through the CLI
        t = time.time()
        try:
            smoke = Path(__file__).with_name("qlora_smoke.py")
            p = subprocess.run([sys.executable, str(smoke), str(WORK / "smoke"),
                                "--model", str(mid), "--embedder", str(emb)],
                               capture_output=True, text=True, timeout=400)
            rc, text = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired as exc:
            rc, text = 124, f"TIMEOUT {exc.stdout!r} {exc.stderr!r}"
        (OUT / "qlora-smoke.log").write_text(text)
        record("qlora-smoke", rc == 0, time.time() - t,
               [x for x in text.splitlines() if x.startswith(("PASS", "FAIL"))][-12:])

    def trainers():
        # one after another: the launched backends each take accelerate's default port
        if want("bf16"):
            train("bf16-dpo", data, mid)
        if want("zero"):
            train("zero3-offload", data, mid, "--backend", "deepspeed", "--zero", "3",
                  "--offload", limit=240)
        if want("fsdp"):
            train("fsdp", data, mid, "--backend", "accelerate", "--fsdp", "--processes", "1")
        if want("zero"):
            train("zero2", data, mid, "--backend", "deepspeed", "--zero", "2")
        if want("bf16"):
            train("bf16-sft", sft, mid, "--method", "sft")
            train("bf16-sft-dpo", data, mid, "--method", "sft+dpo")

    side = threading.Thread(target=qlora) if want("qlora") else None
    if side:
        side.start()
    trainers()
    if side:
        side.join()
    print("\nSUMMARY", flush=True)
    print("\n".join(results), flush=True)
    (OUT / "summary.txt").write_text("\n".join(results) + "\n")


if __name__ == "__main__":
    main()
