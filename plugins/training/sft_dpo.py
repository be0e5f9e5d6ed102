"""`sft+dpo`: DPO with an SFT term on the chosen answers, for small data.

With a few dozen pairs, plain DPO mostly pushes the rejected answers down; the SFT term
(the chosen answers' mean token negative log-likelihood, weight `sft_weight`) also pulls
the chosen ones up, which is the RPO objective (TRL's loss types "sigmoid" and "sft", summed
with `loss_weights`). `sft_steps=N` first trains N steps on the SFT term alone (a warm-up on
the chosen answers, same adapter, same optimizer), then the rest of the run on both; the
reference model stays the base, so the DPO rewards measure the move from the base.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from ragloop.core import RagloopError, hookimpl
from ragloop.plugins.training.dpo import DPO, DPOOptions


@dataclass
class SFTDPOOptions(DPOOptions):
    sft_weight: float = field(default=1.0, metadata={
        "help": "Weight of the SFT term (the chosen answers' mean token NLL) added to the DPO "
                "loss."})
    sft_steps: int = field(default=0, metadata={
        "help": "Optimizer steps at the start of the run that train the SFT term alone "
                "(warm-up on the chosen answers) before DPO with the SFT term."})

    def __post_init__(self):
        super().__post_init__()
        if self.sft_steps < 0:
            raise ValueError(f"sft_steps must be 0 or more, got {self.sft_steps}")
        if self.loss_type == "sft":
            raise ValueError("loss_type=sft is the SFT term itself; give the preference loss "
                             "(sigmoid, ipo, ...) and set its weight with sft_weight")


def total_steps(job) -> int:
    """The run's optimizer steps: --max-steps, or what --epochs make of the training rows."""
    s = job.settings
    if s.max_steps:
        return s.max_steps
    per_epoch = math.ceil(len(job.data.train) / (s.batch_size * s.grad_accum))
    return max(1, math.ceil(per_epoch * (s.epochs or 1.0)))


class SFTDPO(DPO):
    name = "sft+dpo"
    description = "DPO plus an SFT term on the chosen answers (RPO), optional SFT warm-up steps."
    Config = SFTDPOOptions

    def check(self, job) -> None:
        c = self.config
        if c.sft_steps and c.sft_steps >= total_steps(job):
            raise RagloopError(f"sft_steps={c.sft_steps} leaves none of the run's "
                               f"{total_steps(job)} steps for DPO; lower -o sft_steps or raise "
                               f"--max-steps")
        if c.sft_steps and not c.sft_weight:
            job.notes.append(f"sft_weight=0: the {c.sft_steps} warm-up steps train the SFT "
                             f"term, the rest plain DPO")
        super().check(job)

    def trl_classes(self):
        config_cls, trainer_cls = super().trl_classes()
        if not self.config.sft_steps:
            return config_cls, trainer_cls
        return config_cls, warm_up_class(trainer_cls, self.config.sft_steps)

    def method_args(self, job) -> dict:
        args = super().method_args(job)
        c = self.config
        if c.sft_steps:
            # The warm-up needs the SFT term among the losses even when its later weight is 0.
            args.update(loss_type=[c.loss_type, "sft"], loss_weights=[1.0, c.sft_weight])
        return args


@functools.cache
def warm_up_class(trainer_cls, steps: int):
    """`trainer_cls` (a DPOTrainer) that trains the SFT term alone for the first `steps`
    optimizer steps; evaluation always uses the full loss. TRL reads `loss_weights` at each
    loss, and the step counts optimizer steps, so gradient accumulation is covered."""

    class WarmUp(trainer_cls):
        sft_steps = steps

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._full_weights = list(self.loss_weights)
            self._sft_only = [0.0] * (len(self.loss_weights) - 1) + [1.0]

        def _compute_loss(self, model, inputs, return_outputs):
            warming = self.model.training and self.state.global_step < self.sft_steps
            self.loss_weights = self._sft_only if warming else self._full_weights
            return super()._compute_loss(model, inputs, return_outputs)

    WarmUp.__name__ = WarmUp.__qualname__ = trainer_cls.__name__
    return WarmUp


@hookimpl
def register_training_methods(register):
    register(SFTDPO)
