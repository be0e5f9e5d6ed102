"""`ragloop train --search N`: N training trials with hyper-parameters chosen by Optuna, the
one with the best held-out reward accuracy kept as the adapter.

    space = search_space(job, file=None, fixed=())       # what each trial may choose
    result = run_search(ws, job, trials=N, space=space, listeners=(), on_trial=None)

Optuna drives the trials itself (`study.optimize` calls our own training once per trial).
The Trainer's `hyperparameter_search` needs a `model_init` callable to build a fresh model
per trial, and TRL 1.16's DPOTrainer takes no `model_init` (it needs the model, and scores
the reference pass, in its constructor), so it cannot be used here.

Each trial trains the prepared job's rows (same held-out split for all) with its own
settings and method options, in `<run>/trials/trial-N/`; its held-out metrics come from the
method (`eval_rewards/accuracies` for dpo and sft+dpo: the method class's `search_metric`).
The best trial is the highest metric, ties to the lower held-out loss, then the earlier
trial. Each trial's checkpoints are removed when it ends (a search is not resumed), the
trials and their metrics are written to `<run>/search.json` after each one, and the best
trial's adapter is registered as the run's (atomically, as `run_training` does). With the
same `--seed` the sampler (TPE, seeded) and every trial repeat exactly.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

from ragloop.core import registry
from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.adapters import save_adapter
from ragloop.core.pipeline.training_runs import (
    TrainResult,
    _dedupe,
    _record,
    _summary,
    mark_all_killed,
    plot_losses,
    this_process,
    write_record,
    write_rows,
)
from ragloop.core.workspace import atomic_write_bytes, utcnow

SEARCH_FILE = "search.json"
DEFAULT_EVAL_SPLIT = 0.2
# Settings a trial may vary (TrainSettings fields), beside any numeric method option.
SETTINGS = {"learning_rate": float, "max_steps": int, "batch_size": int, "grad_accum": int,
            "lora_r": int}


def metric_of(cls) -> str:
    """The held-out metric `--search` maximizes for method class `cls`, or a one-line error."""
    metric = getattr(cls, "search_metric", None)
    if not metric:
        able = [n for n in registry.names("training method")
                if getattr(registry.get_training_method(n), "search_metric", None)]
        raise RagloopError(f"--search needs a method that reports a held-out reward accuracy; "
                           f"{cls.name} does not (use one of: {', '.join(able)})")
    return metric


def steps_per_epoch(job) -> int:
    s = job.settings
    return max(1, math.ceil(len(job.data.train) / (s.batch_size * s.grad_accum)))


def default_space(job, fixed=()) -> dict:
    """lr 1e-5..1e-3 (log), beta 0.05..0.5 (log) where the method has one, and steps from
    one to four epochs of the training rows; a parameter given on the command line
    (`fixed`: --lr, --max-steps/--epochs, -o beta=...) is not searched."""
    space = {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
             "max_steps": {"low": steps_per_epoch(job), "high": 4 * steps_per_epoch(job)}}
    if hasattr(job.options, "beta"):
        space["beta"] = {"low": 0.05, "high": 0.5, "log": True}
    return {k: v for k, v in space.items() if k not in fixed}


def _kind(job, key: str):
    """int or float for a searchable key, or None."""
    if key in SETTINGS:
        return SETTINGS[key]
    names = {f.name for f in fields(job.options)} if job.options is not None else set()
    value = getattr(job.options, key, None) if key in names else None
    if isinstance(value, bool) or key not in names:
        return None
    return type(value) if isinstance(value, (int, float)) else str


def load_space(job, path: Path, fixed=()) -> dict:
    """A search space from a YAML or JSON mapping: KEY: {low, high, log}, KEY: [choices] or
    KEY: value (fixed), KEY a setting (learning_rate, max_steps, ...) or a method option."""
    import yaml
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RagloopError(f"cannot read --search-space {path} "
                           f"({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(loaded, dict) or not loaded:
        raise RagloopError(f"--search-space {path} must hold a mapping of parameter: range")
    space = {}
    for key, spec in loaded.items():
        key = str(key)
        kind = _kind(job, key)
        if kind is None:
            valid = [*SETTINGS, *(f.name for f in fields(job.options) if _kind(job, f.name))]
            raise RagloopError(f"--search-space {path}: {key!r} is not a setting or option "
                               f"of {job.method} that can be searched; valid: {', '.join(valid)}")
        if key in fixed:
            raise RagloopError(f"--search-space {path} searches {key}, which the command line "
                               f"also sets; drop one of them")
        if isinstance(spec, dict):
            bad = set(spec) - {"low", "high", "log"}
            ok = not bad and kind in (int, float) and {"low", "high"} <= set(spec)
            try:
                ok = ok and float(spec["low"]) <= float(spec["high"])
                ok = ok and (not spec.get("log") or float(spec["low"]) > 0)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise RagloopError(f"--search-space {path}: {key} needs numbers low <= high "
                                   f"(low > 0 with log: true), and no other keys")
        else:
            if isinstance(spec, list) and not spec:
                raise RagloopError(f"--search-space {path}: {key} lists no choices")
            spec = _typed(spec, kind, f"--search-space {path}: {key}")
        space[key] = spec
    return space


def _typed(spec, kind, where: str):
    """Choices or a fixed value as the key's type: YAML reads 1e-4 (no dot) as a string."""
    if kind not in (int, float):
        return spec
    try:
        if isinstance(spec, list):
            return [kind(float(v)) if kind is int else kind(v) for v in spec]
        return kind(float(spec)) if kind is int else kind(spec)
    except (TypeError, ValueError):
        raise RagloopError(f"{where} must be a number or a list of numbers, not {spec!r}") from None


def search_space(job, file: Path | None = None, fixed=()) -> dict:
    space = load_space(job, file, fixed) if file else default_space(job, fixed)
    if not space:
        raise RagloopError("nothing left to search: the command line fixes every default "
                           "parameter; give --search-space FILE")
    return space


def _suggest(trial, job, key: str, spec):
    kind = _kind(job, key)
    if isinstance(spec, dict):
        low, high, log = spec["low"], spec["high"], bool(spec.get("log"))
        if kind is int:
            return trial.suggest_int(key, int(low), int(high), log=log)
        return trial.suggest_float(key, float(low), float(high), log=log)
    if isinstance(spec, list):
        return trial.suggest_categorical(key, spec)
    return spec


def trial_job(job, params: dict, trial_dir: Path):
    """The job with this trial's settings and options, training into `trial_dir`."""
    settings = {k: v for k, v in params.items() if k in SETTINGS}
    options = {k: v for k, v in params.items() if k not in SETTINGS}
    if "max_steps" in settings:
        settings["epochs"] = None
    new_settings = replace(job.settings, **settings)
    try:
        new_options = replace(job.options, **options)
    except (TypeError, ValueError) as exc:
        raise RagloopError(f"trial options {options} do not fit {job.method} ({exc})") from None
    return replace(job, settings=new_settings, options=new_options, run_dir=trial_dir,
                   listeners=[], notes=[])


def _better(a: dict, b: dict | None) -> bool:
    if b is None:
        return True
    key = (a["value"], -(a["metrics"].get("eval_loss") or 0.0))
    return key > (b["value"], -(b["metrics"].get("eval_loss") or 0.0))


def run_search(ws, job, trials: int, space: dict, listeners=(), on_trial=None) -> TrainResult:
    """Run `trials` trials of the prepared `job` (see the module docstring). `on_trial(event,
    number, params, outcome)` hears "start" before and "end" after each trial."""
    try:
        import optuna
    except ImportError:
        raise RagloopError("--search needs Optuna; install the search extra: "
                           "pip install 'ragloop[search]'") from None
    if trials < 1:
        raise RagloopError(f"--search needs at least 1 trial, not {trials}")
    if not job.data.eval:
        raise RagloopError("--search chooses by held-out reward accuracy and needs held-out "
                           "pairs: give --eval-split above 0")
    cls = registry.get_training_method(job.method)
    metric = metric_of(cls)
    backend = registry.get_training_backend(job.backend)(workspace=ws)
    started, wall = utcnow(), time.perf_counter()
    mark_all_killed(ws)
    job.run_dir.mkdir(parents=True)
    write_rows(job.run_dir / "rows.jsonl", job.data.rows)
    write_rows(job.run_dir / "train.jsonl", job.data.train)
    write_rows(job.run_dir / "eval.jsonl", job.data.eval)
    search = {"trials_asked": trials, "metric": metric, "space": space, "sampler": "TPE",
              "seed": job.settings.seed, "trials": [], "best": None}
    record = _record(job, created_at=started, search=search)
    record.update(status="running", started_at=started, notes=job.notes, process=this_process())
    write_record(job.run_dir, record)
    done: list[dict] = []
    best: dict | None = None

    def save_search():
        search.update(trials=done, best=best["number"] if best else None)
        atomic_write_bytes(job.run_dir / SEARCH_FILE,
                           json.dumps(search, indent=2, default=str).encode())

    def objective(trial):
        nonlocal best
        best_job = None
        number = trial.number + 1
        params = {k: _suggest(trial, job, k, spec) for k, spec in space.items()}
        if on_trial:
            on_trial("start", number, params, None)
        trial_dir = job.run_dir / "trials" / f"trial-{number}"
        history: list[dict] = []
        entry = {"number": number, "params": params, "state": "failed"}
        clock = time.perf_counter()
        try:
            tried = trial_job(job, params, trial_dir)
            tried.listeners = [*listeners, lambda e: history.append(
                {"step": e["step"], **e["logs"]}) if e["event"] == "log" else None]
            method = cls(tried.options, workspace=ws)
            if hasattr(method, "check"):
                method.check(tried)
            metrics = dict(backend.run(method, tried) or {})
            value = metrics.get(metric)
            if value is None:
                raise RagloopError(f"trial {number} reported no {metric}")
            history = _dedupe(history)
            metrics.update(_summary(history, metrics))
            entry.update(state="complete", value=value, metrics=metrics, history=history)
            best_job = tried
        except RagloopError as exc:
            entry["error"] = str(exc)
            raise
        finally:
            entry["seconds"] = round(time.perf_counter() - clock, 2)
            shutil.rmtree(trial_dir / "checkpoints", ignore_errors=True)   # not resumed
            done.append(entry)
            if entry["state"] == "complete" and _better(entry, best):
                if best is not None:
                    shutil.rmtree(job.run_dir / "trials" / f"trial-{best['number']}",
                                  ignore_errors=True)
                best = {**entry, "job": best_job}
            else:
                shutil.rmtree(trial_dir, ignore_errors=True)
            save_search()
            if on_trial:
                on_trial("end", number, params, entry)
        return value

    optuna.logging.set_verbosity(optuna.logging.ERROR)   # we report trials
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=job.settings.seed))
    try:
        study.optimize(objective, n_trials=trials, catch=(RagloopError,))
        if best is None:
            errors = "; ".join(t.get("error", "?") for t in done)
            raise RagloopError(f"every one of the {trials} trials failed ({errors[:300]})")
        result = _register(ws, job, record, best, started, wall)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        record.update(status=status, finished_at=utcnow(),
                      error=" ".join(str(exc).split())[:500] or type(exc).__name__)
        write_record(job.run_dir, record)
        raise
    return result


def _register(ws, job, record, best, started, wall) -> TrainResult:
    """Save the best trial's weights as the run's adapter and finish the record."""
    trial_dir = job.run_dir / "trials" / f"trial-{best['number']}"
    final = trial_dir / "final"
    settings, options = best["job"].settings, best["job"].options
    metrics = {**best["metrics"], "search_trials": len(record["search"]["trials"]),
               "search_best_trial": best["number"]}
    lineage = job.data.lineage()
    meta = {"kind": "full" if job.settings.full else "lora", "method": job.method,
            "model": job.model, "base_model": job.base_model, "base_model_id": job.base_model_id,
            "run_id": job.run_id, "run_dir": str(job.run_dir),
            "dataset_hash": lineage["dataset_hash"], "lineage": lineage, "metrics": metrics,
            "settings": asdict(settings), "options": asdict(options), "compress": job.compress,
            "search": {"trial": best["number"], "params": best["params"],
                       "metric": record["search"]["metric"], "value": best["value"]}}
    adapter_dir = save_adapter(ws, job.name, lambda tmp: shutil.copytree(
        final, tmp, dirs_exist_ok=True), meta)
    shutil.rmtree(job.run_dir / "trials", ignore_errors=True)    # the best is the adapter now
    png = plot_losses(best["history"], job.run_dir / "loss.png")
    finished = utcnow()
    record.update(status="succeeded", finished_at=finished, metrics=metrics,
                  settings=asdict(settings), options=asdict(options),
                  log_history=best["history"], loss_curve=str(png) if png else None,
                  timings={"started_at": started, "finished_at": finished,
                           "seconds": round(time.perf_counter() - wall, 2)},
                  adapter={"name": job.name, "path": str(adapter_dir)})
    write_record(job.run_dir, record)
    job.emit("end")
    return TrainResult(job.run_id, job.run_dir, job.name, adapter_dir, metrics, record)
