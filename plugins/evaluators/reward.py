"""The `reward` evaluator: does the adapter's implicit DPO reward prefer the answers people
(or the judge) preferred, on pairs it never trained on?

For an answer y to prompt x, reward(y) = beta * (log p_adapter(y|x) - log p_base(y|x)),
the log-probabilities summed over y's tokens (and the end-of-sequence token the trainer
appends), x being the exact prompt the answers were generated from. Over the held-out
pairs: accuracy = share of pairs with reward(chosen) > reward(rejected) (strictly: an
adapter that changed nothing scores 0, not 0.5), and the mean margin reward(chosen) -
reward(rejected). beta is the adapter's own training beta when its record has one.

Held out: pairs whose question the adapter never trained on (`-o reward.held_out=comparison`:
whose comparison and answers it never trained on). Base and adapter are the same PEFT model,
the adapter switched off for the base, scored in float32 on the CPU; a prompt too long for
max_length loses its start (the answer and the end of the prompt matter most).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ragloop.core import Evaluator, hookimpl
from ragloop.plugins.hf.loader import load_causal_lm

DEFAULT_BETA = 0.1            # TRL's DPO default
DEFAULT_MAX_LENGTH = 1024


@dataclass
class RewardOptions:
    beta: float = field(default=0.0, metadata={
        "help": f"Reward scale; 0 = the beta the adapter was trained with, else {DEFAULT_BETA}."})
    held_out: Literal["question", "comparison"] = field(default="question", metadata={
        "help": "question: pairs on questions the adapter never trained on; comparison: "
                "pairs it never trained on (their question may have been)."})
    batch_size: int = field(default=4, metadata={"help": "Sequences per forward pass."})
    max_length: int = field(default=0, metadata={
        "help": f"Longest prompt + answer in tokens; 0 = the adapter's training max_length, "
                f"else {DEFAULT_MAX_LENGTH}."})

    def __post_init__(self):
        if self.beta < 0:
            raise ValueError(f"beta must be 0 (the adapter's own) or positive, got {self.beta}")
        if not 1 <= self.batch_size <= 64:
            raise ValueError(f"batch_size must be from 1 to 64, got {self.batch_size}")
        if self.max_length != 0 and self.max_length < 2:
            raise ValueError(f"max_length must be 0 (automatic) or at least 2, "
                             f"got {self.max_length}")


def encode_pair(encode, eos_id, prompt: str, completion: str, max_length: int):
    """(token ids, index of the first completion token), the prompt cut from the left."""
    answer = encode(completion) + ([eos_id] if eos_id is not None else [])
    answer = answer[:max_length - 1]
    context = encode(prompt)[-(max_length - len(answer)):]
    return context + answer, len(context)


def sequence_logps(model, batch):
    """Summed log-probability of each sequence's completion tokens, as a tensor (so it can
    be trained through); `batch` holds (ids, start) pairs, right-padded here."""
    import torch
    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.zeros((len(batch), width), dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for i, (ids, _) in enumerate(batch):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        attention[i, :len(ids)] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    # The logits at position j predict token j + 1. Only the answers' positions are needed,
    # and full logits (batch x length x vocabulary) would take most of the memory: keep the
    # tail from the earliest answer on, where the model supports it.
    first = min(max(start, 1) for _, start in batch) - 1
    try:
        logits = model(input_ids=input_ids, attention_mask=attention,
                       logits_to_keep=width - first).logits
    except TypeError:
        logits = model(input_ids=input_ids, attention_mask=attention).logits
    offset = width - logits.shape[1]
    sums = []
    for i, (ids, start) in enumerate(batch):
        begin = max(start, 1) - 1
        rows = torch.log_softmax(logits[i, begin - offset:len(ids) - 1 - offset].float(), dim=-1)
        sums.append(rows.gather(1, input_ids[i, begin + 1:len(ids), None]).sum())
    return torch.stack(sums)


def completion_logps(model, batch) -> list[float]:
    return sequence_logps(model, batch).detach().tolist()


def implicit_rewards(model, sequences, beta: float, batch_size: int, advance=None) -> list[float]:
    """beta * (log p_adapter - log p_base) for each (ids, start); `model` is a PeftModel."""
    import torch
    rewards = []
    with torch.inference_mode():
        for i in range(0, len(sequences), batch_size):
            batch = sequences[i:i + batch_size]
            policy = completion_logps(model, batch)
            with model.disable_adapter():
                base = completion_logps(model, batch)
            rewards += [beta * (p - b) for p, b in zip(policy, base)]
            if advance:
                advance(len(batch))
    return rewards


def reward_metrics(chosen: list[float], rejected: list[float]) -> dict:
    margins = [c - r for c, r in zip(chosen, rejected)]
    n = len(margins)
    return {"accuracy": sum(m > 0 for m in margins) / n, "mean_margin": sum(margins) / n,
            "mean_chosen_reward": sum(chosen) / n, "mean_rejected_reward": sum(rejected) / n,
            "pairs": n}


def scoring_model(context):
    """(PeftModel in float32 on the CPU, tokenizer): the adapter generator's own model when
    it already is one, else a copy loaded for scoring (also for a generator on another
    runtime, `onnx-genai` or `openvino`, whose export came from the same checkpoint); None
    when the generator names no checkpoint to load."""
    import torch
    base_gen, adapter_gen = context.generators()
    model = getattr(adapter_gen, "model", None)
    # Generator.checkpoint(): None for a generator with no weights of its own to load.
    checkpoint = getattr(base_gen, "checkpoint", lambda: None)()
    if not checkpoint:
        return None
    if hasattr(model, "disable_adapter"):
        p = next(model.parameters())
        if p.dtype == torch.float32 and p.device.type == "cpu":
            return model, adapter_gen.tokenizer
        tokenizer = adapter_gen.tokenizer
    else:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    # A GPU, half-precision or other runtime's generator: rewards are differences of large
    # sums, so they are scored in float32, on the CPU for results that do not depend on the
    # device.
    loaded = load_causal_lm(checkpoint, adapter=context.adapter["path"],
                            dtype="float32", device="cpu")
    return loaded.eval(), tokenizer


class RewardEvaluator(Evaluator):
    name = "reward"
    description = "Accuracy and margin of the adapter's implicit DPO reward on held-out pairs."
    Config = RewardOptions

    def evaluate(self, context) -> dict:
        cfg, options = self.config, (context.adapter.get("options") or {})
        rows, notes = context.held_out_pairs(cfg.held_out)
        if not rows:
            held = "question" if cfg.held_out == "question" else "pair"
            return {"skipped": f"no held-out pairs: the adapter trained on every rated {held} "
                               f"(rate new questions, or train with --eval-split)",
                    "notes": notes}
        rows = context.limit(rows)
        method = context.adapter.get("method")
        if method not in (None, "dpo", "kto"):
            notes.append(f"the implicit reward is DPO's; for a {method} adapter it measures "
                         f"only how far the adapter moved each answer's likelihood")
        # ORPO's beta weighs its odds-ratio term: not a reward scale.
        trained_beta = options.get("beta") if method in ("dpo", "kto") else None
        beta = cfg.beta or trained_beta or DEFAULT_BETA
        max_length = cfg.max_length or options.get("max_length") or DEFAULT_MAX_LENGTH
        loaded = scoring_model(context)
        if loaded is None:
            return {"skipped": f"generator {context.settings.generator!r} gives no "
                               f"transformers model to score with", "notes": notes}
        model, tokenizer = loaded
        from ragloop.plugins.hf.common import token_encoder
        encode = token_encoder(tokenizer)
        sequences = [encode_pair(encode, tokenizer.eos_token_id, r["prompt"], answer, max_length)
                     for r in rows for answer in (r["chosen"], r["rejected"])]
        advance = context.progress("Reward", len(sequences))
        rewards = implicit_rewards(model, sequences, beta, cfg.batch_size, advance)
        chosen, rejected = rewards[0::2], rewards[1::2]
        details = [{"comparison_id": r["comparison_id"], "question": r["question"],
                    "chosen_reward": c, "rejected_reward": j, "margin": c - j}
                   for r, c, j in zip(rows, chosen, rejected)]
        metrics = {**reward_metrics(chosen, rejected), "beta": beta}
        return {"metrics": metrics, "notes": notes, "details": details}

    def summary(self, result: dict) -> str:
        m = result["metrics"]
        return (f"accuracy {m['accuracy']:.3f}  mean margin {m['mean_margin']:+.4f}  "
                f"({m['pairs']} pairs, beta {m['beta']:g})")

    def plot(self, result: dict, ax) -> None:
        margins = [d["margin"] for d in result["details"]]
        ax.hist(margins, bins=min(20, max(5, len(margins) // 2)), color="tab:purple")
        ax.axvline(0, color="black", linewidth=1)
        ax.set_xlabel("reward(chosen) - reward(rejected)")
        ax.set_ylabel("pairs")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_title(f"reward margins (accuracy {result['metrics']['accuracy']:.2f})")


@hookimpl
def register_evaluators(register):
    register(RewardEvaluator)
