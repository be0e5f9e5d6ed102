"""`dpo`: Direct Preference Optimization on pairs (TRL's DPOTrainer).

`sft_weight` adds the negative log-likelihood of the chosen answers to the DPO loss (the RPO
objective, "DPO with an SFT term"): TRL 1.16 has no `rpo_alpha`, but it sums the losses named
in `loss_type` with `loss_weights`, and its loss "sft" is exactly that term. `sft+dpo`
(sft_dpo.py) is this method with the term on by default."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ragloop.core import hookimpl
from ragloop.plugins.training.trl_base import TrlMethod, TrlOptions


@dataclass
class DPOOptions(TrlOptions):
    beta: float = field(default=0.1, metadata={
        "help": "How far the adapter may move from the base model: higher stays closer."})
    loss_type: str = field(default="sigmoid", metadata={
        "help": "TRL loss: sigmoid (DPO), ipo, hinge, robust, apo_zero, ..."})
    precompute_ref_log_probs: bool | None = field(default=None, metadata={
        "help": "Score every row with the base model once, before training, instead of at "
                "each step (one forward less per step); none = on for CPU, off otherwise."})
    share_prompts: bool = field(default=True, metadata={
        "help": "Score a pair's chosen and rejected answers in one packed row, so the prompt "
                "runs once instead of twice (same losses; off = TRL's own forward)."})
    sft_weight: float = field(default=0.0, metadata={
        "help": "Weight of an SFT term (the chosen answers' mean token NLL) added to the loss; "
                "0 = plain DPO (see the sft+dpo method)."})
    truncation_mode: Literal["keep_start", "keep_end"] = field(default="keep_start", metadata={
        "help": "Which end of a too-long prompt + answer to keep."})

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if self.sft_weight < 0:
            raise ValueError(f"sft_weight must be 0 or more, got {self.sft_weight}")


class DPO(TrlMethod):
    name = "dpo"
    description = "Direct Preference Optimization on chosen/rejected pairs (TRL DPOTrainer)."
    data_kind = "pairs"
    Config = DPOOptions
    # What `train --search` maximizes: TRL's share of held-out pairs whose chosen answer gets
    # the higher implicit reward.
    search_metric = "eval_rewards/accuracies"

    def trl_classes(self):
        from trl import DPOConfig, DPOTrainer
        if self.config.share_prompts:
            from ragloop.plugins.training.dpo_shared_prompt import trainer_class
            return DPOConfig, trainer_class()
        return DPOConfig, DPOTrainer

    def method_args(self, job) -> dict:
        c = self.config
        precompute = c.precompute_ref_log_probs
        if precompute is None:
            precompute = job.device == "cpu"
        losses, weights = [c.loss_type], [1.0]
        if c.sft_weight:
            losses, weights = [*losses, "sft"], [*weights, c.sft_weight]
        return dict(beta=c.beta, loss_type=losses, loss_weights=weights,
                    truncation_mode=c.truncation_mode,
                    precompute_ref_log_probs=precompute)


@hookimpl
def register_training_methods(register):
    register(DPO)
