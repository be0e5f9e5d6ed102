"""`logits`: logit distillation. The student learns the teacher's whole next-token
distribution (temperature-softened forward KL) on the teacher's answers to the prompts,
through the training method `distill-logits` (plugins/training/distill_logits.py), which
takes the teacher this distiller loaded to answer instead of loading it again."""

from __future__ import annotations

from ragloop.core import Distiller, RagloopError, hookimpl
from ragloop.plugins.distillation.common import answer_prompts, train_student


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
        return train_student(self.workspace, job, "distill-logits", options, listeners,
                             keep_teacher=True)


@hookimpl
def register_distillers(register):
    register(LogitDistiller)
