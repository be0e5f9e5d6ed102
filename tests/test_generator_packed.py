"""Linear weights packed once for oneDNN (plugins/hf/packed.py): the same answers, with and
without an adapter, and nothing packed where it cannot run."""

import pytest
import torch

from test_generator import MESSAGES, generator, make_adapter
from tiny_models import tiny_causal_lm

from ragloop.plugins.hf.packed import PackedLinear, can_pack


def linears(model):
    return {name: type(module) for name, module in model.named_modules()
            if isinstance(module, (torch.nn.Linear, PackedLinear))}


def test_packed_weights_give_the_plain_greedy_answers():
    plain, packed = generator(packed=False), generator()
    texts = ["".join(g.generate(MESSAGES, max_new_tokens=24)) for g in (plain, packed)]
    assert texts[0] == texts[1] and texts[0]
    assert plain.packed == 0 and set(linears(plain.model).values()) == {torch.nn.Linear}
    kinds = linears(packed.model)
    assert packed.packed == len(kinds) > 0 and set(kinds.values()) == {PackedLinear}
    # The plain copies are released; the tied output layer's stays: the embedding reads it.
    attention = packed.model.model.layers[0].self_attn.q_proj
    assert isinstance(attention, PackedLinear) and not hasattr(attention, "weight")
    assert packed.model.model.embed_tokens.weight.shape[0] == packed.tokenizer.vocab_size


def test_an_adapter_keeps_its_own_matrices_and_its_answers(tmp_path):
    adapter = make_adapter(tiny_causal_lm(), tmp_path / "lora")
    plain, packed = generator(adapter=str(adapter), packed=False), generator(adapter=str(adapter))
    texts = ["".join(g.generate(MESSAGES, max_new_tokens=24)) for g in (plain, packed)]
    assert texts[0] == texts[1]
    kinds = linears(packed.model)
    lora = {name: kind for name, kind in kinds.items() if "lora_" in name}
    assert lora and set(lora.values()) == {torch.nn.Linear}
    assert {kind for name, kind in kinds.items() if "lora_" not in name} == {PackedLinear}


def test_nothing_is_packed_where_onednn_cannot_run_it():
    assert can_pack("cpu", torch.float32) == torch.backends.mkldnn.is_available()
    assert not can_pack("cpu", torch.bfloat16)
    assert not can_pack("cuda", torch.float32)
    bf16 = generator(dtype="bfloat16")
    assert bf16.model is not None and bf16.packed == 0
    assert set(linears(bf16.model).values()) == {torch.nn.Linear}


@pytest.mark.parametrize("rows", [1, 3, 7])
def test_any_number_of_rows_matches_a_plain_linear(rows):
    torch.manual_seed(0)
    plain = torch.nn.Linear(40, 24)
    with torch.inference_mode():
        x = torch.randn(2, rows, 40)
        assert torch.allclose(PackedLinear(plain)(x), plain(x), atol=1e-5)
