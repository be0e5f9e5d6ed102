"""plugins/hf/loader.py: base model + adapter (+ merge) on tiny local models."""

import pytest

from tiny_models import make_tiny_causal_lm

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from ragloop.plugins.hf.loader import (  # noqa: E402
    load_causal_lm,
    load_sequence_classifier,
    torch_dtype,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_causal_lm(tmp_path_factory.mktemp("base") / "model")


def _adapter(base, folder, task_type="CAUSAL_LM", **extra):
    """A LoRA adapter with random B, so it changes what the model computes."""
    from peft import LoraConfig, get_peft_model
    if task_type == "SEQ_CLS":
        model = load_sequence_classifier(base, pad_token_id=0)
    else:
        model = load_causal_lm(base)
    torch.manual_seed(1)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False, task_type=task_type,
                                            **extra))
    peft.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory):
    return _adapter(base, tmp_path_factory.mktemp("adapter") / "lora")


IDS = torch.tensor([[5, 17, 42, 99, 7, 3]])


def _logits(model):
    with torch.inference_mode():
        return model(input_ids=IDS).logits


def test_base_model_loads_in_the_dtype_named_on_the_device(base):
    from peft import PeftModel
    model = load_causal_lm(base, dtype="bfloat16")
    assert not isinstance(model, PeftModel)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).device.type == "cpu"
    assert next(load_causal_lm(base, dtype=torch.float32).parameters()).dtype == torch.float32


def test_an_adapter_gives_a_peft_model_that_changes_the_output(base, adapter):
    from peft import PeftModel
    plain = load_causal_lm(base)
    tuned = load_causal_lm(base, adapter=adapter)
    assert isinstance(tuned, PeftModel)
    assert not torch.allclose(_logits(plain), _logits(tuned), atol=1e-4)
    with tuned.disable_adapter():            # the base is still underneath, unchanged
        torch.testing.assert_close(_logits(tuned), _logits(plain))


def test_merge_gives_a_plain_model_with_the_adapters_logits(base, adapter):
    from peft import PeftModel
    unmerged = load_causal_lm(base, adapter=adapter)
    merged = load_causal_lm(base, adapter=str(adapter), merge=True)
    assert not isinstance(merged, PeftModel)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged), _logits(unmerged), atol=1e-5, rtol=1e-4)


def test_sequence_classifier_with_its_adapter_and_head(base, tmp_path):
    folder = _adapter(base, tmp_path / "reward", task_type="SEQ_CLS", modules_to_save=["score"])
    plain = load_sequence_classifier(base, pad_token_id=0)
    scorer = load_sequence_classifier(base, adapter=folder, pad_token_id=0)
    merged = load_sequence_classifier(base, adapter=folder, merge=True, pad_token_id=0)
    assert plain.config.pad_token_id == 0 and _logits(plain).shape == (1, 1)
    assert not torch.allclose(_logits(plain), _logits(scorer), atol=1e-4)
    torch.testing.assert_close(_logits(merged), _logits(scorer), atol=1e-5, rtol=1e-4)


def test_dtype_names_and_bad_names():
    assert torch_dtype("float16") is torch.float16
    assert torch_dtype(torch.bfloat16) is torch.bfloat16
    assert torch_dtype("auto") == "auto" and torch_dtype(None) is None
    for bad in ("Tensor", "nn", "float64x"):
        with pytest.raises(ValueError, match="not a torch dtype"):
            torch_dtype(bad)
