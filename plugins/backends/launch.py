"""Multi-process training: accelerate and DeepSpeed configs, their checks, and the launch.

    opts = ParallelOptions(processes=2, fsdp=False, zero=None, offload=False)
    check_processes(n)                       # more processes than cores: RagloopError
    config = accelerate_config(opts, cpu)    # the dict `accelerate launch --config_file` reads
    validate_accelerate_config(config)       # also used on examples/accelerate/*.yaml
    ds = deepspeed_config(stage, offload)    # validate_deepspeed_config(ds)
    metrics = launch(job, config, cpu)       # runs the worker module in each process

`ragloop train` hands its --processes/--fsdp/--zero/--offload to the backend's
`configure(job, flags)`; the backends here (subclasses of LaunchedBackend) keep them on the
job as ParallelOptions, read back with `parallel_options(job)`. The worker processes
rebuild the job from the run folder (run.json and the rows), so nothing but paths crosses
the process boundary, and they never open the workspace or its FAISS index: faiss and
torch each bring their own OpenMP runtime, and faiss in a forked child can hang.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ragloop.core import RagloopError, TrainingBackend
from ragloop.plugins.backends.device import pick_device

EVENTS = "worker-events.jsonl"     # rank 0's job events, tailed by the launching process
RESULT = "worker-result.json"      # rank 0's metrics
LOG = "worker.log"                 # every process's stdout and stderr
CONFIG = "accelerate.yaml"
CACHE = "worker-datasets"          # the workers' shared datasets cache

DISTRIBUTED_TYPES = ("NO", "MULTI_GPU", "MULTI_CPU", "FSDP", "DEEPSPEED")
FSDP_KEYS = {"fsdp_version", "fsdp_sharding_strategy", "fsdp_auto_wrap_policy",
             "fsdp_transformer_layer_cls_to_wrap", "fsdp_state_dict_type", "fsdp_offload_params",
             "fsdp_cpu_ram_efficient_loading", "fsdp_sync_module_states", "fsdp_use_orig_params",
             "fsdp_backward_prefetch", "fsdp_forward_prefetch", "fsdp_reshard_after_forward",
             "fsdp_activation_checkpointing", "fsdp_min_num_params"}
DS_KEYS = {"zero_stage", "offload_optimizer_device", "offload_param_device", "zero3_init_flag",
           "zero3_save_16bit_model", "gradient_accumulation_steps", "gradient_clipping",
           "deepspeed_config_file", "deepspeed_multinode_launcher"}


@dataclass
class ParallelOptions:
    processes: int = 1
    fsdp: bool = False
    zero: int | None = None          # DeepSpeed ZeRO stage (2 or 3)
    offload: bool = False            # ZeRO: optimizer state and parameters in CPU memory


def options_from(flags: dict) -> ParallelOptions:
    """ParallelOptions from `ragloop train`'s flags as given (`zero` is "2", "3" or None)."""
    zero = flags.get("zero")
    return ParallelOptions(flags.get("processes", 1), bool(flags.get("fsdp")),
                           int(zero) if zero else None, bool(flags.get("offload")))


def set_parallel_options(job, options: ParallelOptions) -> None:
    job.parallel = options


def parallel_options(job) -> ParallelOptions:
    return job.parallel or ParallelOptions()


class LaunchedBackend(TrainingBackend):
    """What the multi-process backends share: CUDA when there is one, and the launch flags
    kept on the job for their `check` and `run`."""

    def pick_device(self) -> tuple[str, str]:
        return pick_device()

    def configure(self, job, flags: dict) -> None:
        set_parallel_options(job, options_from(flags))


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                  # not on Linux
        return os.cpu_count() or 1


def check_processes(n: int, cuda_devices: int = 0) -> None:
    if n < 1:
        raise RagloopError(f"--processes must be at least 1, not {n}")
    have, what = (cuda_devices, "CUDA devices") if cuda_devices else (cores(), "CPU cores")
    if n > have:
        raise RagloopError(f"--processes {n} is more than this machine's {have} {what}; "
                           f"use --processes {have} or fewer")


# ---- configs ------------------------------------------------------------------------------

def accelerate_config(opts: ParallelOptions, cpu: bool, deepspeed: dict | None = None) -> dict:
    """The `accelerate launch` config for these options. On CPU the launcher still runs
    torchrun (distributed_type MULTI_GPU); the trainer's use_cpu makes accelerate pick
    MULTI_CPU with the gloo backend in each process."""
    config = {"compute_environment": "LOCAL_MACHINE", "num_machines": 1, "machine_rank": 0,
              "num_processes": opts.processes, "mixed_precision": "no", "use_cpu": False,
              "rdzv_backend": "static", "same_network": True, "main_training_function": "main",
              "debug": False,
              "distributed_type": "MULTI_GPU" if opts.processes > 1 else "NO"}
    if opts.fsdp:
        config["distributed_type"] = "FSDP"
        config["fsdp_config"] = {
            "fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_state_dict_type": "FULL_STATE_DICT", "fsdp_cpu_ram_efficient_loading": False,
            "fsdp_offload_params": opts.offload, "fsdp_reshard_after_forward": True}
    if deepspeed is not None:
        config["distributed_type"] = "DEEPSPEED"
        config["deepspeed_config"] = deepspeed
    validate_accelerate_config(config)
    return config


def validate_accelerate_config(config: dict, where: str = "accelerate config") -> dict:
    """Check the keys and values this project writes or ships; a RagloopError names the
    first problem. Also builds accelerate's own ClusterConfig from it when installed."""
    def bad(message):
        raise RagloopError(f"{where}: {message}")

    if not isinstance(config, dict):
        bad("must be a mapping")
    kind = config.get("distributed_type")
    if kind not in DISTRIBUTED_TYPES:
        bad(f"distributed_type {kind!r} is not one of {', '.join(DISTRIBUTED_TYPES)}")
    n = config.get("num_processes")
    if not isinstance(n, int) or n < 1:
        bad(f"num_processes must be a positive integer, not {n!r}")
    if kind == "MULTI_GPU" and n < 2:
        bad("MULTI_GPU needs num_processes of at least 2")
    if config.get("mixed_precision", "no") not in ("no", "fp16", "bf16"):
        bad(f"mixed_precision {config['mixed_precision']!r} is not no, fp16 or bf16")
    if kind == "FSDP":
        unknown = set(config.get("fsdp_config") or {}) - FSDP_KEYS
        if not config.get("fsdp_config") or unknown:
            bad(f"fsdp_config is missing or has unknown keys: {', '.join(sorted(unknown))}")
    if kind == "DEEPSPEED":
        ds = config.get("deepspeed_config") or {}
        unknown = set(ds) - DS_KEYS
        if unknown:
            bad(f"deepspeed_config has unknown keys: {', '.join(sorted(unknown))}")
        if "deepspeed_config_file" not in ds and ds.get("zero_stage") not in (0, 1, 2, 3):
            bad(f"deepspeed_config zero_stage must be 0-3, not {ds.get('zero_stage')!r}")
    try:
        from accelerate.commands.config.config_args import ClusterConfig
    except ImportError:
        return config
    try:
        ClusterConfig(**{k: v for k, v in config.items()
                         if k in ClusterConfig.__dataclass_fields__})
    except (TypeError, ValueError) as exc:
        bad(" ".join(str(exc).split())[:200])
    return config


def deepspeed_config(stage: int, offload: bool) -> dict:
    """accelerate's `deepspeed_config` section for ZeRO `stage`; gradient accumulation and
    clipping are left to the trainer's arguments ("auto" in DeepSpeed's own terms)."""
    if stage not in (2, 3):
        raise RagloopError(f"--zero must be 2 or 3, not {stage}")
    config = {"zero_stage": stage, "gradient_accumulation_steps": 1,
              "offload_optimizer_device": "cpu" if offload else "none",
              "offload_param_device": "cpu" if offload and stage == 3 else "none"}
    if stage == 3:
        config.update(zero3_init_flag=True, zero3_save_16bit_model=True)
    return config


# ---- launching ----------------------------------------------------------------------------

def worker_env(processes: int, cpu: bool) -> dict:
    env = dict(os.environ)
    # Two processes each running as many OpenMP threads as there are cores oversubscribe
    # the CPU several times over; split the cores between them.
    threads = str(max(1, cores() // processes))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1")
    if cpu:
        env.update(ACCELERATE_USE_CPU="true", CUDA_VISIBLE_DEVICES="")
    return env


def launch(job, config: dict, cpu: bool) -> dict:
    """Write the config into the run folder, run `accelerate launch` on the worker module,
    forward rank 0's events to the job's listeners, and return its metrics."""
    import yaml
    run_dir = Path(job.run_dir)
    config_path = run_dir / CONFIG
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    for name in (EVENTS, RESULT):
        (run_dir / name).unlink(missing_ok=True)
    n = config["num_processes"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path),
           "--num_cpu_threads_per_process", str(max(1, cores() // n)),
           "-m", "ragloop.plugins.backends.worker", str(run_dir)]
    if job.resume_from:
        cmd += ["--resume-from", str(job.resume_from)]
    with open(run_dir / LOG, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env=worker_env(n, cpu), start_new_session=True)
        try:
            seen = 0
            while proc.poll() is None:
                seen = _forward(job, run_dir / EVENTS, seen)
                time.sleep(0.5)
            _forward(job, run_dir / EVENTS, seen)
        except BaseException:
            # The whole group: torchrun and every worker it started.
            os.killpg(proc.pid, 15)
            proc.wait()
            raise
    result = run_dir / RESULT
    if proc.returncode != 0 or not result.exists():
        raise RagloopError(f"{n} training processes failed (exit {proc.returncode}): "
                           f"{_last_error(run_dir / LOG)}; full log: {run_dir / LOG}")
    shutil.rmtree(run_dir / CACHE, ignore_errors=True)
    # Only rank 0 saves, but every rank may race to delete the pickled arguments.
    (job.save_dir / "training_args.bin").unlink(missing_ok=True)
    return json.loads(result.read_text(encoding="utf-8"))


def _forward(job, path: Path, seen: int) -> int:
    if not path.exists():
        return seen
    lines = path.read_text(encoding="utf-8").splitlines()
    complete = lines if path.read_text(encoding="utf-8").endswith("\n") else lines[:-1]
    for line in complete[seen:]:
        event = json.loads(line)
        if event.get("event") != "end":        # run_training emits the real end
            job.emit(event.pop("event"), **event)
    return max(seen, len(complete))


def _last_error(log: Path) -> str:
    """The first worker exception in the log (the others are usually its echoes)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "no log"
    for line in lines:
        m = re.match(r"^(?:\[rank\d+\]: )?((?:[\w.]+)(?:Error|Exception): .*)$", line.strip())
        if m and "ChildFailedError" not in m.group(1):
            return m.group(1)[:300]
    return next((x.strip() for x in reversed(lines) if x.strip()), "no output")[:300]
