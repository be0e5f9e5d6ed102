"""QLoRA on a CUDA machine, end to end through the `ragloop` command: train a LoRA adapter on
a base bitsandbytes quantizes as it loads, then answer with it on the full-precision base and
on the quantized one. Prints one PASS/FAIL line per check and exits 0 only if all pass.

Not a pytest module (CI has no GPU; tests/gpu/conftest.py keeps pytest away from it). Run it
on a machine with CUDA, bitsandbytes and ragloop installed:

    python tests/gpu/qlora_smoke.py WORKSPACE [--model DIR] [--embedder DIR]
                                    [--compress bnb-nf4,bnb-int8] [--ragloop CMD]

WORKSPACE is a new or empty folder (the ragloop home the commands use). Without --model or
--embedder it builds the tiny random models of tests/tiny_models.py inside WORKSPACE: nothing
is fetched from a hub. Each compressor trains `dpo` for 3 steps (bnb-int8 with gradient
checkpointing on, to cover that path too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
RESULTS: list[tuple[bool, str]] = []
DOC = ("The zebrafish tool reads its settings from zebra.toml in the project folder. "
       "Set max_widgets to limit how many widgets each flurble may hold. ")


def report(ok: bool, what: str, detail: str = "") -> bool:
    RESULTS.append((ok, what))
    print(f"{'PASS' if ok else 'FAIL'}: {what}" + (f" ({detail})" if detail else ""), flush=True)
    return ok


def ragloop_command(given: str | None) -> list[str]:
    if given:
        return shlex.split(given)
    beside = Path(sys.executable).with_name("ragloop")
    if beside.exists():
        return [str(beside)]
    if shutil.which("ragloop"):
        return ["ragloop"]
    return [sys.executable, "-c", "import sys; from ragloop.core.cli import main; "
                                  "sys.argv[0] = 'ragloop'; main()"]


def ragloop(cmd: list[str], home: Path, *args) -> subprocess.CompletedProcess:
    argv = [*cmd, "--home", str(home), *[str(a) for a in args]]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    seconds = time.perf_counter() - started
    print(f"  $ ragloop {' '.join(shlex.quote(str(a)) for a in args)}  "
          f"[exit {done.returncode}, {seconds:.1f}s]", flush=True)
    if done.returncode != 0:
        print("  stderr tail: " + "\n  ".join(done.stderr.strip().splitlines()[-15:]), flush=True)
    return done


def environment() -> bool:
    import torch
    if not report(torch.cuda.is_available(), "CUDA is available",
                  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"):
        return False
    try:
        import bitsandbytes
    except ImportError as exc:
        return report(False, "bitsandbytes imports", str(exc))
    return report(True, "bitsandbytes imports", bitsandbytes.__version__)


def models(work: Path, model: str | None, embedder: str | None) -> tuple[str, str]:
    sys.path.insert(0, str(TESTS))
    from tiny_models import make_tiny_causal_lm, make_tiny_embedder
    # hidden 64: every Linear's input width fills whole 64-value quantization blocks.
    model = model or str(make_tiny_causal_lm(work / "models" / "tiny-lm", hidden=64))
    embedder = embedder or str(make_tiny_embedder(work / "models" / "tiny-embedder"))
    return model, embedder


def pairs(path: Path, model: str) -> Path:
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model)
    rows = []
    for i in range(8):
        question = f"where does the zebrafish tool read its settings {i}"
        prompt = tok.apply_chat_template([{"role": "user", "content": question}],
                                         tokenize=False, add_generation_prompt=True)
        rows.append({"prompt": prompt, "question": question, "chosen": f"zebra.toml [1] {i}",
                     "rejected": f"london berlin {i}", "comparison_id": f"C{i}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def train(cmd, home: Path, data: Path, model: str, compress: str) -> str | None:
    name = f"smoke-{compress}"
    extra = ["-o", "gradient_checkpointing=true"] if compress == "bnb-int8" else []
    done = ragloop(cmd, home, "train", "--method", "dpo", "--compress", compress,
                   "--max-steps", "3", "--save-steps", "2", "--lr", "1e-3", "--model", model,
                   "--data", data, "--name", name, "-o", "max_length=64", *extra, "--json")
    if not report(done.returncode == 0, f"train --compress {compress} exits 0"):
        return None
    result = json.loads(done.stdout)
    record = json.loads((Path(result["run_dir"]) / "run.json").read_text(encoding="utf-8"))
    losses = [e["loss"] for e in record.get("log_history", []) if "loss" in e]
    report(record.get("device") == "cuda" and record.get("compress") == compress,
           f"{compress}: run record says device cuda and compress {compress}",
           f"device={record.get('device')} compress={record.get('compress')} "
           f"precision={record.get('precision')}")
    report(len(losses) == 3 and all(math.isfinite(x) for x in losses),
           f"{compress}: 3 finite losses logged", f"losses={losses}")
    folder = Path(result["adapter_dir"])
    meta = json.loads((folder / "ragloop-adapter.json").read_text(encoding="utf-8"))
    report(meta.get("compress") == compress and meta.get("kind") == "lora",
           f"{compress}: adapter metadata records compress and kind lora")
    from safetensors.torch import load_file
    weights = load_file(str(folder / "adapter_model.safetensors"))
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    moved = max((float(w.float().abs().max()) for w in lora_b), default=0.0)
    report(bool(lora_b) and moved > 0, f"{compress}: LoRA B weights moved from zero",
           f"{len(lora_b)} tensors, max |B| {moved:.2e}, dtypes "
           f"{sorted({str(w.dtype) for w in lora_b})}")
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    print(f"  adapter targets {config.get('target_modules')}, notes: {record.get('notes')}")
    return name


def ask(cmd, home: Path, model: str, adapter: str, compress: str | None) -> None:
    extra = ["--compress", compress] if compress else []
    label = f"ask --adapter {adapter}" + (f" --compress {compress}" if compress else "")
    done = ragloop(cmd, home, "ask", "where are the zebrafish settings?", "-o", f"model={model}",
                   "--adapter", adapter, *extra, "--max-new-tokens", "6", "-k", "2", "--json")
    if not report(done.returncode == 0, f"{label} exits 0"):
        return
    out = json.loads(done.stdout)
    report(bool(out.get("adapter")) and isinstance(out.get("answer"), str),
           f"{label}: answered with the adapter", f"answer={out.get('answer')!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", type=Path, help="new or empty folder for the run")
    parser.add_argument("--model", help="tiny causal LM folder (default: build one)")
    parser.add_argument("--embedder", help="tiny sentence-transformers folder (default: build one)")
    parser.add_argument("--compress", default="bnb-nf4,bnb-int8",
                        help="compressors to train with, comma-separated")
    parser.add_argument("--ragloop", help="command that runs ragloop (default: the installed one)")
    args = parser.parse_args()
    work = args.workspace.resolve()
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    if home.exists() and any(home.iterdir()):
        print(f"FAIL: {home} is not empty; give a new workspace folder")
        return 2
    if not environment():
        return 1
    cmd = ragloop_command(args.ragloop)
    model, embedder = models(work, args.model, args.embedder)
    docs = work / "docs"
    docs.mkdir(exist_ok=True)
    for i in range(3):
        (docs / f"doc{i}.md").write_text(f"# Part {i}\n\n" + DOC * 3, encoding="utf-8")
    done = ragloop(cmd, home, "index", docs, "-o", f"embedder.model={embedder}")
    report(done.returncode == 0, "index the smoke documents")
    data = pairs(work / "pairs.jsonl", model)
    for compress in [c.strip() for c in args.compress.split(",") if c.strip()]:
        name = train(cmd, home, data, model, compress)
        if name and done.returncode == 0:
            ask(cmd, home, model, name, None)           # the full-precision base
            ask(cmd, home, model, name, compress)       # the quantized base
    failed = [what for ok, what in RESULTS if not ok]
    print(f"{'PASS' if not failed else 'FAIL'}: {len(RESULTS) - len(failed)}/{len(RESULTS)} "
          f"checks passed" + (f"; failed: {'; '.join(failed)}" if failed else ""))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
