"""Training runs: the API behind `ragloop train`, and what training-method plugins receive.

    job = prepare_training(ws, method=None, options=(), settings=TrainSettings(), data=None,
                           rater=None, min_agreement=None, name=None, model=None)
    job = prepare_resume(ws, run="latest", method=None, model=None, overrides=None)
    result = run_training(ws, job, listeners=())       # -> TrainResult
    result = train(ws, **prepare_training kwargs)        # both at once

With `compress` (a bitsandbytes compressor, `--compress bnb-nf4`), the method trains a LoRA
adapter on the base loaded quantized (QLoRA): `job.compress` names the compressor, and the
method loads the base with its `load_kwargs`. Only compressors that quantize as the model
loads can do that, only for LoRA (not `--full`), only with the local backend, and only
methods whose class sets `trains_quantized = True`; without CUDA the compressor's own
`check(device)` refuses before anything is written.

`prepare_*` only reads and checks (bad input is a RagloopError before anything is
written); `run_training` creates the run folder <ws>/runs/<run id>/ (run.json, the exact
rows in train.jsonl/eval.jsonl, the trainer's checkpoints/, loss.png), has the backend run
the method, and registers the result in <ws>/adapters/<name>/ (see core.adapters).

A method's `train(job)` trains on `job.dataset` (rows of plain strings, `job.data_kind`),
starting from `job.base_model` (a folder or hub id), continuing from `job.resume_from`
when set, writing checkpoints into `job.output_dir`, and saves the result (a PEFT adapter,
or a whole model with `settings.full`) into `job.save_dir`. It reports progress with
`job.emit(event, **fields)`: "phase" (name, total, completed: set-up work before the
first step, such as loading the model), "begin" (step, max_steps), "log" (step, logs),
"step" (step), "save" (step, checkpoint), "end". It returns its metrics as a dict.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragloop.core import registry
from ragloop.core.components import Compressor
from ragloop.core.config import build_config, parse_pairs
from ragloop.core.errors import RagloopError
from ragloop.core.ids import new_id
from ragloop.core.pipeline.adapters import check_name, read_metadata
from ragloop.core.pipeline.training_data import (
    DEFAULT_METHOD,
    TrainingData,
    select,
    split,
    text_rows,
)
from ragloop.core.pipeline.training_runs import (  # noqa: F401
    TrainResult,
    find_run,
    last_checkpoint,
    mark_killed,
    read_record,
    read_rows,
    run_training,
    still_running,
)
from ragloop.core.rows import ROW_KINDS, ROW_NOUNS

DEFAULT_BACKEND = "local"
DEFAULT_LEARNING_RATE = 5e-5     # LoRA-sized; a method may set `default_learning_rate`
CORE_OPTIONS = ("model",)        # -o keys `train` itself takes; the rest go to the method
QUANTIZED_BACKEND = "local"      # QLoRA runs in one process on one GPU


@dataclass
class TrainSettings:
    """Hyper-parameters shared by every method (the `ragloop train` flags)."""
    max_steps: int | None = None
    epochs: float | None = None           # 1 when neither is given
    learning_rate: float | None = None    # None: the method's default
    batch_size: int = 2
    grad_accum: int = 1
    lora_r: int = 8                       # LoRA alpha is 2r
    full: bool = False                    # train every weight instead of a LoRA adapter
    eval_split: float = 0.0
    early_stopping: int | None = None     # patience, in evaluations
    seed: int = 42
    save_steps: int = 50

    def __post_init__(self):
        if self.max_steps is not None and self.epochs is not None:
            raise RagloopError("give --max-steps or --epochs, not both")
        if self.max_steps is None and self.epochs is None:
            self.epochs = 1.0
        for name in ("batch_size", "grad_accum", "lora_r", "save_steps"):
            if getattr(self, name) < 1:
                raise RagloopError(f"{name.replace('_', '-')} must be at least 1")
        if not 0 <= self.eval_split < 1:
            raise RagloopError(f"--eval-split must be at least 0 and below 1, not {self.eval_split}")
        if self.early_stopping is not None and not self.eval_split:
            self.eval_split = 0.1      # early stopping needs a held-out split to watch


@dataclass
class TrainingJob:
    run_id: str
    name: str                        # the adapter it will register
    method: str
    backend: str
    options: Any                     # the method's Config instance
    settings: TrainSettings
    base_model: str                  # folder or hub id to load
    base_model_id: str               # what the adapter records as its base
    data: TrainingData
    run_dir: Path
    device: str                      # "cpu", "cuda", ...
    precision: str                   # "fp32" or "bf16" (mixed)
    resume_from: str | None = None   # a checkpoint folder
    model: str | None = None         # the model asked for; None: the generator's default
    parallel: Any = None             # set by the backend's configure(); None: one process
    compress: str | None = None      # compressor the base loads quantized with (QLoRA)
    adapter_saved: bool = False      # resumed run whose adapter was saved: finish the record
    listeners: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def data_kind(self) -> str:
        return self.data.kind

    @property
    def output_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def save_dir(self) -> Path:
        return self.run_dir / "final"

    @property
    def dataset(self) -> list[dict]:
        """The training rows as plain strings (no chat messages), one dict per row; a
        method builds its trainer's own dataset type from them."""
        return text_rows(self.data.train, self.data.kind)

    @property
    def eval_dataset(self) -> list[dict] | None:
        if not self.data.eval:
            return None
        return text_rows(self.data.eval, self.data.kind)

    def emit(self, event: str, **fields) -> None:
        for listener in list(self.listeners):
            listener({"event": event, **fields})


# ---- preparing ----------------------------------------------------------------------------

def resolve_base(ws, model: str | None) -> tuple[str, str]:
    """(checkpoint to load, model id) of the generator's model: the packaged default
    (converted once into the workspace) unless `model` names a folder or hub id."""
    from ragloop.core.pipeline.ask import DEFAULT_GENERATOR, load_generator
    generator = load_generator(ws, DEFAULT_GENERATOR, [f"model={model}"] if model else [])
    checkpoint = generator.checkpoint()       # None: the generator has no weights to load
    if checkpoint is None:
        raise RagloopError(f"generator {DEFAULT_GENERATOR!r} cannot give a checkpoint to train")
    return checkpoint, generator.model_id


def method_options(cls, pairs) -> tuple[Any, dict]:
    """(the method's Config, core options such as model) from -o pairs."""
    raw = parse_pairs(pairs)
    valid = [f for f in getattr(cls.Config, "__dataclass_fields__", {})]
    core = {k: raw.pop(k) for k in CORE_OPTIONS if k in raw}
    for key in raw:
        if key not in valid:
            raise RagloopError(f"unknown option {key!r} for method {cls.name}; valid options: "
                               f"{', '.join([*valid, *CORE_OPTIONS])}")
    config = build_config(cls.Config, [f"{k}={v}" for k, v in raw.items()], f"method {cls.name}")
    return config, core


def _trains(cls) -> bool:
    """Whether a compressor can carry a LoRA run: it quantizes as `from_pretrained` loads
    (its own `load_kwargs`, as bitsandbytes does), which is what PEFT's k-bit training
    prepares; one that changes an already loaded model (torchao, pruning) cannot."""
    return cls.kind == "quantize" and cls.load_kwargs is not Compressor.load_kwargs


def training_compressors() -> list[str]:
    """Names of the compressors `train --compress` accepts."""
    return [n for n in registry.names("compressor") if _trains(registry.get_compressor(n))]


def check_compress(ws, compress: str, backend: str, full: bool, device: str) -> None:
    """Refuse a `--compress` that cannot train here, cheapest reason first; the last is the
    compressor's own `check(device)` (no CUDA), which runs before bitsandbytes is imported."""
    cls = registry.get_compressor(compress)
    accepted = training_compressors()
    if compress not in accepted:
        raise RagloopError(f"--compress {compress} cannot train: LoRA on a quantized base needs "
                           f"a compressor that quantizes as the model loads; use one of: "
                           f"{', '.join(accepted) or 'none installed'}")
    if full:
        raise RagloopError(f"a base quantized with --compress {compress} cannot be fully "
                           f"trained; drop --full to train a LoRA adapter on it (QLoRA)")
    if backend != QUANTIZED_BACKEND:
        raise RagloopError(f"--compress trains on one GPU with the {QUANTIZED_BACKEND} backend, "
                           f"not {backend}; drop --backend {backend}")
    cls(build_config(cls.Config, (), compress), workspace=ws).check(device)


def _check_method_compress(cls, compress: str) -> None:
    if getattr(cls, "trains_quantized", False):
        return
    able = [n for n in registry.names("training method")
            if getattr(registry.get_training_method(n), "trains_quantized", False)]
    raise RagloopError(f"method {cls.name} cannot train on a quantized base (--compress "
                       f"{compress}); methods that can: {', '.join(able) or 'none installed'}")


def _free_name(ws, name: str | None, method: str) -> str:
    if name:
        check_name(name)
        if (Path(ws.adapters_dir) / name).exists():
            raise RagloopError(f"an adapter named {name!r} exists; choose another --name or "
                               f"`ragloop adapters rm {name}`")
        return name
    # A method name may hold characters an adapter name may not ("sft+dpo").
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", method)
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    name, n = base, 1
    while (Path(ws.adapters_dir) / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def prepare_training(ws, *, method: str | None = None, backend: str = DEFAULT_BACKEND,
                     options=(), settings: TrainSettings | None = None, data=None,
                     rater: str | None = None, min_agreement: float | None = None,
                     name: str | None = None, model: str | None = None, filters=(),
                     filter_options=(), compress: str | None = None) -> TrainingJob:
    """Check everything and choose the rows; writes nothing. `filters` (names of filter
    plugins, with `NAME.key=value` options) run over the rows before the held-out split, so
    the dataset hash and lineage describe what is actually trained on. `compress` trains
    LoRA on the base loaded quantized by that compressor (see the module docstring)."""
    settings = settings or TrainSettings()
    runner = registry.get_training_backend(backend)(workspace=ws)
    device, precision = runner.pick_device()
    if compress:
        check_compress(ws, compress, backend, settings.full, device)
    cls = registry.get_training_method(method) if method else None
    if cls is not None and compress:
        _check_method_compress(cls, compress)
    if cls is not None and cls.data_kind not in ROW_KINDS:
        raise RagloopError(f"method {cls.name} trains on {cls.data_kind!r} data, which "
                           f"`ragloop train` cannot provide")
    config, core = method_options(cls, options) if cls else (None, parse_pairs(options))
    model = model or core.get("model")
    chosen = select(ws, cls.data_kind if cls else None, data, rater, min_agreement)
    if cls is None:
        cls = registry.get_training_method(DEFAULT_METHOD[chosen.kind])
        config, _ = method_options(cls, options)
        chosen.notes.append(f"training {cls.name}: the data holds {ROW_NOUNS[chosen.kind]}")
        if compress:
            _check_method_compress(cls, compress)
    if filters:
        from ragloop.core.pipeline.filtering import apply_chain
        chosen.rows, report = apply_chain(ws, list(filters), chosen.rows, chosen.kind,
                                          filter_options)
        chosen.notes += report.notes()
    split(chosen, settings.eval_split, settings.seed)
    if settings.learning_rate is None:
        settings.learning_rate = getattr(cls, "default_learning_rate", DEFAULT_LEARNING_RATE)
    name = _free_name(ws, name, cls.name)
    checkpoint, model_id = resolve_base(ws, model)
    run_id = new_id()
    job = TrainingJob(run_id, name, cls.name, backend, config, settings, checkpoint, model_id,
                      chosen, Path(ws.runs_dir) / run_id, device, precision, model=model,
                      compress=compress or None, notes=list(chosen.notes))
    if device == "cpu":
        job.notes.append("training on CPU in fp32 (bf16 is emulated on this CPU, many times slower)")
    check = getattr(cls(config, workspace=ws), "check", None)
    if check is not None:
        check(job)             # a method's own refusals, before anything is written
    return job


def prepare_resume(ws, run: str = "latest", *, method: str | None = None,
                   model: str | None = None, overrides: dict | None = None,
                   compress: str | None = None) -> TrainingJob:
    """A job that continues an interrupted run from its latest checkpoint, with the run's
    own rows, settings, options and --compress. A different method, base model, setting or
    --compress is refused."""
    run_dir = find_run(ws, run)
    record = mark_killed(run_dir)
    rid = record["id"]
    if still_running(record):
        raise RagloopError(f"run {rid} is still running (process {record['process']['pid']}); "
                           f"wait for it, or stop it, before --resume")
    if record.get("search"):
        raise RagloopError(f"run {rid} was a --search; a search is not resumed: start it again")
    if record.get("status") == "succeeded":
        raise RagloopError(f"run {rid} already finished (adapter {record['adapter']['name']!r}); "
                           f"start a new run instead of --resume")
    if method and method != record["method"]:
        raise RagloopError(f"run {rid} trained {record['method']}, not {method}; resume it "
                           f"without --method {method}, or start a new run")
    asked = model if model is not None else record.get("model")
    base_model, model_id = resolve_base(ws, asked)
    if model_id != record["base_model_id"]:
        raise RagloopError(f"run {rid} trained base model {record['base_model_id']}, not "
                           f"{model_id}; resume it with that model, or start a new run")
    for key, value in (overrides or {}).items():
        if record["settings"].get(key) != value:
            raise RagloopError(f"run {rid} was started with {key}={record['settings'].get(key)}, "
                               f"not {value}; --resume keeps a run's settings")
    recorded = record.get("compress")
    if compress and compress != recorded:
        was = f"--compress {recorded}" if recorded else "no --compress"
        raise RagloopError(f"run {rid} was trained with {was}; --resume keeps it, so drop "
                           f"--compress {compress}")
    name = record["name"]
    saved = Path(ws.adapters_dir) / name
    if saved.exists() and read_metadata(saved).get("run_id") != rid:
        raise RagloopError(f"an adapter named {name!r} exists now; remove it to resume run {rid}")
    checkpoint = last_checkpoint(run_dir / "checkpoints")
    if checkpoint is None and not saved.exists():
        how = "was killed" if record.get("status") == "killed" else "stopped"
        raise RagloopError(f"run {rid} {how} before its first checkpoint (one is written every "
                           f"--save-steps steps); start a new run")
    cls = registry.get_training_method(record["method"])
    try:
        config = cls.Config(**record["options"])
    except (TypeError, ValueError) as exc:
        raise RagloopError(f"run {rid}'s options no longer fit method {cls.name} ({exc})") from None
    settings = TrainSettings(**record["settings"])
    lineage = record["data"]
    data = TrainingData(lineage["kind"], [], lineage["source"])
    data.train, data.eval = read_rows(run_dir / "train.jsonl"), read_rows(run_dir / "eval.jsonl")
    data.rows = read_rows(run_dir / "rows.jsonl")
    backend = record.get("backend", DEFAULT_BACKEND)
    device, precision = registry.get_training_backend(backend)(workspace=ws).pick_device()
    if recorded and not saved.exists():
        check_compress(ws, recorded, backend, settings.full, device)
    job = TrainingJob(rid, name, record["method"], backend, config, settings, base_model,
                      model_id, data, run_dir, device, precision,
                      resume_from=str(checkpoint) if checkpoint else None, model=asked,
                      adapter_saved=saved.exists(), compress=recorded)
    if job.adapter_saved:
        # Stopped between saving its adapter and recording that: nothing is left to train.
        job.notes.append(f"run {rid} had already saved adapter {name!r}; finishing its record")
    else:
        job.notes.append(f"resuming run {rid} from {checkpoint.name}")
    return job


def train(ws, listeners=(), **kwargs) -> TrainResult:
    """prepare_training(ws, **kwargs), then run_training."""
    return run_training(ws, prepare_training(ws, **kwargs), listeners)

