"""DPO's shared-prompt forward: the packed pair rows score every answer token exactly as
TRL's own forward does (values and gradients), other batches go to TRL untouched, and a
whole training run gives the same losses and weights with and without it."""

import json
from pathlib import Path

import pytest
from cli_helpers import run
from test_train import render, tiny
from tiny_models import tiny_causal_lm

from ragloop.plugins.training import dpo_shared_prompt
from ragloop.plugins.training.dpo_shared_prompt import pair_layout, share_prompts

FIELDS = ("log_probs", "entropy", "mean_logits")


def lora_model(checkpointing=False):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm(), dtype=torch.float32)
    if checkpointing:
        model.activation_checkpointing_enable()
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                             lora_dropout=0.0, init_lora_weights=False))
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    model.train()
    return model


def pair_batch(triples):
    """TRL's own collation of (prompt, chosen, rejected) texts."""
    from transformers import AutoTokenizer
    from trl.trainer.dpo_trainer import DataCollatorForPreference
    tok = AutoTokenizer.from_pretrained(tiny_causal_lm())
    eos = [tok.eos_token_id]
    examples = [dict(prompt_ids=tok(p)["input_ids"], chosen_ids=tok(c)["input_ids"] + eos,
                     rejected_ids=tok(r)["input_ids"] + eos) for p, c, r in triples]
    batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)(examples)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    return dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)


TRIPLES = [("the question is what is the capital of france", " paris", " london is big and old"),
           ("a long prompt about the river and the city of rome in italy and the people", " one two",
            " three")]


def score(batch, shared, checkpointing=False):
    model = lora_model(checkpointing)
    if shared:
        assert share_prompts(model.get_base_model())
    out = model(**batch, fused_lm_head=True, use_cache=False)
    (out.log_probs.sum() + out.log_probs[:, :3].sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out, grads, model.get_base_model()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_pairs_score_like_separate_rows(checkpointing):
    import torch
    batch = pair_batch(TRIPLES)
    plain, plain_grads, _ = score(batch, False, checkpointing)
    packed, packed_grads, base = score(batch, True, checkpointing)
    assert base._ragloop_packed_calls == 1
    for field in FIELDS:
        torch.testing.assert_close(getattr(packed, field), getattr(plain, field), atol=2e-5, rtol=1e-4)
    assert torch.equal(packed.is_top1, plain.is_top1) and torch.equal(packed.label_mask, plain.label_mask)
    assert packed.log_probs.abs().sum() > 0
    assert set(packed_grads) == set(plain_grads)
    for name, grad in plain_grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-4, rtol=1e-3)


def test_batches_that_are_not_pairs_of_one_prompt_go_to_trls_forward():
    import torch
    batch = pair_batch(TRIPLES)
    assert pair_layout(batch["input_ids"], batch["attention_mask"], batch["labels"]) is not None
    # Chosen and rejected rows with different prompts, an odd row count, no answer tokens.
    mismatched = dict(batch, input_ids=batch["input_ids"].flip(0))
    assert pair_layout(mismatched["input_ids"], batch["attention_mask"], batch["labels"]) is None
    assert pair_layout(batch["input_ids"][:3], batch["attention_mask"][:3], batch["labels"][:3]) is None
    assert pair_layout(batch["input_ids"], batch["attention_mask"],
                       torch.full_like(batch["labels"], -100)) is None
    model = lora_model()
    base = model.get_base_model()
    share_prompts(base)
    plain = model(**mismatched, fused_lm_head=True, use_cache=False)
    hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert base._ragloop_packed_calls == 0
    assert plain.log_probs.shape == (4, batch["input_ids"].shape[1] - 1)
    assert hidden.logits.shape[-1] == base.config.vocab_size     # generation-style call untouched


def test_models_whose_attention_cannot_be_packed_are_left_alone():
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm())
    model.config.get_text_config().sliding_window = 16
    forward = model.forward
    assert share_prompts(model) is False and model.forward == forward


def test_dpo_training_gives_the_same_losses_and_weights_with_and_without_sharing(
        tmp_path, ragloop_home, monkeypatch):
    import torch
    from safetensors.torch import load_file
    calls = []
    packed = dpo_shared_prompt.packed_forward
    monkeypatch.setattr(dpo_shared_prompt, "packed_forward",
                        lambda *a: calls.append(1) or packed(*a))
    data = tmp_path / "pairs.jsonl"
    passage = "the river and the city of rome in italy and the people of the capital " * 3
    data.write_text("".join(json.dumps({
        "prompt": render(f"{passage} what is the capital of france {i}"),
        "chosen": f"paris {i}", "rejected": f"london berlin {'rome ' * (i % 3)}{i}"}) + "\n"
        for i in range(8)))
    results = {}
    for share in ("true", "false"):
        out = run("train", "--method", "dpo", "--data", data, "--max-steps", "3", "--lr", "1e-2",
                  "--batch-size", "2", "-o", "max_length=256", "-o", f"share_prompts={share}",
                  *tiny(), "--name", f"s-{share}", "--json").stdout
        record = json.loads((Path(json.loads(out)["run_dir"]) / "run.json").read_text())
        weights = load_file(ragloop_home / "adapters" / f"s-{share}" / "adapter_model.safetensors")
        results[share] = [e["loss"] for e in record["log_history"] if "loss" in e], weights
        if share == "true":
            # Reference pass over 4 batches up front, then 3 training steps.
            assert len(calls) == 7
    (shared_losses, shared_w), (plain_losses, plain_w) = results["true"], results["false"]
    assert len(shared_losses) == 3 and shared_losses != [shared_losses[0]] * 3
    assert shared_losses == pytest.approx(plain_losses, abs=1e-4)
    for name, weight in plain_w.items():
        torch.testing.assert_close(shared_w[name], weight, atol=1e-4, rtol=1e-3)
