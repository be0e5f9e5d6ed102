"""`distill-logits`: the student learns a teacher's whole next-token distribution
(temperature-softened forward KL) on the answer tokens of sft rows. `ragloop distill
--method logits` trains with it; `ragloop train --method distill-logits -o teacher=MODEL`
runs it on any sft rows.

Our own small Trainer: TRL 1.16's DistillationTrainer is on-policy (the student generates
every step, slow on CPU) and its GKDTrainer (experimental) wants chat messages, while our
rows are rendered prompt strings. So this method reuses the sft method's TRL plumbing
(tokenizing, completion masks, LoRA, checkpoints, backends) and swaps the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ragloop.core import RagloopError, hookimpl
from ragloop.plugins.hf.kept import kept
from ragloop.plugins.hf.loader import load_causal_lm
from ragloop.plugins.training.trl_base import TrlMethod, TrlOptions


@dataclass
class LogitOptions(TrlOptions):
    teacher: str = field(default="", metadata={"help": "Teacher model folder or hub id."})
    teacher_adapter: str = field(default="", metadata={
        "help": "LoRA adapter folder merged into the teacher; empty: none."})
    temperature: float = field(default=2.0, metadata={
        "help": "Softens both distributions; the loss is scaled by its square."})

    def __post_init__(self):
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


def teacher_model(options):
    """The teacher in eval mode, its adapter merged: the model `distill` loaded to answer the
    prompts when it runs in this process (hf.kept), else loaded here."""
    adapter = options.teacher_adapter or None
    model = kept(options.teacher, adapter)
    if model is None:
        model = load_causal_lm(options.teacher, adapter=adapter, merge=True)
    return model.eval()


def kl_trainer(sft_trainer, options):
    import torch
    import torch.nn.functional as F

    class LogitDistillTrainer(sft_trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher = teacher_model(options)
            self.teacher.to(self.args.device).requires_grad_(False)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            feed = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids")
                    if k in inputs}
            outputs = model(**feed)
            with torch.no_grad():
                teacher = self.teacher(**feed).logits[:, :-1]
            student = outputs.logits[:, :-1]
            mask = inputs["labels"][:, 1:] != -100       # answer tokens (and no padding)
            t = options.temperature
            log_p = F.log_softmax(teacher.float() / t, dim=-1)
            log_q = F.log_softmax(student.float() / t, dim=-1)
            kl = (log_p.exp() * (log_p - log_q)).sum(-1)
            loss = (kl * mask).sum() / mask.sum().clamp(min=1) * t * t
            return (loss, outputs) if return_outputs else loss

    return LogitDistillTrainer


class LogitDistillMethod(TrlMethod):
    name = "distill-logits"
    description = "Student matches a teacher's next-token distribution (KL); used by `distill`."
    Config = LogitOptions
    data_kind = "sft"
    default_learning_rate = 1e-4

    def check(self, job) -> None:
        if not self.config.teacher:
            raise RagloopError("method distill-logits needs -o teacher=MODEL")
        super().check(job)

    def method_args(self, job) -> dict:
        return dict(completion_only_loss=True)     # the KL is taken on the answer tokens

    def trl_classes(self):
        from trl import SFTConfig, SFTTrainer
        return SFTConfig, kl_trainer(SFTTrainer, self.config)


@hookimpl
def register_training_methods(register):
    register(LogitDistillMethod)
