"""Shared-prompt forward for DPO: a pair's chosen and rejected answers are scored in one packed
row `[prompt, chosen, rejected]` instead of two rows that each repeat the prompt.

TRL's DPO batch is `[chosen_1 .. chosen_B, rejected_1 .. rejected_B]`, each row prompt +
answer, right-padded. With RAG prompts (passages) a few hundred tokens long and answers of a
few dozen, the prompt is ~90% of what the model runs, twice. Packed, each pair's prompt runs
once: a 4D attention mask keeps the rejected answer from seeing the chosen one, and position
ids restart the rejected answer where the prompt ends, so every answer token sees exactly
what it sees in its own row. Only answer positions go through the LM head (TRL's chunked
log-prob function, fed just those rows; on a GPU TRL skips prompt positions itself, on a CPU
it scores them all).

`share_prompts(model)` wraps the forward TRL's `add_fused_lm_head` installed. A call that is
not a pair batch of this shape (or a model this cannot pack: sliding windows, attention
without 4D masks, logit scaling) goes to TRL's forward unchanged. Works under gradient
checkpointing (no KV cache is involved).
"""

from __future__ import annotations

import functools
import types

# A call with any other argument set (PEFT passes output_attentions=None and the like) is not
# one this packing covers. The output is always a ModelOutput, so return_dict is moot.
_PLAIN_KWARGS = {"input_ids", "attention_mask", "use_cache", "output_router_logits", "return_dict"}
_LOGIT_SCALES = ("final_logit_softcapping", "logit_scale", "output_multiplier",
                 "lm_head_multiplier", "logits_scaling")
_CHUNK = 32768          # vocabulary tile of TRL's chunked log-prob function


def packable(model) -> bool:
    """Whether `model`'s attention takes a custom 4D mask that means what the packing needs."""
    config = model.config.get_text_config()
    return (model.config._attn_implementation in ("sdpa", "eager")
            and getattr(config, "sliding_window", None) is None
            and not getattr(config, "use_sliding_window", False)
            and all(getattr(config, name, None) in (None, 1.0) for name in _LOGIT_SCALES))


def share_prompts(model) -> bool:
    """Route `model`'s pair-batch fused-head calls through the packed forward. Idempotent;
    False when the model cannot be packed (its forward is left alone)."""
    if getattr(model, "_ragloop_shared_prompt", False):
        return True
    if not packable(model):
        return False
    fused = model.forward

    @functools.wraps(fused)
    def forward(self, *args, fused_lm_head=False, labels=None, **kwargs):
        pairs = None
        given = {k for k, v in kwargs.items() if v is not None}
        if fused_lm_head and not args and labels is not None and "input_ids" in given \
                and given <= _PLAIN_KWARGS and not kwargs.get("output_router_logits") \
                and not _sharded_head(self):
            pairs = pair_layout(kwargs["input_ids"], kwargs.get("attention_mask"), labels)
        if pairs is None:
            if fused_lm_head:
                kwargs["fused_lm_head"] = True
            return fused(*args, labels=labels, **kwargs)
        self._ragloop_packed_calls += 1
        return packed_forward(self, kwargs["input_ids"], labels, pairs)

    model.forward = types.MethodType(forward, model)
    model._ragloop_shared_prompt = True
    model._ragloop_packed_calls = 0
    return True


def _sharded_head(model) -> bool:
    # A head FSDP left sharded (a DTensor) needs TRL's gathering; TRL's forward has it.
    return type(model.get_output_embeddings().weight).__name__ == "DTensor"


def pair_layout(input_ids, attention_mask, labels):
    """[(prompt length, chosen length, rejected length)] per pair, or None when the batch is
    not [chosen rows; rejected rows] with equal prompts, labels exactly on the answers and
    right padding."""
    import torch
    rows, width = input_ids.shape
    if rows % 2 or rows == 0:
        return None
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    valid = labels != -100
    lengths = attention_mask.sum(1)
    prompt = valid.int().argmax(1)
    answer = valid.sum(1)
    positions = torch.arange(width, device=input_ids.device)
    contiguous = (valid == ((positions >= prompt[:, None]) & (positions < lengths[:, None]))).all()
    padded_right = (attention_mask.bool() == (positions < lengths[:, None])).all()
    half = rows // 2
    same_prompt = (prompt[:half] == prompt[half:]).all()
    if not (valid.any(1).all() and contiguous and padded_right and same_prompt and (prompt > 0).all()):
        return None
    in_prompt = positions < prompt[:half, None]
    if ((input_ids[:half] != input_ids[half:]) & in_prompt).any():
        return None
    return [(int(p), int(c), int(r)) for p, c, r in
            zip(prompt[:half].tolist(), answer[:half].tolist(), answer[half:].tolist())]


def packed_inputs(input_ids, pairs, dtype):
    """Packed ids, position ids, the 4D additive mask and, per answer token in TRL's output
    order (chosen rows, then rejected rows), the packed position whose hidden state predicts
    it and the token it predicts."""
    import torch
    device, half = input_ids.device, len(pairs)
    width = max(p + c + r for p, c, r in pairs)
    ids = torch.zeros((half, width), dtype=input_ids.dtype, device=device)
    pos = torch.zeros_like(ids)
    segment = torch.full((half, width), 3, device=device)      # 0 prompt 1 chosen 2 rejected 3 pad
    for i, (p, c, r) in enumerate(pairs):
        ids[i, :p + c] = input_ids[i, :p + c]
        ids[i, p + c:p + c + r] = input_ids[i + half, p:p + r]
        pos[i, :p + c] = torch.arange(p + c)
        pos[i, p + c:p + c + r] = torch.arange(p, p + r)
        segment[i, :p], segment[i, p:p + c], segment[i, p + c:p + c + r] = 0, 1, 2
    query, key = segment[:, :, None], segment[:, None, :]
    causal = torch.ones((width, width), dtype=torch.bool, device=device).tril()
    visible = causal & (key != 3) & ~((query == 2) & (key == 1))
    # A padding position sees itself, so no softmax row is empty (NaN in SDPA's backward).
    visible |= torch.eye(width, dtype=torch.bool, device=device)
    mask = torch.zeros(visible.shape, dtype=dtype, device=device)
    mask = mask.masked_fill(~visible, torch.finfo(dtype).min)[:, None]
    rows, sources, targets = [], [], []
    for kind in (1, 2):
        for i, (p, c, r) in enumerate(pairs):
            start, count = (p, c) if kind == 1 else (p + c, r)
            # The first answer token is predicted by the prompt's last position, the others by
            # the answer's own previous position.
            rows += [i] * count
            sources += [p - 1] + list(range(start, start + count - 1))
            targets += ids[i, start:start + count].tolist()
    as_tensor = functools.partial(torch.tensor, device=device)
    return ids, pos, mask, as_tensor(rows), as_tensor(sources), as_tensor(targets)


def packed_forward(model, input_ids, labels, pairs):
    """TRL's FusedCausalLMOutput for the pair batch, from one packed backbone pass."""
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction
    from trl.trainer.utils import FusedCausalLMOutput
    head = model.get_output_embeddings()
    ids, pos, mask, rows, sources, targets = packed_inputs(input_ids, pairs, head.weight.dtype)
    hidden = model.base_model(input_ids=ids, position_ids=pos, attention_mask=mask,
                              use_cache=False).last_hidden_state
    picked = hidden[rows, sources].to(head.weight.device)
    outputs = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
    per_token = ChunkedLogProbFunction.apply(picked, head.weight, head.bias, targets.to(picked.device),
                                            1.0, _CHUNK, None, 1.0, outputs)
    label_mask = labels[:, 1:] != -100
    log_probs, entropy, log_sum_sq, mean_logits, is_top1 = (
        x.new_zeros(label_mask.shape).masked_scatter(label_mask, x) for x in per_token)
    return FusedCausalLMOutput(loss=-log_probs.sum() / label_mask.sum().clamp(min=1),
                               log_probs=log_probs, entropy=entropy, log_sum_sq_probs=log_sum_sq,
                               mean_logits=mean_logits, is_top1=is_top1, label_mask=label_mask)


@functools.cache
def trainer_class():
    """TRL's DPOTrainer with its policy (and reference model, if any) sharing prompts."""
    from trl import DPOTrainer

    class SharedPromptDPOTrainer(DPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.share_prompts()

        # TRL's __init__ scores the reference pass up front (precompute_ref_log_probs) right
        # after installing its fused head: packing starts there.
        def _precompute_ref_logps(self, *args, **kwargs):
            self.share_prompts()
            return super()._precompute_ref_logps(*args, **kwargs)

        def share_prompts(self):
            model = self.accelerator.unwrap_model(self.model)
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            for each in (base, self.ref_model):
                if each is not None:
                    share_prompts(each)

    return SharedPromptDPOTrainer
