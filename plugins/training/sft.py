"""`sft`: supervised fine-tuning on good answers (TRL's SFTTrainer, prompt-completion rows)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ragloop.core import hookimpl
from ragloop.plugins.training.trl_base import TrlMethod, TrlOptions


@dataclass
class SFTOptions(TrlOptions):
    completion_only_loss: bool = field(default=True, metadata={
        "help": "Learn from the answer tokens only, not from the prompt and passages."})


class SFT(TrlMethod):
    name = "sft"
    description = "Supervised fine-tuning on chosen or well-scored answers (TRL SFTTrainer)."
    data_kind = "sft"
    Config = SFTOptions
    default_learning_rate = 1e-4

    def trl_classes(self):
        from trl import SFTConfig, SFTTrainer
        return SFTConfig, SFTTrainer

    def method_args(self, job) -> dict:
        return dict(completion_only_loss=self.config.completion_only_loss)


@hookimpl
def register_training_methods(register):
    register(SFT)
