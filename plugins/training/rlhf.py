"""`rlhf`: online training against a reward model. The policy (base + LoRA) samples
answers to the rated questions' exact prompts (retrieved passages included), a `reward`
adapter (-o reward_adapter=NAME) scores them, and TRL's RLOO (default) or GRPO
(-o algorithm=grpo) moves the policy towards the better-scored ones.

Both trainers run on CPU with TRL 1.16. RLOO is the default: it needs no value model and,
with its leave-one-out baseline, learns from as few as 2 samples per prompt. Generation is
the expensive part on a CPU, so answers are kept short by default (48 tokens, 2 samples).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from ragloop.core import RagloopError, hookimpl
from ragloop.plugins.hf.common import library_warnings_hidden, quiet_transformers, short_error
from ragloop.plugins.hf.loader import load_causal_lm
from ragloop.plugins.training.trl_base import (
    TrlMethod,
    TrlOptions,
    fit,
    load_tokenizer,
    lora_config,
    phase,
    prepare_dataset,
    progress_callback,
    training_args,
)

NEED_REWARD = "train a reward model first: ragloop train --method reward"
# TrainingArguments fields that RLOO/GRPO configs do not take, or that need held-out prompts.
_NOT_FOR_ONLINE = ("max_length",)


@dataclass
class RLHFOptions(TrlOptions):
    reward_adapter: str = field(default="", metadata={
        "help": "The `reward` adapter that scores the answers (name or folder); required."})
    algorithm: Literal["rloo", "grpo"] = field(default="rloo", metadata={
        "help": "rloo (REINFORCE leave-one-out, default) or grpo (group-relative PPO)."})
    num_generations: int = field(default=2, metadata={
        "help": "Answers sampled per prompt; each is compared with the others' mean."})
    max_completion_length: int = field(default=48, metadata={
        "help": "Longest sampled answer, in tokens (generation dominates a CPU step)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    beta: float = field(default=0.05, metadata={
        "help": "KL penalty towards the base model; 0 = none (and no reference forward)."})

    def __post_init__(self):
        super().__post_init__()
        if self.num_generations < 2:
            raise ValueError("num_generations must be at least 2 (the baseline is the others' mean)")
        if self.max_completion_length < 1:
            raise ValueError("max_completion_length must be at least 1")
        if self.temperature <= 0:
            raise ValueError("temperature must be above 0: the samples must differ")
        if self.beta < 0:
            raise ValueError("beta must be 0 or more")


def _prompts(rows: list[dict]) -> list[dict]:
    """Each distinct prompt once, in order: rated rows repeat a question per answer."""
    seen, out = set(), []
    for row in rows:
        if row["prompt"] not in seen:
            seen.add(row["prompt"])
            out.append({"prompt": row["prompt"]})
    return out


class RLHF(TrlMethod):
    name = "rlhf"
    description = ("Online RL (TRL RLOO or GRPO): the policy answers rated questions, a reward "
                   "adapter scores the answers.")
    data_kind = "kto"         # the broadest shape: every rated answer's prompt; pairs convert
    Config = RLHFOptions
    default_learning_rate = 1e-5

    def check(self, job) -> None:
        from ragloop.core import check_base
        if not self.config.reward_adapter:
            raise RagloopError(f"no reward model given; {NEED_REWARD}, then pass it with "
                               f"-o reward_adapter=NAME")
        self.reward_meta = self._reward_meta()
        check_base(self.reward_meta, job.base_model_id)
        if job.settings.early_stopping is not None:
            raise RagloopError("rlhf has no held-out loss to stop on (it scores new answers "
                               "instead); leave out --early-stopping")
        super().check(job)
        if job.data.eval:
            job.notes.append("rlhf ignores the held-out split: it scores new answers instead")

    def _reward_meta(self) -> dict:
        from pathlib import Path

        from ragloop.core import read_metadata
        name = self.config.reward_adapter
        folder = Path(self.workspace.adapters_dir) / name if self.workspace else None
        if folder is None or not folder.is_dir():
            folder = Path(name).expanduser()
        if not folder.is_dir() or name.startswith("."):
            raise RagloopError(f"no reward adapter {name!r}; {NEED_REWARD}")
        meta = read_metadata(folder.resolve())
        if meta.get("method") != "reward":
            raise RagloopError(f"adapter {name!r} was trained with "
                               f"{meta.get('method') or 'an unknown method'}, not reward; "
                               f"{NEED_REWARD}")
        return meta

    def train(self, job) -> dict:
        quiet_transformers()
        from datasets import Dataset
        from datasets.utils.logging import disable_progress_bar

        from ragloop.plugins.training.reward import load_reward_model
        disable_progress_bar()
        os.environ["TQDM_DISABLE"] = "1"
        c, s = self.config, job.settings
        if not hasattr(self, "reward_meta"):       # a resumed job skips check()
            self.reward_meta = self._reward_meta()
        phase(job, f"loading reward model {self.config.reward_adapter}")
        scorer = load_reward_model(self.workspace, self.reward_meta["path"])
        max_length = c.max_length

        def reward(prompts, completions, **_):
            return scorer.score(list(zip(prompts, completions)), max_length=max_length)

        reward.__name__ = "reward_model"
        tokenizer = load_tokenizer(job.base_model)
        tokenizer.padding_side = "left"            # generation continues the prompt's end
        if c.algorithm == "rloo":
            from trl import RLOOConfig as Config
            from trl import RLOOTrainer as Trainer
        else:
            from trl import GRPOConfig as Config
            from trl import GRPOTrainer as Trainer
        args = {k: v for k, v in training_args(job).items() if k not in _NOT_FOR_ONLINE}
        args.update(eval_strategy="no", load_best_model_at_end=False,
                    # batch_size counts prompts; the trainers count answers
                    per_device_train_batch_size=s.batch_size * c.num_generations,
                    num_generations=c.num_generations, max_completion_length=c.max_completion_length,
                    temperature=c.temperature, beta=c.beta, log_completions=False)
        rows = _prompts(job.data.train)
        with library_warnings_hidden():
            phase(job, "loading model")
            model = load_causal_lm(job.base_model, dtype="float32", device=None)
            phase(job, f"preparing {len(rows)} prompts")
            try:
                trainer = Trainer(model=model, reward_funcs=reward, args=Config(**args),
                                  train_dataset=prepare_dataset(self, Dataset.from_list(rows), tokenizer),
                                  processing_class=tokenizer, callbacks=[progress_callback(job)],
                                  peft_config=None if s.full else lora_config(job))
            except ValueError as exc:
                raise RagloopError(f"rlhf: {short_error(exc, 300)}") from None
            metrics = fit(trainer, job)
        rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
        if rewards:
            metrics.update(first_reward=rewards[0], final_reward=rewards[-1])
        metrics["prompts"] = len(rows)
        return metrics


@hookimpl
def register_training_methods(register):
    register(RLHF)
