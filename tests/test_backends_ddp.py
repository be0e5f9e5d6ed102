"""DPO under `--backend accelerate --processes 2` (DDP over gloo on CPU) against one process
with the same global batch: per-device batch 1 × 2 processes vs batch 2 × 1 process, same
seed, and the same data order (accelerate's seeded sampler hands batch i of each group of
two to rank i, so both runs see the same two rows per step). LoRA dropout is off, so the
runs differ only in where the arithmetic happens."""

import json
import math
import time
from pathlib import Path

import pytest
from test_train import run, tiny, write

STEPS = 3


def losses(data, *flags):
    started = time.perf_counter()
    out = run("train", "--method", "dpo", "--data", data, "--max-steps", STEPS, "--lr", "1e-3",
              "-o", "max_length=64", "-o", "lora_dropout=0", *tiny(), "--json", *flags).stdout
    result = json.loads(out)
    record = json.loads((Path(result["run_dir"]) / "run.json").read_text())
    return ([e["loss"] for e in record["log_history"] if "loss" in e], record,
            time.perf_counter() - started)


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, ragloop_home):
    data = write(tmp_path / "pairs.jsonl", "pairs", 8)
    single, _, t1 = losses(data, "--batch-size", "2")
    double, record, t2 = losses(data, "--batch-size", "1", "--backend", "accelerate",
                                "--processes", "2")
    print(f"1 process: {single} ({t1:.1f}s); 2 processes: {double} ({t2:.1f}s)")
    assert record["backend"] == "accelerate" and record["status"] == "succeeded"
    assert record["metrics"]["distributed_type"] == "MULTI_CPU"
    assert len(single) == len(double) == STEPS
    assert all(math.isfinite(x) for x in double)
    assert single[-1] < single[0]                       # it did learn something
    for a, b in zip(single, double):
        assert abs(a - b) < 1e-3, (single, double)
    folder = Path(record["adapter"]["path"])
    assert (folder / "adapter_model.safetensors").exists()
    assert not (folder / "training_args.bin").exists()
