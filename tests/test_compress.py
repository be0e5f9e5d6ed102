"""Compressors on tiny random Llamas: quantized layers really are quantized and stay close to
float32, pruning reaches its target and shrinks what it says, bitsandbytes stops on a CPU."""

import math
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")

from tiny_models import tiny_causal_lm  # noqa: E402

from ragloop.core.errors import RagloopError  # noqa: E402
from ragloop.plugins.compression import torchao as compress_torchao  # noqa: E402
from ragloop.plugins.compression.common import (  # noqa: E402
    perplexity,
    token_ids,
    weight_stats,
    windows,
)
from ragloop.plugins.hf.compressed import load_compressor  # noqa: E402


def tiny_llama(width=64, seed=0):
    """In memory, 64 wide so every layer fits int4 groups of 32 and 64."""
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=256, hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


IDS = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))


def logits(model):
    with torch.inference_mode():
        return model(input_ids=IDS).logits.float()


def rel_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


SAMPLE = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(2))


def compress(name, model, *options):
    compressor = load_compressor(name, options)
    if compressor.calibration_tokens:
        return compressor.compress(model, calibration=SAMPLE)
    return compressor.compress(model)


def body_linears(model):
    head = model.get_output_embeddings()
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]


def test_int8_dynamic_stores_int8_weights_and_stays_close_to_float32():
    model = tiny_llama()
    ref = logits(model)
    quantized = compress("torchao-int8-dynamic", model)
    fast = compress_torchao.modules()["Int8DynamicLinear"]
    layers = [m for m in quantized.modules() if isinstance(m, fast)]
    assert len(layers) == 14 and all(m.qweight.dtype == torch.int8 for m in layers)
    assert not body_linears(quantized)                       # every body layer was replaced
    assert quantized.lm_head.weight.dtype == torch.float32   # the head is kept by default
    out = logits(quantized)
    assert rel_error(out, ref) < 0.05
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
    generated = quantized.generate(IDS[:1], max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, 29)


@pytest.mark.parametrize("name, options, act_quant", [
    ("torchao-int8", (), False),
    ("torchao-int8-dynamic", ("kernel=torchao",), True),
])
def test_torchao_tensor_subclass_paths(name, options, act_quant):
    model = tiny_llama()
    ref = logits(model)
    quantized = compress(name, model, *options)
    weights = [m.weight for m in body_linears(quantized)]
    assert len(weights) == 14
    assert all(type(w).__name__ == "Int8Tensor" and w.qdata.dtype == torch.int8 for w in weights)
    assert all((w.act_quant_kwargs is not None) == act_quant for w in weights)
    assert rel_error(logits(quantized), ref) < 0.05


def test_the_head_is_quantized_when_asked():
    quantized = compress("torchao-int8", tiny_llama(), "include_lm_head=true")
    assert type(quantized.lm_head.weight).__name__ == "Int8Tensor"
    assert type(quantized.model.embed_tokens.weight) is torch.nn.Parameter   # still float


@pytest.mark.skipif(not compress_torchao.native_bf16(), reason="CPU without native bfloat16")
def test_int4_uses_the_cpu_kernel_on_bfloat16_input():
    model = tiny_llama()
    ref = logits(model)
    quantized = compress("torchao-int4", model, "group_size=32")
    wrapped = [m for m in quantized.modules() if type(m).__name__ == "Bfloat16Input"]
    assert len(wrapped) == 14
    assert all(type(m.inner.weight).__name__ == "Int4OpaqueTensor" for m in wrapped)
    assert rel_error(logits(quantized), ref) < 0.25          # 4 bits: coarse, but close


def test_int4_refuses_a_cpu_without_native_bfloat16(monkeypatch):
    monkeypatch.setattr(compress_torchao, "native_bf16", lambda: False)
    with pytest.raises(RagloopError, match=r"torchao-int4 on this CPU would run ~15x slower"):
        load_compressor("torchao-int4").check("cpu")
    load_compressor("torchao-int4", ["activation_dtype=float32"]).check("cpu")   # forced: ok


def test_int4_says_when_no_layer_fits_its_groups():
    model = tiny_llama(width=48)
    with pytest.raises(RagloopError, match=r"multiple of group_size=64; try -o group_size=32"):
        compress("torchao-int4", model, "activation_dtype=float32")


def test_magnitude_pruning_reaches_the_target_sparsity():
    model = tiny_llama()
    head = model.lm_head.weight.clone()
    pruned = compress("prune-magnitude", model, "sparsity=0.3")
    weights = [m.weight for m in body_linears(pruned)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros / sum(w.numel() for w in weights) == pytest.approx(0.3, abs=1e-3)
    assert torch.equal(pruned.lm_head.weight, head)                   # head left alone
    assert not any(hasattr(m, "weight_orig") for m in pruned.modules())   # made permanent
    assert torch.isfinite(logits(pruned)).all()


def test_structured_mlp_pruning_shrinks_layers_and_reloads(tmp_path):
    from transformers import AutoModelForCausalLM
    model = tiny_llama()
    before = weight_stats(model)["parameters"]
    pruner = load_compressor("prune-structured", ["sparsity=0.25"])
    pruned = pruner.compress(model, calibration=SAMPLE)
    assert [m.mlp.up_proj.out_features for m in pruned.model.layers] == [96, 96]
    assert pruned.model.layers[0].mlp.down_proj.in_features == 96
    # 32 neurons x (gate row + up row + down column of 64) x 2 layers
    assert before - weight_stats(pruned)["parameters"] == 32 * 3 * 64 * 2
    assert "MLP neurons 128 -> 96" in pruner.summary
    expected = logits(pruned)
    pruned.save_pretrained(tmp_path, safe_serialization=True)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.allclose(logits(again), expected, atol=1e-5)


def test_structured_head_pruning_drops_whole_gqa_groups_and_reloads(tmp_path):
    from transformers import AutoModelForCausalLM
    model = tiny_llama()
    before = weight_stats(model)["parameters"]
    pruned = compress("prune-structured", model, "target=heads", "sparsity=0.5")
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads) == (2, 1)
    assert pruned.model.layers[0].self_attn.k_proj.out_features == 16
    # per layer: 2 query heads x 16 in q and o, 1 kv head x 16 in k and v; all 64 wide
    assert before - weight_stats(pruned)["parameters"] == 2 * 64 * (32 * 2 + 16 * 2)
    expected = logits(pruned)
    pruned.save_pretrained(tmp_path, safe_serialization=True)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.allclose(logits(again), expected, atol=1e-5)


@pytest.mark.parametrize("target", ["mlp", "heads"])
def test_structured_scores_follow_what_units_contribute_not_their_weights(target):
    """Scaling a unit's input weights up and its output weights down by the same factor leaves
    the model's function as it was: pruning by contribution must not notice, by weight must."""
    def rescaled():
        model = tiny_llama()
        with torch.no_grad():
            for layer in model.model.layers:
                if target == "mlp":
                    layer.mlp.up_proj.weight[:64] *= 100
                    layer.mlp.down_proj.weight[:, :64] /= 100
                else:               # kv group 0: its v rows and its query heads' o columns
                    layer.self_attn.v_proj.weight[:16] *= 100
                    layer.self_attn.o_proj.weight[:, :32] /= 100
        return model
    options = (f"target={target}", "sparsity=0.5")
    assert torch.allclose(logits(tiny_llama()), logits(rescaled()), atol=1e-4)
    by_use = [logits(compress("prune-structured", m, *options)) for m in (tiny_llama(), rescaled())]
    assert torch.allclose(*by_use, atol=1e-4)
    by_weight = [logits(compress("prune-structured", m, *options, "score=weights"))
                 for m in (tiny_llama(), rescaled())]
    assert not torch.allclose(*by_weight, atol=1e-2)


def test_activation_scores_need_sample_text():
    with pytest.raises(RagloopError, match="needs sample text"):
        load_compressor("prune-structured").compress(tiny_llama())
    assert load_compressor("prune-structured", ["score=weights"]).calibration_tokens == 0


def test_head_pruning_that_would_remove_no_group_is_refused():
    with pytest.raises(RagloopError, match=r"has 2 key/value head groups per layer, so "
                                           r"sparsity 0.2 removes 0"):
        compress("prune-structured", tiny_llama(), "target=heads", "sparsity=0.2")


@pytest.mark.parametrize("method", ["prune-magnitude", "prune-structured"])
@pytest.mark.parametrize("value", ["0", "1", "-0.1", "1.5"])
def test_sparsity_outside_zero_one_is_a_one_line_error(method, value):
    with pytest.raises(RagloopError) as info:
        load_compressor(method, [f"sparsity={value}"])
    assert str(info.value.message) == (f"invalid options for {method}: sparsity must be between "
                                       f"0 and 1 (both excluded), got {float(value)}")


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(RagloopError) as info:
        load_compressor("int3")
    assert info.value.message.startswith("unknown compressor 'int3'; available: ")
    for name in ("torchao-int8", "torchao-int8-dynamic", "torchao-int4", "prune-magnitude",
                 "prune-structured", "bnb-nf4", "bnb-int8"):
        assert name in info.value.message


@pytest.mark.parametrize("name", ["bnb-nf4", "bnb-int8"])
def test_bitsandbytes_stops_on_a_machine_without_cuda_before_importing_it(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)
    compressor = load_compressor(name)
    for call in (compressor.check, compressor.load_kwargs):
        with pytest.raises(RagloopError) as info:
            call("cpu")
        assert info.value.message == ("bitsandbytes 4-bit/8-bit loading needs a CUDA GPU; "
                                      "this machine has none")
    assert "bitsandbytes" not in sys.modules


def test_perplexity_counts_tokens_and_is_finite():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = tiny_causal_lm()
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = token_ids(tokenizer, ["the cat sat on the mat " * 100], 300)
    assert len(ids) == 300
    ppl, count = perplexity(model, ids)
    assert count == 300 - 2       # windows of 256 and 44 tokens, one target fewer each
    assert 1 < ppl < math.inf
    assert windows(ids).shape == (1, 256)
    with pytest.raises(RagloopError, match="too short"):
        perplexity(model, ids[:1])
