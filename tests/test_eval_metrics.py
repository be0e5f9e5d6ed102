"""The evaluators' metrics on hand-built cases: rankings against judgments, the Wilson
interval, and the implicit reward of LoRA adapters built to be neutral or to prefer one
answer."""

import math

import pytest
from tiny_models import tiny_causal_lm

from ragloop.plugins.evaluators.retrieval import rank_metrics
from ragloop.plugins.evaluators.reward import (
    completion_logps,
    encode_pair,
    implicit_rewards,
    reward_metrics,
    sequence_logps,
)
from ragloop.plugins.evaluators.winrate import wilson, win_rate_metrics

# ---- retrieval --------------------------------------------------------------------------

def test_rank_metrics_on_a_constructed_ranking():
    ranked = ["x", "r1", "y", "r2", "z", "w"]
    m = rank_metrics(ranked, {"r1", "r2", "r3"}, k=4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["mrr"] == pytest.approx(1 / 2)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)


def test_rank_metrics_cutoffs_and_perfect_ranking():
    assert rank_metrics(["r"], {"r"}, k=1) == {"recall": 1.0, "mrr": 1.0, "ndcg": 1.0}
    # Relevant only at rank 11: outside recall@4, MRR@10 and nDCG@10.
    ranked = [f"n{i}" for i in range(10)] + ["r"]
    assert rank_metrics(ranked, {"r"}, k=4) == {"recall": 0.0, "mrr": 0.0, "ndcg": 0.0}
    # recall@k looks at the top k only.
    assert rank_metrics(["a", "b", "r"], {"r"}, k=2)["recall"] == 0.0
    assert rank_metrics(["a", "b", "r"], {"r"}, k=3)["recall"] == 1.0


def test_a_passage_ranked_twice_counts_once():
    # Two chunks with the same text (a duplicated file) must not push nDCG above 1.
    m = rank_metrics(["r", "r", "x"], {"r"}, k=2)
    assert m == {"recall": 1.0, "mrr": 1.0, "ndcg": 1.0}


# ---- win rate ---------------------------------------------------------------------------

def test_wilson_interval_against_known_values():
    low, high = wilson(0.5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    low, high = wilson(0.0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and round(high, 4) == 0.2775
    # scipy.stats.binomtest(80, 100).proportion_ci(0.9, method="wilson")
    low, high = wilson(0.8, 100, confidence=0.9)
    assert (round(low, 4), round(high, 4)) == (0.7267, 0.8575)
    assert wilson(0.3, 0) == (0.0, 1.0)


def test_win_rate_counts_ties_and_both_bad_as_half_and_ignores_skips():
    m = win_rate_metrics({"win": 5, "tie": 2, "both-bad": 2, "loss": 1, "skip": 4})
    assert m["questions"] == 10 and m["skipped"] == 4
    assert m["win_rate"] == pytest.approx(0.7)
    assert (m["win"], m["tie"], m["both_bad"], m["loss"]) == (5, 2, 2, 1)
    assert (m["ci_low"], m["ci_high"]) == pytest.approx(wilson(0.7, 10))


# ---- reward -----------------------------------------------------------------------------

def test_reward_metrics_accuracy_is_strict():
    m = reward_metrics([1.0, 0.0, -1.0, 2.0], [0.0, 0.0, 0.0, 3.0])
    assert m["accuracy"] == 0.25                     # the 0 vs 0 pair is not a win
    assert m["mean_margin"] == pytest.approx(-0.25)
    assert (m["mean_chosen_reward"], m["mean_rejected_reward"], m["pairs"]) == (0.5, 0.75, 4)


def test_encode_pair_cuts_the_prompt_from_the_left():
    encode = lambda text: [ord(c) for c in text]    # noqa: E731
    ids, start = encode_pair(encode, 0, "abcdef", "xyz", max_length=6)
    assert ids == [ord("e"), ord("f"), ord("x"), ord("y"), ord("z"), 0] and start == 2
    ids, start = encode_pair(encode, None, "ab", "uvwxyz", max_length=4)
    assert ids == [ord("b"), ord("u"), ord("v"), ord("w")] and start == 1


PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
CHOSEN, REJECTED = "Paris is the capital of France.", "the dog is red and the moon is blue"


def _peft(init_lora_weights):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm(), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                             init_lora_weights=init_lora_weights))
    tok = AutoTokenizer.from_pretrained(tiny_causal_lm())
    encode = lambda text: tok(text, add_special_tokens=False)["input_ids"]   # noqa: E731
    pair = [encode_pair(encode, tok.eos_token_id, PROMPT, answer, 256)
            for answer in (CHOSEN, REJECTED)]
    return model, pair


def test_an_adapter_that_changes_nothing_has_zero_reward_and_zero_accuracy():
    model, pair = _peft(True)               # LoRA's B starts at zero: adapter == base
    rewards = implicit_rewards(model.eval(), pair, beta=0.1, batch_size=2)
    assert rewards == pytest.approx([0.0, 0.0], abs=1e-6)
    assert reward_metrics(rewards[:1], rewards[1:])["accuracy"] == 0.0


def test_an_adapter_trained_to_prefer_the_chosen_answer_is_accurate():
    import torch
    model, pair = _peft(False)              # random A and B
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=0.02)
    model.train()
    with torch.no_grad(), model.disable_adapter():
        before = completion_logps(model, pair)
    for _ in range(15):
        chosen, rejected = sequence_logps(model, pair)
        loss = rejected - chosen
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = completion_logps(model, pair)
    rewards = implicit_rewards(model, pair, beta=0.1, batch_size=1)
    # reward = beta * (log p_adapter - log p_base), by definition.
    assert rewards == pytest.approx([0.1 * (a - b) for a, b in zip(after, before)], abs=1e-4)
    m = reward_metrics(rewards[:1], rewards[1:])
    assert m["accuracy"] == 1.0 and m["mean_margin"] > 0
    swapped = reward_metrics(rewards[1:], rewards[:1])
    assert swapped["accuracy"] == 0.0 and swapped["mean_margin"] == pytest.approx(-m["mean_margin"])
    # Batched (with padding) and one at a time agree.
    assert implicit_rewards(model, pair, 0.1, 2) == pytest.approx(rewards, abs=1e-4)


def test_completion_logps_match_a_plain_full_forward():
    import torch
    model, pair = _peft(False)
    model.eval()
    ids, start = pair[0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        logps = torch.log_softmax(logits, dim=-1)
        expected = sum(float(logps[j - 1, ids[j]]) for j in range(start, len(ids)))
        assert completion_logps(model, pair)[0] == pytest.approx(expected, abs=1e-4)
