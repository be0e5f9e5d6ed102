"""`orpo`: Odds Ratio Preference Optimization on pairs, without a reference model.

TRL keeps ORPO in its experimental package; the import path is pinned here (and tested)
because experimental modules move between releases."""

from __future__ import annotations

from dataclasses import dataclass, field

from ragloop.core import hookimpl
from ragloop.plugins.training.trl_base import TrlMethod, TrlOptions

TRL_MODULE = "trl.experimental.orpo"


@dataclass
class ORPOOptions(TrlOptions):
    beta: float = field(default=0.1, metadata={
        "help": "Weight of the odds-ratio (preference) term against the chosen answers' loss."})

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")


class ORPO(TrlMethod):
    name = "orpo"
    description = "ORPO on pairs: preference and answer loss at once, no reference model (TRL)."
    data_kind = "pairs"
    Config = ORPOOptions
    strips_bos = False       # ORPO tokenizes without special tokens and adds a missing BOS

    def trl_classes(self):
        import importlib
        import warnings
        with warnings.catch_warnings():
            # The "experimental API" notice: the path is pinned and tested on purpose.
            warnings.simplefilter("ignore")
            module = importlib.import_module(TRL_MODULE)
        return module.ORPOConfig, module.ORPOTrainer

    def method_args(self, job) -> dict:
        # ORPO's collator needs the tokenized columns the trainer would otherwise drop.
        return dict(beta=self.config.beta, remove_unused_columns=False)


@hookimpl
def register_training_methods(register):
    register(ORPO)
