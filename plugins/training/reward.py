"""`reward`: a reward model on pairs (TRL's RewardTrainer): the base model with a one-output
sequence-classification head, trained with LoRA so that prompt + chosen scores above
prompt + rejected. The adapter folder holds the LoRA weights and the head (PEFT
`modules_to_save`), so `load_reward_model` can score text again; `rlhf` uses it.

    scorer = load_reward_model(ws, "my-reward")
    scorer.score([(prompt, answer), ...])   # -> [float, ...], higher is better
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ragloop.core import RagloopError, hookimpl
from ragloop.plugins.hf.common import library_warnings_hidden, quiet_transformers, short_error
from ragloop.plugins.hf.loader import load_sequence_classifier
from ragloop.plugins.training.trl_base import (
    TrlMethod,
    TrlOptions,
    early_stopping_callbacks,
    fit,
    load_tokenizer,
    phase,
    prepare_dataset,
    progress_callback,
    tokenizing,
    training_args,
)

HEAD = "score"     # the classification head of transformers' *ForSequenceClassification


@dataclass
class RewardOptions(TrlOptions):
    center_rewards_coefficient: float = field(default=0.0, metadata={
        "help": "Pull the mean reward towards 0 (TRL suggests 0.01); 0 = off."})

    def __post_init__(self):
        super().__post_init__()
        if self.center_rewards_coefficient < 0:
            raise ValueError("center_rewards_coefficient must be 0 or more")


def _seq_cls_model(path: str, tokenizer, adapter=None):
    # Without a pad id the head cannot find each sequence's last token in a padded batch.
    return load_sequence_classifier(path, adapter=adapter, num_labels=1, dtype="float32",
                                    device=None, pad_token_id=tokenizer.pad_token_id)


class Reward(TrlMethod):
    name = "reward"
    description = "A reward model (base + score head, LoRA) on pairs (TRL RewardTrainer); rlhf uses it."
    data_kind = "pairs"
    Config = RewardOptions
    default_learning_rate = 1e-4

    def train(self, job) -> dict:
        quiet_transformers()
        from datasets.utils.logging import disable_progress_bar
        from peft import LoraConfig
        from trl import RewardConfig, RewardTrainer
        disable_progress_bar()
        os.environ["TQDM_DISABLE"] = "1"
        c, s = self.config, job.settings
        phase(job, "loading model")
        tokenizer = load_tokenizer(job.base_model)
        args = RewardConfig(**training_args(job),
                            center_rewards_coefficient=c.center_rewards_coefficient or None)
        model = _seq_cls_model(job.base_model, tokenizer)
        peft = None if s.full else LoraConfig(
            r=s.lora_r, lora_alpha=c.lora_alpha or 2 * s.lora_r, lora_dropout=c.lora_dropout,
            target_modules=list(c.target_modules), modules_to_save=[HEAD], task_type="SEQ_CLS")
        phase(job, tokenizing(job))
        with library_warnings_hidden():
            try:
                trainer = RewardTrainer(
                    model=model, args=args, processing_class=tokenizer,
                    callbacks=[progress_callback(job), *early_stopping_callbacks(job)],
                    train_dataset=prepare_dataset(self, job.dataset, tokenizer),
                    eval_dataset=prepare_dataset(self, job.eval_dataset, tokenizer), peft_config=peft)
            except ValueError as exc:
                raise RagloopError(f"reward: {short_error(exc, 300)}") from None
            metrics = fit(trainer, job)
        if job.data.eval:
            scores = trainer.evaluate()
            metrics.update({k: v for k, v in scores.items() if k in ("eval_accuracy", "eval_loss",
                                                                      "eval_margin")})
        return metrics


class RewardScorer:
    """A trained reward adapter, loaded for scoring (prompt, answer) pairs in float32."""

    def __init__(self, folder: str | Path, base_model: str, batch_size: int = 4):
        import torch
        quiet_transformers()
        self.tokenizer = load_tokenizer(base_model)
        self.model = _seq_cls_model(base_model, self.tokenizer, adapter=folder).eval()
        self.batch_size = batch_size
        self._torch = torch

    def score(self, pairs: list[tuple[str, str]], max_length: int = 1024) -> list[float]:
        tok, eos = self.tokenizer, self.tokenizer.eos_token or ""
        bos = tok.bos_token if tok.bos_token and TrlMethod.strips_bos else None
        # The texts the trainer scored: prompt (without a leading BOS) + answer + EOS.
        texts = []
        for prompt, answer in pairs:
            if bos and prompt.startswith(bos) and tok("a")["input_ids"][:1] == [tok.bos_token_id]:
                prompt = prompt[len(bos):]
            texts.append(prompt + answer + ("" if answer.endswith(eos) else eos))
        out: list[float] = []
        old_side, tok.truncation_side = tok.truncation_side, "left"   # keep the answer
        try:
            for i in range(0, len(texts), self.batch_size):
                batch = tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                            truncation=True, max_length=max_length)
                with self._torch.inference_mode():
                    out += self.model(**batch).logits[:, 0].float().tolist()
        finally:
            tok.truncation_side = old_side
        return out


def load_reward_model(ws, name: str, base_model: str | None = None) -> RewardScorer:
    """A `reward` adapter of the workspace (by name or folder), ready to score."""
    from ragloop.core import find_adapter
    meta = find_adapter(ws, name)
    if meta.get("method") != "reward":
        raise RagloopError(f"adapter {meta['name']!r} is a {meta.get('method') or 'unknown'} "
                           f"adapter, not a reward model; train one with "
                           f"`ragloop train --method reward`")
    base = base_model or meta.get("base_model")
    if not base:
        raise RagloopError(f"adapter {meta['name']!r} does not record its base model")
    return RewardScorer(meta["path"], base)


@hookimpl
def register_training_methods(register):
    register(Reward)
