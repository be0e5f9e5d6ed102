"""`ragloop train`: a LoRA adapter (or, with --full, a whole model) from the ratings."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path

import click
from click.core import ParameterSource

from ragloop.core.cli.app import cli, options_option, pass_workspace
from ragloop.core.cli.progress import progress_bar, stderr
from ragloop.core.errors import RagloopError

# Flags that are training settings (TrainSettings fields), by click parameter name.
SETTINGS = {"max_steps": "max_steps", "epochs": "epochs", "lr": "learning_rate",
            "batch_size": "batch_size", "grad_accum": "grad_accum", "lora_r": "lora_r",
            "full": "full", "eval_split": "eval_split", "early_stopping": "early_stopping",
            "seed": "seed", "save_steps": "save_steps"}
# Flags for the training backend (TrainingBackend.configure), by click parameter name.
LAUNCH_FLAGS = ("processes", "fsdp", "zero", "offload")


class TrainingProgress:
    """Progress on stderr fed job events: the set-up's phases (loading the model,
    tokenizing, scoring the rows with the base model), each with its own count where there
    is one and the time it has taken, then step/total with the loss (or reward) and the
    time left. A rich bar on a terminal, plain lines elsewhere (see cli.progress)."""

    def __init__(self, method: str, quiet: bool = False):
        self.label, self.quiet = f"Training {method}", quiet
        self.progress = self.task = self.phase = None
        self._stack = ExitStack()
        self.stats = ""

    def start(self) -> None:
        self.progress = self._stack.enter_context(progress_bar(self.quiet))
        self._show("preparing")

    def _show(self, phase: str, total=None, completed=0) -> None:
        """A task per phase, so each has its own count and elapsed time."""
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.phase = phase
        name = f"{self.label}: {phase}" if phase else self.label
        self.task = self.progress.add_task(name, total=total, completed=completed)

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if self.task is None:
            return
        if kind == "phase":
            if event["name"] != self.phase:
                self._show(event["name"], event.get("total"), event.get("completed", 0))
            else:
                self.progress.update(self.task, completed=event.get("completed", 0))
        elif kind == "begin":
            self._show("", event["max_steps"], event["step"])
        elif kind == "step":
            self.progress.update(self.task, completed=event["step"])
        elif kind == "log" and ("loss" in event["logs"] or "reward" in event["logs"]):
            self.progress.update(self.task, description=f"{self.label}  {stats(event['logs'])}")
        elif kind == "end":
            self.stop()

    def stop(self) -> None:
        self._stack.close()
        self.task = None


def stats(logs: dict) -> str:
    """One log entry in a few words: the mean reward for online methods (their loss is
    not a measure of progress), else the loss and any reward margin."""
    if "reward" in logs:
        return f"reward {logs['reward']:+.4f}"
    out = f"loss {logs['loss']:.4f}"
    if "rewards/margins" in logs:
        out += f"  margin {logs['rewards/margins']:+.3f}"
    return out


def outcome(m: dict) -> str:
    """What the run ended at, for the summary line."""
    if m.get("final_reward") is not None:
        first = m.get("first_reward")
        text = (f"reward {first:+.4f} -> {m['final_reward']:+.4f}" if first is not None
                else f"reward {m['final_reward']:+.4f}")
    elif m.get("final_loss") is not None:
        text = f"loss {m['first_loss']:.4f} -> {m['final_loss']:.4f}"
    else:
        text = "no loss logged"
    if m.get("kept_step") is not None:
        held = (f", held-out loss {m['final_eval_loss']:.4f}"
                if m.get("final_eval_loss") is not None else "")
        text += f" at the kept step {m['kept_step']}{held}"
    if m.get("eval_rewards/accuracies") is not None:
        text += f", held-out reward accuracy {m['eval_rewards/accuracies']:.3f}"
    return text


def _apply_config_file(ctx, path: str, params: dict) -> list[str]:
    """Fill flags not given on the command line from a YAML mapping; other keys are method
    options (-o on the command line wins). Returns those options as key=value pairs."""
    import yaml
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RagloopError(f"cannot read --config {path} ({' '.join(str(exc).split())[:200]})")
    if not isinstance(loaded, dict):
        raise RagloopError(f"--config {path} must hold a mapping of option: value")
    by_name = {p.name: p for p in ctx.command.params}
    options = []
    for key, value in loaded.items():
        name = str(key).replace("-", "_")
        if name in ("config", "resume", "as_json", "options"):
            raise RagloopError(f"--config {path}: {key!r} cannot be set from a config file")
        if name in by_name:
            if ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None):
                try:
                    params[name] = by_name[name].type_cast_value(ctx, value)
                except click.BadParameter as exc:
                    raise RagloopError(f"--config {path}: {key}: {exc.message}") from None
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = str(value).lower()
        options.append(f"{key}={value}")
    return options


def _configure_backend(ws, job, params) -> None:
    """Hand --processes/--fsdp/--zero/--offload, as given, to the job's backend, which keeps
    what it needs on the job and refuses what it cannot run before anything is written."""
    from ragloop.core.registry import get_training_backend
    backend = get_training_backend(job.backend)(workspace=ws)
    backend.configure(job, {name: params.pop(name) for name in LAUNCH_FLAGS})
    backend.check(job)


def _refuse_parallel_compress(compress: str, params: dict) -> None:
    """QLoRA here is one process on one GPU: the quantized base is placed on this process's
    device as it loads, which sharding and several processes would each have to redo."""
    flags = [f"--processes {params['processes']}"] if params["processes"] > 1 else []
    flags += [f"--{name}" for name in ("fsdp", "offload") if params[name]]
    flags += [f"--zero {params['zero']}"] if params["zero"] else []
    if flags:
        raise RagloopError(f"--compress {compress} trains on one GPU in one process; drop "
                           f"{', '.join(flags)}")


def run_reported(label: str, run, as_json: bool):
    """Run `run(progress_bar)` (a training or distillation run) under a progress bar. With
    --json print the result and return None; else return (result, seconds, loss summary)."""
    bar = TrainingProgress(label, quiet=as_json)
    started = time.perf_counter()
    bar.start()
    try:
        result = run(bar)
    finally:
        bar.stop()
    m = result.metrics
    if as_json:
        click.echo(json.dumps({"run_id": result.run_id, "run_dir": str(result.run_dir),
                               "adapter": result.adapter, "adapter_dir": str(result.adapter_dir),
                               "metrics": m}, indent=2, default=str))
        return None
    return result, time.perf_counter() - started, outcome(m)


@cli.command()
@click.option("--method", metavar="NAME", help="dpo, sft+dpo (DPO plus an SFT term on the "
              "chosen answers: small data), kto, orpo, sft, reward (a reward model), "
              "rlhf (online, needs -o reward_adapter=NAME) or a plugin's; default: from the "
              "data (pairs -> dpo, only good/bad answers -> kto).")
@click.option("--backend", default="local", show_default=True, help="Training backend plugin.")
@click.option("--processes", type=click.IntRange(1), default=1, show_default=True,
              help="Training processes (accelerate, deepspeed backends).")
@click.option("--fsdp", is_flag=True, help="Shard the model with FSDP (accelerate backend).")
@click.option("--zero", type=click.Choice(["2", "3"]), help="DeepSpeed ZeRO stage (deepspeed "
              "backend; default 2).")
@click.option("--offload", is_flag=True, help="ZeRO/FSDP: keep optimizer state and parameters "
              "in CPU memory.")
@click.option("--max-steps", type=click.IntRange(1), help="Optimizer steps (or use --epochs).")
@click.option("--epochs", type=click.FloatRange(0, min_open=True), help="Passes over the data "
              "(default 1).")
@click.option("--lr", type=click.FloatRange(0, min_open=True), help="Learning rate (default: "
              "the method's, e.g. 5e-5 for dpo).")
@click.option("--batch-size", type=click.IntRange(1), default=2, show_default=True)
@click.option("--grad-accum", type=click.IntRange(1), default=1, show_default=True,
              help="Batches per optimizer step.")
@click.option("--lora-r", type=click.IntRange(1), default=8, show_default=True,
              help="LoRA rank (alpha = 2r).")
@click.option("--full", is_flag=True, help="Train every weight instead of a LoRA adapter.")
@click.option("--compress", metavar="NAME", help="Load the base quantized by this compressor "
              "and train LoRA on it (QLoRA): bnb-nf4 or bnb-int8; needs CUDA and "
              "bitsandbytes, one GPU, the local backend (see docs/training.md).")
@click.option("--eval-split", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True, help="Share of rows held out for evaluation.")
@click.option("--early-stopping", type=click.IntRange(1), metavar="N", help="Stop after N "
              "evaluations without a better held-out loss (implies --eval-split 0.1).")
@options_option
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML file of these options (flags given here win).")
@click.option("--resume", is_flag=False, flag_value="latest", default=None, metavar="[RUN]",
              help="Continue an interrupted run (default: the latest) from its last checkpoint.")
@click.option("--name", help="Adapter name (default: METHOD-DATE-TIME).")
@click.option("--data", type=click.Path(path_type=Path), help="Train on this JSONL file or "
              "datasets folder (the `prefs export` formats) instead of the ratings.")
@click.option("--rater", "rater", metavar="ID", help="Only this rater id's ratings.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), metavar="X",
              help="Only items where at least this share of raters agree.")
@click.option("--filter", "filters", multiple=True, metavar="NAME",
              help="Data filter for the training rows, repeatable, applied in order before "
                   "the held-out split (see docs/filters.md).")
@click.option("--filter-option", "filter_options", multiple=True, metavar="NAME.KEY=VALUE",
              help="Option for a filter in the chain, repeatable.")
@click.option("--search", "search", type=click.IntRange(1), metavar="N", help="Hyper-parameter "
              "search: N trials (Optuna, the search extra) choosing lr, beta and steps by "
              "held-out reward accuracy; the best trial's adapter is kept (default "
              "--eval-split 0.2).")
@click.option("--search-space", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="YAML/JSON ranges for --search (KEY: {low, high, log} or "
                                   "[choices]); default: lr, beta, 1-4 epochs of steps.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--save-steps", type=click.IntRange(1), default=50, show_default=True,
              help="Write a checkpoint every N steps.")
@click.option("--model", help="Base model folder or hub id (default: the generator's).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@pass_workspace
def train(ws, ctx, config_file, options, resume, as_json, **params):
    """Train an adapter on your ratings.

    Builds training rows from the workspace's ratings (or --data), trains the method with
    LoRA, and saves the adapter under the workspace's adapters/ with its lineage. The run
    folder (runs/RUN) keeps the record, checkpoints and a loss curve.
    """
    from ragloop.core.pipeline.training import (
        TrainSettings,
        prepare_resume,
        prepare_training,
        run_training,
    )
    if config_file:
        options = (*_apply_config_file(ctx, config_file, params), *options)
    given = {k for k in params if ctx.get_parameter_source(k) not in
             (ParameterSource.DEFAULT, None)}
    settings = {SETTINGS[k]: params[k] for k in SETTINGS}
    compress = params.pop("compress")
    if compress:
        _refuse_parallel_compress(compress, params)
    trials, space_file = params.pop("search"), params.pop("search_space")
    if space_file and not trials:
        raise RagloopError("--search-space sets the ranges of --search N; give --search too")
    if trials:
        _check_search(resume, params, given, settings)
    if resume:
        if (options or params["data"] or params["rater"] or params["name"]
                or params["min_agreement"] is not None or params["filters"]):
            raise RagloopError("--resume continues a run with its own rows, options and name; "
                               "drop -o, --data, --rater, --min-agreement, --filter and --name")
        job = prepare_resume(ws, resume, method=params["method"], model=params["model"],
                             overrides={SETTINGS[k]: params[k] for k in given if k in SETTINGS},
                             compress=compress)
    else:
        job = prepare_training(
            ws, method=params["method"], backend=params["backend"], options=options,
            settings=TrainSettings(**settings), data=params["data"], rater=params["rater"],
            min_agreement=params["min_agreement"], name=params["name"], model=params["model"],
            filters=params["filters"], filter_options=params["filter_options"],
            compress=compress)
    _configure_backend(ws, job, params)
    if trials:
        from ragloop.core.pipeline.training_search import metric_of, search_space
        from ragloop.core.registry import get_training_method
        metric_of(get_training_method(job.method))
        space = search_space(job, space_file, _fixed(given, options))
    for note in job.notes:
        stderr.print(f"Note: {note}.")
    if trials:
        done = run_reported(job.method, lambda bar: _search(ws, job, trials, space, bar, as_json),
                            as_json)
    else:
        done = run_reported(job.method, lambda bar: run_training(ws, job, listeners=[bar]),
                            as_json)
    if done is None:
        return
    result, seconds, loss = done
    steps = result.metrics.get("global_step") or 0
    click.echo(f"Trained {job.method} adapter {result.adapter!r} in "
               f"{seconds:.0f}s ({steps} step{'s' * (steps != 1)}, {loss}).")
    if result.metrics.get("stopped_early"):
        click.echo(f"Stopped early at step {steps}: the held-out loss had not improved for "
                   f"{job.settings.early_stopping} evaluation"
                   f"{'s' * (job.settings.early_stopping != 1)}; the adapter holds step "
                   f"{result.metrics.get('kept_step', steps)}'s weights.")
    if trials:
        best = result.metrics["search_best_trial"]
        click.echo(f"Kept trial {best} of {result.metrics['search_trials']} "
                   f"({_params(result.record['search']['trials'][best - 1]['params'])}); "
                   f"all trials: {result.run_dir / 'search.json'}")
    click.echo(f"Run folder: {result.run_dir}")
    click.echo(next_step(job, result.adapter, result.adapter_dir))


def _check_search(resume, params: dict, given: set, settings: dict) -> None:
    """Refuse what --search cannot do, and hold out pairs when no --eval-split was given."""
    if resume:
        raise RagloopError("--search runs its trials anew; it cannot --resume a run")
    if params["backend"] != "local":
        raise RagloopError(f"--search runs its trials with the local backend; drop "
                           f"--backend {params['backend']}")
    if "eval_split" not in given:
        from ragloop.core.pipeline.training_search import DEFAULT_EVAL_SPLIT
        settings["eval_split"] = DEFAULT_EVAL_SPLIT
    elif not settings["eval_split"]:
        raise RagloopError("--search chooses by held-out reward accuracy; give --eval-split "
                           "above 0 (default with --search: 0.2)")


def _fixed(given: set, options) -> set:
    """Parameters the command line sets, which the default search space leaves alone."""
    fixed = {k.split("=", 1)[0].strip() for k in options}
    if given & {"max_steps", "epochs"}:
        fixed.add("max_steps")
    return fixed | {SETTINGS[k] for k in given if k in SETTINGS}


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def _search(ws, job, trials: int, space: dict, bar, quiet: bool):
    """run_search with a line per trial on stderr: its parameters, then its outcome."""
    from ragloop.core.pipeline.training_search import run_search
    label = bar.label

    def on_trial(event, number, params, entry):
        if event == "start":
            bar.label = f"{label} trial {number}/{trials}"
            return
        if quiet:
            return
        if entry["state"] != "complete":
            stderr.print(f"Trial {number}/{trials} ({_params(params)}) failed: "
                         f"{entry.get('error', 'see the run record')}", soft_wrap=True)
            return
        m = entry["metrics"]
        loss = f", held-out loss {m['eval_loss']:.4f}" if m.get("eval_loss") is not None else ""
        stderr.print(f"Trial {number}/{trials} ({_params(params)}): held-out reward accuracy "
                     f"{entry['value']:.3f}{loss}, {entry['seconds']:.0f}s", soft_wrap=True)

    return run_search(ws, job, trials, space, listeners=[bar], on_trial=on_trial)


def next_step(job, name: str, folder) -> str:
    """What to do with the result: a reward model scores answers for rlhf, a whole model
    is loaded as a model, a chat adapter answers."""
    if job.method == "reward":
        return (f"A reward model scores answers; it does not answer. Use it to train the "
                f"answering model: ragloop train --method rlhf -o reward_adapter={name}")
    if job.settings.full:
        return f"Try: ragloop ask -o model={folder} \"...\""
    return (f"Try: ragloop ask --adapter {name} \"...\"   or   "
            f"ragloop adapters use {name}")
