"""Run folders and running: <workspace>/runs/<run id>/ with run.json (the record), the rows
trained on, the trainer's checkpoints/ and loss.png; `run_training` fills one and registers
the adapter (see core.training for the job and the public API).

This module runs the `TrainingJob` that core.training prepares; it reads the job's fields
and never imports core.training, which imports it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from ragloop.core import registry
from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.adapters import read_metadata, save_adapter
from ragloop.core.workspace import atomic_write_bytes, utcnow

RECORD = "run.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Tests stop a training process dead (SIGKILL, nothing cleaned up) at a named point:
# "after-step-N", "after-checkpoint-N" or "after-adapter-saved".
KILL_AT = "RAGLOOP_KILL_AT"


def write_record(run_dir: Path, record: dict) -> None:
    atomic_write_bytes(Path(run_dir) / RECORD,
                       json.dumps(record, indent=2, default=str).encode())


def read_record(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RagloopError(f"{run_dir} is not a ragloop run folder (no readable {RECORD})") from None


def write_rows(path: Path, rows: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                     for r in rows).encode())


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def list_runs(ws) -> list[dict]:
    """Every run's record, oldest first (run ids sort by time). A "running" run whose
    process is gone shows as "killed" (see `mark_killed`)."""
    root = Path(ws.runs_dir)
    if not root.is_dir():
        return []
    records = []
    for folder in sorted(p for p in root.iterdir() if (p / RECORD).is_file()):
        try:
            record = read_record(folder)
        except RagloopError:
            continue
        if killed(record):
            record["status"] = "killed"
        records.append({**record, "path": str(folder)})
    return records


# ---- is the process that runs it still there? -------------------------------------------

def _start_stamp(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), so that a pid
    reused by another process is not taken for the run's; None where /proc has no entry."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]       # field 22, after the command name


def this_process() -> dict:
    pid = os.getpid()
    return {"pid": pid, "started": _start_stamp(pid), "host": socket.gethostname()}


def _alive(process: dict) -> bool:
    if process.get("host") != socket.gethostname():
        return True                          # another machine's process: cannot tell
    pid = process.get("pid")
    if not isinstance(pid, int):
        return True
    if process.get("started") is not None and Path("/proc/self/stat").exists():
        return _start_stamp(pid) == process["started"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True                          # exists, but belongs to someone else
    return True


def killed(record: dict) -> bool:
    """A run recorded as running whose process has ended without saying so (kill -9, power
    loss). Records from before processes were recorded cannot tell, and say no."""
    return (record.get("status") == "running" and isinstance(record.get("process"), dict)
            and not _alive(record["process"]))


def still_running(record: dict) -> bool:
    return (record.get("status") == "running" and isinstance(record.get("process"), dict)
            and _alive(record["process"]))


def mark_killed(run_dir: Path) -> dict:
    """Write "killed" into a run's record when its process is gone; returns the record."""
    record = read_record(run_dir)
    if killed(record):
        record.update(status="killed", finished_at=utcnow(),
                      error=f"the training process (pid {record['process']['pid']}) ended "
                            f"without finishing the record (killed, or the machine stopped)")
        write_record(run_dir, record)
    return record


def mark_all_killed(ws) -> None:
    for run in list_runs(ws):
        if run["status"] == "killed":
            try:
                mark_killed(Path(run["path"]))
            except (RagloopError, OSError):
                continue


def kill_point(name: str) -> None:
    """Stop this process with SIGKILL when the KILL_AT environment variable names `name`."""
    if os.environ.get(KILL_AT) == name:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _kill_listener(event: dict) -> None:
    if event["event"] in ("step", "save"):
        kill_point(f"after-{'checkpoint' if event['event'] == 'save' else 'step'}-{event['step']}")


def find_run(ws, run: str) -> Path:
    """A run folder from "latest" (the newest unfinished run), a run id, a run folder, or a
    checkpoint folder inside one."""
    if run == "latest":
        unfinished = [r for r in list_runs(ws) if r.get("status") != "succeeded"]
        if not unfinished:
            raise RagloopError("no unfinished run to resume; start one with `ragloop train`")
        return Path(unfinished[-1]["path"])
    path = Path(run).expanduser()
    if path.is_dir():
        for folder in (path, path.parent, path.parent.parent):
            if (folder / RECORD).is_file():
                return folder
        raise RagloopError(f"{path} is not a ragloop run folder or a checkpoint inside one")
    folder = Path(ws.runs_dir) / run
    if not (folder / RECORD).is_file():
        known = ", ".join(r["id"] for r in list_runs(ws)[-5:]) or "none yet"
        raise RagloopError(f"no run {run!r}; recent runs: {known}")
    return folder


def last_checkpoint(folder: Path) -> Path | None:
    """The highest-numbered complete checkpoint (the trainer writes trainer_state.json last)."""
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := _CHECKPOINT.match(p.name)) and (p / "trainer_state.json").is_file()]
    return max(found)[1] if found else None


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for dist in ("ragloop", "torch", "transformers", "trl", "peft", "accelerate", "datasets",
                 "bitsandbytes"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def plot_losses(history: list[dict], path: Path) -> Path | None:
    """Training (and held-out) loss by step, with the reward margin (or, for online methods,
    the mean reward) where the method logs one; None when there is nothing to draw or
    matplotlib is missing."""
    train = [(e["step"], e["loss"]) for e in history if "loss" in e and e.get("step")]
    evals = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
    margins = [(e["step"], e["rewards/margins"]) for e in history if "rewards/margins" in e]
    right_label = "reward margin"
    if not margins:
        margins = [(e["step"], e["reward"]) for e in history if "reward" in e and e.get("step")]
        right_label = "mean reward"
    if not train and not evals:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")            # files only: no display on servers
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    # A line needs two points: a one-step run would draw nothing without markers.
    if train:
        ax.plot(*zip(*train), "o-" if len(train) < 3 else "-", label="training loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if margins:
        right = ax.twinx()
        right.plot(*zip(*margins), "o-" if len(margins) < 3 else "-", color="tab:green",
                   alpha=0.6, label=right_label)
        right.set_ylabel(right_label)
        right.legend(loc="upper right")
    ax.legend(loc="upper left")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


@dataclass
class TrainResult:
    run_id: str
    run_dir: Path
    adapter: str
    adapter_dir: Path
    metrics: dict
    record: dict



# ---- running ------------------------------------------------------------------------------

def _record(job, **extra) -> dict:
    return {"id": job.run_id, "name": job.name, "method": job.method, "backend": job.backend,
            "options": asdict(job.options) if job.options is not None else {},
            "settings": asdict(job.settings), "seed": job.settings.seed,
            "model": job.model, "base_model": job.base_model, "base_model_id": job.base_model_id,
            "device": job.device, "precision": job.precision, "data": job.data.lineage(),
            "compress": job.compress, "versions": versions(), **extra}


def run_training(ws, job, listeners=()) -> TrainResult:
    """Run the job (a core.training.TrainingJob) to the end and register its adapter (see
    the module docstring)."""
    if job.adapter_saved:
        return _finish_saved(ws, job, listeners)
    backend = registry.get_training_backend(job.backend)(workspace=ws)
    method = registry.get_training_method(job.method)(job.options, workspace=ws)
    history: list[dict] = []
    job.listeners = [*listeners, *job.listeners,
                     lambda e: history.append({"step": e["step"], **e["logs"]})
                     if e["event"] == "log" else None]
    if os.environ.get(KILL_AT):
        job.listeners.append(_kill_listener)
    started, wall = utcnow(), time.perf_counter()
    if job.resume_from:
        record = read_record(job.run_dir)
        record["resumed"] = [*record.get("resumed", []), {"at": started,
                                                           "checkpoint": job.resume_from}]
        history[:0] = _checkpoint_history(job.resume_from) or record.get("log_history", [])
    else:
        mark_all_killed(ws)
        job.run_dir.mkdir(parents=True)
        write_rows(job.run_dir / "rows.jsonl", job.data.rows)
        write_rows(job.run_dir / "train.jsonl", job.data.train)
        write_rows(job.run_dir / "eval.jsonl", job.data.eval)
        record = _record(job, created_at=started)
    # Who runs it: a later look can tell a run that is still going from one that was killed.
    record.update(status="running", started_at=started, notes=job.notes, process=this_process())
    write_record(job.run_dir, record)
    shutil.rmtree(job.save_dir, ignore_errors=True)
    try:
        metrics = dict(backend.run(method, job) or {})
        if not job.save_dir.is_dir() or not any(job.save_dir.iterdir()):
            raise RagloopError(f"method {job.method} saved nothing into {job.save_dir}")
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        record.update(status=status, error=" ".join(str(exc).split())[:500] or type(exc).__name__,
                      log_history=_dedupe(history), finished_at=utcnow())
        write_record(job.run_dir, record)
        if isinstance(exc, OSError):
            raise RagloopError(f"training stopped ({exc.strerror or exc}); no adapter was saved; "
                               f"`ragloop train --resume {job.run_id}` continues from the last "
                               f"checkpoint") from None
        raise
    history = _dedupe(history)
    seconds = round(time.perf_counter() - wall, 2)
    metrics.update(_summary(history, metrics))
    lineage = job.data.lineage()
    meta = {"kind": "full" if job.settings.full else "lora", "method": job.method,
            "model": job.model, "base_model": job.base_model, "base_model_id": job.base_model_id,
            "run_id": job.run_id, "run_dir": str(job.run_dir),
            "dataset_hash": lineage["dataset_hash"], "lineage": lineage, "metrics": metrics,
            "settings": asdict(job.settings), "options": record["options"],
            "compress": job.compress}
    try:
        adapter_dir = save_adapter(ws, job.name, lambda tmp: shutil.copytree(
            job.save_dir, tmp, dirs_exist_ok=True), meta)
    except RagloopError as exc:
        record.update(status="failed", error=str(exc), log_history=history, finished_at=utcnow())
        write_record(job.run_dir, record)
        raise RagloopError(f"{exc.message}; the trained weights stay in the run folder: free "
                           f"some space and `ragloop train --resume {job.run_id}`") from None
    kill_point("after-adapter-saved")
    shutil.rmtree(job.save_dir, ignore_errors=True)
    png = plot_losses(history, job.run_dir / "loss.png")
    finished = utcnow()
    record.update(timings={"started_at": started, "finished_at": finished, "seconds": seconds,
                           "train_seconds": metrics.get("train_runtime"),
                           "seconds_per_step": metrics.get("seconds_per_step")})
    record.update(status="succeeded", finished_at=finished, metrics=metrics,
                  log_history=history, loss_curve=str(png) if png else None,
                  adapter={"name": job.name, "path": str(adapter_dir)})
    write_record(job.run_dir, record)
    job.emit("end")
    return TrainResult(job.run_id, job.run_dir, job.name, adapter_dir, metrics, record)


def _finish_saved(ws, job, listeners=()) -> TrainResult:
    """Complete the record of a run that saved its adapter but stopped before saying so:
    the adapter's own record holds the metrics, the last checkpoint the log."""
    adapter_dir = Path(ws.adapters_dir) / job.name
    meta = read_metadata(adapter_dir)
    record = read_record(job.run_dir)
    checkpoint = last_checkpoint(job.output_dir)
    history = _dedupe((_checkpoint_history(str(checkpoint)) if checkpoint else [])
                      or record.get("log_history", []))
    png = plot_losses(history, job.run_dir / "loss.png")
    record.pop("error", None)
    record.update(status="succeeded", finished_at=meta.get("created_at") or utcnow(),
                  metrics=meta.get("metrics") or {}, log_history=history,
                  loss_curve=str(png) if png else None,
                  adapter={"name": job.name, "path": str(adapter_dir)},
                  completed={"at": utcnow(), "note": "the adapter was saved before the run "
                                                     "stopped; `--resume` finished the record"})
    write_record(job.run_dir, record)
    shutil.rmtree(job.save_dir, ignore_errors=True)
    for listener in listeners:
        listener({"event": "end"})
    return TrainResult(job.run_id, job.run_dir, job.name, adapter_dir, record["metrics"], record)


def _checkpoint_history(checkpoint: str) -> list[dict]:
    """The logs up to a checkpoint (a run killed with -9 never wrote its own)."""
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [e for e in state.get("log_history", []) if isinstance(e, dict) and "step" in e]


def _dedupe(history: list[dict]) -> list[dict]:
    """One entry per (step, kind of log): a resumed run re-logs nothing before its checkpoint,
    but an interrupted one may have logged steps after it, which the resume repeats."""
    seen: dict = {}
    for entry in history:
        seen[(entry.get("step"), "eval_loss" in entry, "train_runtime" in entry)] = entry
    return sorted(seen.values(), key=lambda e: (e.get("step") or 0))


def _summary(history: list[dict], metrics: dict) -> dict:
    """First and final values from the log. With early stopping the adapter holds the kept
    (best) checkpoint's weights, so "final" means that step's values, not the last step's."""
    kept = metrics.get("kept_step")
    upto = [e for e in history if kept is None or (e.get("step") or 0) <= kept]
    losses = [e["loss"] for e in upto if "loss" in e]
    margins = [e["rewards/margins"] for e in upto if "rewards/margins" in e]
    evals = [e["eval_loss"] for e in upto if "eval_loss" in e]
    all_losses = [e["loss"] for e in history if "loss" in e]
    out = {"first_loss": all_losses[0] if all_losses else None,
           "final_loss": losses[-1] if losses else None}
    if kept is not None and all_losses:
        out["last_step_loss"] = all_losses[-1]
    if margins:
        out["final_reward_margin"] = margins[-1]
    if evals:
        every = [e["eval_loss"] for e in history if "eval_loss" in e]
        out["final_eval_loss"], out["best_eval_loss"] = evals[-1], min(every)
    runtime, steps = metrics.get("train_runtime"), metrics.get("steps_this_run")
    if runtime and steps:
        out["seconds_per_step"] = round(runtime / steps, 3)
    return out
