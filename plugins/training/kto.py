"""`kto`: Kahneman-Tversky Optimization on answers labelled good or bad (TRL's KTOTrainer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ragloop.core import RagloopError, hookimpl
from ragloop.plugins.training.trl_base import TrlMethod, TrlOptions


@dataclass
class KTOOptions(TrlOptions):
    beta: float = field(default=0.1, metadata={
        "help": "How far the adapter may move from the base model: higher stays closer."})
    desirable_weight: float = field(default=1.0, metadata={
        "help": "Loss weight of good answers; raise it when they are outnumbered."})
    undesirable_weight: float = field(default=1.0, metadata={
        "help": "Loss weight of bad answers; raise it when they are outnumbered."})
    loss_type: Literal["kto", "apo_zero_unpaired"] = field(default="kto", metadata={
        "help": "kto, or apo_zero_unpaired (no KL term)."})
    precompute_ref_log_probs: bool | None = field(default=None, metadata={
        "help": "Score every row with the base model once, before training; none = on for "
                "CPU, off otherwise."})

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if self.desirable_weight <= 0 or self.undesirable_weight <= 0:
            raise ValueError("desirable_weight and undesirable_weight must be positive")


class KTO(TrlMethod):
    name = "kto"
    description = "KTO on answers rated good or bad, no pairs needed (TRL KTOTrainer)."
    data_kind = "kto"
    Config = KTOOptions

    def trl_classes(self):
        from trl import KTOConfig, KTOTrainer
        return KTOConfig, KTOTrainer

    def check(self, job) -> None:
        # KTO's KL term pairs each answer with another prompt's answer in the same batch.
        if self.config.loss_type == "kto" and job.settings.batch_size < 2:
            raise RagloopError("kto needs --batch-size 2 or more (its KL estimate compares "
                               "answers within a batch)")
        super().check(job)

    def method_args(self, job) -> dict:
        c = self.config
        precompute = c.precompute_ref_log_probs
        return dict(beta=c.beta, desirable_weight=c.desirable_weight,
                    undesirable_weight=c.undesirable_weight, loss_type=c.loss_type,
                    precompute_ref_log_probs=job.device == "cpu" if precompute is None else precompute)


@hookimpl
def register_training_methods(register):
    register(KTO)
