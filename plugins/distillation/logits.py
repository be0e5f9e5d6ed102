"""`logits`: logit distillation. The student learns the teacher's whole next-token
distribution (temperature-softened forward KL) on the teacher's answers to the prompts.

Our own small Trainer: TRL 1.16's DistillationTrainer is on-policy (the student generates
every step, slow on CPU) and its GKDTrainer (experimental) wants chat messages, while our
rows are rendered prompt strings. So `distill-logits`, a training method, reuses the sft
method's TRL plumbing (tokenizing, completion masks, LoRA, checkpoints, backends) and
swaps the loss; the `logits` distiller feeds it through the training core.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ragloop.core import Distiller, RagloopError, hookimpl
from ragloop.plugins.distillation.common import Teacher, answer_prompts, train_student
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


def kl_trainer(sft_trainer, options):
    import torch
    import torch.nn.functional as F

    from ragloop.plugins.distillation.common import load_teacher

    class LogitDistillTrainer(sft_trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher, _ = load_teacher(Teacher(options.teacher, options.teacher,
                                                   options.teacher_adapter or None))
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


def _vocab(path: str):
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(path).get_vocab()
    except (OSError, ValueError) as exc:
        raise RagloopError(f"cannot load the tokenizer of {path} "
                           f"({' '.join(str(exc).split())[:150]})") from None


class LogitDistiller(Distiller):
    name = "logits"
    description = "Student matches the teacher's token distributions (shared tokenizer)."

    def check(self, job) -> None:
        student = job.student_model or job.student
        if _vocab(job.teacher.adapter or job.teacher.model) != _vocab(student):
            raise RagloopError(f"teacher {job.teacher.spec} and student {job.student} have "
                               f"different tokenizers, so their logits cannot be compared; "
                               f"use --method sequences")

    def distill(self, job, listeners=()):
        answer_prompts(job)
        options = [f"teacher={job.teacher.model}",
                   f"teacher_adapter={job.teacher.adapter or ''}"]
        return train_student(self.workspace, job, "distill-logits", options, listeners)


@hookimpl
def register_training_methods(register):
    register(LogitDistillMethod)


@hookimpl
def register_distillers(register):
    register(LogitDistiller)
