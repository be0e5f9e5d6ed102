"""`sequences`: sequence-level distillation. The teacher answers the prompts (the workspace's
questions with their retrieved passages), and the student is SFT-trained on those answers
by the `sft` training method."""

from __future__ import annotations

from ragloop.core import Distiller, hookimpl
from ragloop.plugins.distillation.common import answer_prompts, train_student


class SequenceDistiller(Distiller):
    name = "sequences"
    description = "Student SFT-trained on the teacher's answers (any tokenizers)."

    def distill(self, job, listeners=()):
        answer_prompts(job)
        return train_student(self.workspace, job, "sft", listeners=listeners)


@hookimpl
def register_distillers(register):
    register(SequenceDistiller)
