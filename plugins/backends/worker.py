"""One training process under `accelerate launch`:
`python -m ragloop.plugins.backends.worker RUN_DIR [--resume-from CHECKPOINT]`.

Rebuilds the job from the run folder that run_training wrote (run.json and the rows) and
runs the method; rank 0 appends the job's events to worker-events.jsonl and writes the
metrics to worker-result.json for the launching process (see launch.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# faiss and torch each bring an OpenMP runtime and faiss can hang in these children; the
# job's rows are already in the run folder, so an import of faiss here is a bug: fail fast.
sys.modules.setdefault("faiss", None)


def rebuild_job(run_dir: Path, resume_from: str | None = None):
    from ragloop.core import (
        TrainingData,
        TrainingJob,
        TrainSettings,
        read_record,
        read_rows,
        registry,
    )

    record = read_record(run_dir)
    cls = registry.get_training_method(record["method"])
    lineage = record["data"]
    data = TrainingData(lineage["kind"], read_rows(run_dir / "rows.jsonl"), lineage["source"])
    data.train, data.eval = read_rows(run_dir / "train.jsonl"), read_rows(run_dir / "eval.jsonl")
    job = TrainingJob(record["id"], record["name"], record["method"], record["backend"],
                      cls.Config(**record["options"]), TrainSettings(**record["settings"]),
                      record["base_model"], record["base_model_id"], data, run_dir,
                      record["device"], record["precision"], resume_from=resume_from,
                      model=record.get("model"))
    return cls(job.options), job


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_dir = Path(argv[0])
    resume = argv[argv.index("--resume-from") + 1] if "--resume-from" in argv else None
    import datasets.arrow_dataset

    from ragloop.plugins.backends.launch import CACHE, EVENTS, RESULT
    # Rows are in-memory datasets, whose cache files go to a private temp folder per process;
    # TRL's DPO writes the reference log-probs on rank 0 and the other ranks read that file,
    # so every rank must use one folder.
    shared = run_dir / CACHE
    shared.mkdir(exist_ok=True)
    datasets.arrow_dataset.get_temporary_cache_files_directory = lambda: str(shared)
    method, job = rebuild_job(run_dir, resume)
    if getattr(job.options, "precompute_ref_log_probs", False) is None:
        # "auto" means on for CPU, but TRL's precompute hands rank 0's cache file to the
        # other ranks through the datasets cache, which is not shared between processes
        # here; the reference forward at each step gives the same loss.
        job.options.precompute_ref_log_probs = False
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if rank0:
        events = open(run_dir / EVENTS, "a", encoding="utf-8")

        def write(event: dict) -> None:
            events.write(json.dumps(event, default=str) + "\n")
            events.flush()
        job.listeners.append(write)
    metrics = method.train(job)
    from accelerate.state import PartialState
    # What accelerate actually ran (MULTI_CPU, FSDP, DEEPSPEED, ...), for the run record.
    metrics["distributed_type"] = PartialState().distributed_type.value
    if rank0:
        events.close()
        (run_dir / RESULT).write_text(json.dumps(metrics, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
