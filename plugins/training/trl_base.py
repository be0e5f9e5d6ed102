"""What the built-in TRL methods (dpo, kto, orpo, sft) share: LoRA and trainer settings from
the job, a callback that turns the trainer's steps and logs into job events, and the run.

A method subclasses TrlMethod, names its TRL config and trainer classes in `trl_classes()`
(imported there, not at module top: every CLI start imports plugin modules) and adds its
own arguments in `method_args(job)`. Methods that build their trainer themselves use the
parts: `load_tokenizer`, `training_args(job)`, `lora_config(job)`, `progress_callback(job)`
and `prepare_dataset(method, dataset, tokenizer)`. Rows reach TRL as plain strings (the
prompt is the rendered chat prompt), so no trainer applies the chat template again.

With `job.compress` (`train --compress bnb-nf4`) `load_base` loads the base quantized by
that compressor on this process's GPU and prepares it for k-bit training (QLoRA); the
methods that train through `run` say so with `trains_quantized`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ragloop.core import ROW_NOUNS as NOUNS
from ragloop.core import RagloopError, TrainingMethod
from ragloop.plugins.hf.common import library_warnings_hidden, quiet_transformers, short_error
from ragloop.plugins.hf.compressed import load_compressor
from ragloop.plugins.hf.loader import load_causal_lm


@dataclass
class TrlOptions:
    max_length: int = field(default=1024, metadata={
        "help": "Longest prompt + answer in tokens; rows whose prompt alone reaches it are "
                "left out (and counted in a note)."})
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"], metadata={
        "help": "Modules that get LoRA weights, comma-separated (e.g. q_proj,k_proj,v_proj,o_proj)."})
    lora_alpha: int = field(default=0, metadata={"help": "LoRA alpha; 0 = twice --lora-r."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute activations in the backward pass: less memory, ~20-30% slower."})

    def __post_init__(self):
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")
        if not self.target_modules:
            raise ValueError("target_modules is empty; name at least one module")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")


def load_tokenizer(path: str):
    quiet_transformers()
    from transformers import AutoTokenizer
    with library_warnings_hidden():
        tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


class TrlMethod(TrainingMethod):
    """A TRL trainer run on the job's rows, with LoRA unless `--full`."""

    default_learning_rate = 5e-5
    # The trainer tokenizes with the tokenizer's special tokens; the rendered prompt already
    # starts with any BOS, so it is stripped from the text to avoid a doubled one.
    strips_bos = True
    # Whether `train --compress` may load the base quantized for this method: true for the
    # methods that train through `run` (which loads it), false for one that builds its own
    # trainer, unless that class says otherwise.
    trains_quantized = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "trains_quantized" not in cls.__dict__:
            cls.trains_quantized = cls.train is TrlMethod.train

    def trl_classes(self):
        """(TRL config class, TRL trainer class)."""
        raise NotImplementedError

    def method_args(self, job) -> dict:
        """This method's arguments for the TRL config."""
        return {}

    def check(self, job) -> None:
        """Leave out rows whose prompt fills max_length; refuse when none are left. Called
        before the run folder is made, so bad input leaves nothing behind."""
        tokenizer = load_tokenizer(job.base_model)
        limit = self.config.max_length
        for split in ("train", "eval"):
            rows = getattr(job.data, split)
            if not rows:
                continue
            lengths = [len(ids) for ids in tokenizer([r["prompt"] for r in rows],
                                                     add_special_tokens=False)["input_ids"]]
            kept = [r for r, n in zip(rows, lengths) if n < limit]
            noun = NOUNS[job.data_kind]
            if not kept:
                raise RagloopError(f"every one of the {len(rows)} {split} {noun} has a prompt of "
                                   f"{limit} tokens or more (longest {max(lengths)}); raise "
                                   f"-o max_length=...")
            if len(kept) < len(rows):
                job.notes.append(f"{len(rows) - len(kept)} {split} {noun} left out: prompt of "
                                 f"max_length={limit} tokens or more")
            setattr(job.data, split, kept)

    def train(self, job) -> dict:
        return run(self, job)


def lora_config(job):
    from peft import LoraConfig
    options = job.options
    return LoraConfig(r=job.settings.lora_r, lora_alpha=options.lora_alpha or 2 * job.settings.lora_r,
                      lora_dropout=options.lora_dropout, target_modules=list(options.target_modules),
                      task_type="CAUSAL_LM")


def training_args(job) -> dict:
    s, evaluate = job.settings, bool(job.data.eval)
    return dict(
        output_dir=str(job.output_dir), seed=s.seed, data_seed=s.seed,
        learning_rate=s.learning_rate, per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.batch_size, gradient_accumulation_steps=s.grad_accum,
        max_steps=s.max_steps or -1, num_train_epochs=s.epochs or 1.0,
        logging_steps=1, save_strategy="steps", save_steps=s.save_steps, save_total_limit=2,
        eval_strategy="steps" if evaluate else "no", eval_steps=s.save_steps,
        load_best_model_at_end=s.early_stopping is not None,
        metric_for_best_model="eval_loss", greater_is_better=False,
        # TRL's configs turn bf16 on by default: ~14x slower on CPUs without native bf16.
        bf16=job.precision == "bf16", fp16=False, use_cpu=job.device == "cpu",
        activation_checkpointing=job.options.gradient_checkpointing,
        dataloader_pin_memory=job.device != "cpu", report_to="none", disable_tqdm=True,
        max_length=job.options.max_length)


def progress_callback(job):
    """A TrainerCallback that forwards the trainer's progress as job events."""
    from transformers import TrainerCallback

    class Bridge(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            job.emit("begin", step=state.global_step, max_steps=state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            numbers = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            job.emit("log", step=state.global_step, logs=numbers)

        def on_step_end(self, args, state, control, **kwargs):
            job.emit("step", step=state.global_step, max_steps=state.max_steps)

        def on_save(self, args, state, control, **kwargs):
            job.emit("save", step=state.global_step,
                     checkpoint=os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))

    return Bridge()


def prepare_dataset(method, rows, tokenizer):
    """Rows (`job.dataset`: a list of dicts of plain strings, or already a `datasets.Dataset`)
    as the `datasets.Dataset` the method's trainer should tokenize (see `strips_bos`)."""
    if rows is None:
        return None
    from datasets import Dataset
    rows_dataset = Dataset.from_list(rows) if isinstance(rows, list) else rows
    if not (method.strips_bos and _adds_bos(tokenizer)):
        return rows_dataset
    bos = tokenizer.bos_token
    return rows_dataset.map(lambda r: {"prompt": r["prompt"][len(bos):]
                                       if r["prompt"].startswith(bos) else r["prompt"]})


def fit(trainer, job) -> dict:
    """Train (continuing from `job.resume_from`), save the result into `job.save_dir`, and
    return the numeric metrics: the part every TRL-based method shares."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    for quiet in (PrinterCallback, ProgressCallback):    # ragloop draws its own progress
        trainer.remove_callback(quiet)
    start = _resumed_step(job)
    if job.resume_from and _finished(job.resume_from):
        _load_finished(trainer, job.resume_from)
        job.emit("begin", step=trainer.state.global_step, max_steps=trainer.state.max_steps)
        metrics = {}
    else:
        output = trainer.train(resume_from_checkpoint=job.resume_from)
        metrics = {k: v for k, v in output.metrics.items() if isinstance(v, (int, float))}
    metrics.update(_held_out(trainer))
    trainer.save_model(str(job.save_dir))
    # The pickled TrainingArguments belong with checkpoints, not with an adapter.
    (job.save_dir / "training_args.bin").unlink(missing_ok=True)
    metrics.update(global_step=trainer.state.global_step,
                   steps_this_run=trainer.state.global_step - start,
                   **_early_stopping(trainer, job))
    if trainer.state.best_metric is not None:
        metrics["best_eval_loss"] = trainer.state.best_metric
    return metrics


def _held_out(trainer) -> dict:
    """The held-out metrics of the weights being saved (eval_loss, and for preference methods
    eval_rewards/accuracies, which `train --search` maximizes): the trainer's own evaluation
    of the step whose weights are kept (the last step, or the best one that
    load_best_model_at_end put back) when it ran one, else one evaluation now. Nothing
    without held-out rows."""
    if trainer.eval_dataset is None:
        return {}
    state = trainer.state
    step = state.global_step
    if trainer.args.load_best_model_at_end and state.best_model_checkpoint:
        step = getattr(state, "best_global_step", None) or int(
            state.best_model_checkpoint.rstrip("/").rsplit("-", 1)[-1])
    done = [e for e in state.log_history if e.get("step") == step and "eval_loss" in e]
    logs = done[-1] if done else trainer.evaluate()
    return {k: v for k, v in logs.items()
            if k.startswith("eval_") and isinstance(v, (int, float))}


def _early_stopping(trainer, job) -> dict:
    """Whether early stopping ended the run, and which step's weights were kept (the best
    checkpoint's, which load_best_model_at_end put back)."""
    if job.settings.early_stopping is None:
        return {}
    state = trainer.state
    out = {"stopped_early": 0 < state.global_step < state.max_steps}
    kept = getattr(state, "best_global_step", None)
    if kept is None and state.best_model_checkpoint:
        kept = int(state.best_model_checkpoint.rstrip("/").rsplit("-", 1)[-1])
    if kept and trainer.args.load_best_model_at_end:
        out["kept_step"] = kept
    return out


def tokenizing(job) -> str:
    rows = len(job.data.train) + len(job.data.eval)
    return f"tokenizing {rows} {NOUNS[job.data_kind]}"


def phase(job, name: str, total: int | None = None, completed: int = 0) -> None:
    """Tell the listeners what the set-up before the first step is doing."""
    job.emit("phase", name=name, total=total, completed=completed)


def counted(trainer_cls, job):
    """`trainer_cls`, reporting TRL's reference log-prob pass (it runs in the trainer's
    __init__, minutes for KTO on a CPU) as a phase with a count of batches."""
    if not hasattr(trainer_cls, "_precompute_ref_logps"):
        return trainer_cls

    class Counted(trainer_cls):
        _ref_phase = None

        def _precompute_ref_logps(self, dataset, name, batch_size, *args, **kwargs):
            processes = max(1, getattr(self.accelerator, "num_processes", 1))
            total = math.ceil(len(dataset) / batch_size / processes)
            self._ref_phase = [f"precomputing reference log-probs ({name} rows)", total, 0]
            phase(job, *self._ref_phase)
            try:
                return super()._precompute_ref_logps(dataset, name, batch_size, *args, **kwargs)
            finally:
                self._ref_phase = None

        def compute_ref_log_probs(self, *args, **kwargs):
            out = super().compute_ref_log_probs(*args, **kwargs)
            if self._ref_phase is not None:
                self._ref_phase[2] += 1
                phase(job, *self._ref_phase)
            return out

    Counted.__name__ = Counted.__qualname__ = trainer_cls.__name__
    return Counted


def _finished(checkpoint: str) -> bool:
    """Whether the trainer had already stopped at this checkpoint (its last step, or early
    stopping): transformers would still run one more step from it when the last step falls
    inside an epoch, so such a checkpoint is loaded, not trained on."""
    state = json.loads(Path(checkpoint, "trainer_state.json").read_text(encoding="utf-8"))
    control = (state.get("stateful_callbacks") or {}).get("TrainerControl") or {}
    if isinstance(control, list):
        control = control[-1] if control else {}
    return (bool((control.get("args") or {}).get("should_training_stop"))
            or 0 < (state.get("max_steps") or 0) <= state.get("global_step", 0))


def _load_finished(trainer, checkpoint: str) -> None:
    """Put the trainer where train() would have left it: the checkpoint's state and weights,
    or the best checkpoint's weights with --early-stopping (load_best_model_at_end)."""
    from transformers import TrainerState
    trainer.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
    best = trainer.state.best_model_checkpoint
    # Private Trainer methods: the ones train() itself uses for exactly this.
    if trainer.args.load_best_model_at_end and best and os.path.isdir(best):
        trainer._load_best_model()
    else:
        trainer._load_from_checkpoint(checkpoint)


def load_base(job):
    """The model the trainer starts from: float32, left where it loads (the trainer places
    it, and DeepSpeed shards it); with `job.compress`, quantized as it loads onto this
    process's GPU and prepared for k-bit training (frozen base, norms and head in float32,
    gradient checkpointing when asked), for TRL to put the LoRA layers on."""
    if not job.compress:
        return load_causal_lm(job.base_model, dtype="float32", device=None)
    import torch
    compressor = load_compressor(job.compress)
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else job.device
    kwargs = compressor.load_kwargs(device)       # check(device) first: one line without CUDA
    # The weights that stay unquantized load in bf16 (QLoRA's recipe), then go to float32 in
    # prepare_model_for_kbit_training; fp32 GPUs load them as float32 directly.
    dtype = "bfloat16" if job.precision == "bf16" else "float32"
    try:
        model = load_causal_lm(job.base_model, dtype=dtype, device=None, **kwargs)
    except (ImportError, RuntimeError, ValueError) as exc:
        raise RagloopError(f"cannot load {job.base_model} with --compress {job.compress} "
                           f"({short_error(exc, 300)})") from None
    from peft import prepare_model_for_kbit_training
    checkpointing = job.options.gradient_checkpointing
    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None)
    how = f" ({compressor.summary})" if compressor.summary else ""
    job.notes.append(f"base loaded with --compress {job.compress}{how}; LoRA trains on it (QLoRA)")
    return model


def early_stopping_callbacks(job) -> list:
    """The callback that ends training once the held-out loss has not improved for
    `--early-stopping` evaluations (none without the option)."""
    if job.settings.early_stopping is None:
        return []
    from transformers import EarlyStoppingCallback
    return [EarlyStoppingCallback(job.settings.early_stopping)]


def _resumed_step(job) -> int:
    """The step a resumed run starts from (its checkpoint's), 0 for a new run: the steps
    this run took are the trainer's last step less this."""
    if not job.resume_from:
        return 0
    state = Path(job.resume_from, "trainer_state.json").read_text(encoding="utf-8")
    return json.loads(state).get("global_step", 0)


def run(method: TrlMethod, job) -> dict:
    quiet_transformers()                      # torchao and torch's notes about it included
    logging.getLogger("trl").setLevel(logging.ERROR)
    from datasets.utils.logging import disable_progress_bar
    disable_progress_bar()
    old_tqdm = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"     # TRL's reference log-prob pass draws its own bar
    try:
        with library_warnings_hidden():
            phase(job, "loading model")
            config_cls, trainer_cls = method.trl_classes()
            tokenizer = load_tokenizer(job.base_model)
            args = config_cls(**training_args(job), **method.method_args(job))
            model = load_base(job)
            callbacks = [progress_callback(job), *early_stopping_callbacks(job)]
            phase(job, tokenizing(job))
            try:
                trainer = counted(trainer_cls, job)(
                    model=model, args=args, processing_class=tokenizer, callbacks=callbacks,
                    train_dataset=prepare_dataset(method, job.dataset, tokenizer),
                    eval_dataset=prepare_dataset(method, job.eval_dataset, tokenizer),
                    peft_config=None if job.settings.full else lora_config(job))
            except ValueError as exc:
                raise RagloopError(f"{job.method}: {short_error(exc, 300)}") from None
            metrics = fit(trainer, job)
    finally:
        if old_tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_tqdm
    return metrics
