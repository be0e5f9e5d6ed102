"""What a quantized folder stores (int8 data and scales, not float weights), and that loading
it gives exactly the model `--compress` builds in memory from the same source; what a loader
applies to a folder (plugins/hf/compressed.py)."""

import json
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")

from cli_helpers import run  # noqa: E402
from tiny_models import tiny_causal_lm  # noqa: E402

from ragloop.core.errors import RagloopError  # noqa: E402

INT8 = ["torchao-int8", "torchao-int8-dynamic"]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def compress(out, method, *more, model=None, ok=True):
    return run("compress", "--method", method, "--model", model or tiny_causal_lm(), "--out",
               out, "--eval-tokens", "0", *more, ok=ok)


def tensors(folder):
    from safetensors import safe_open
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}


def body_linears(model):
    head = model.get_output_embeddings()
    return {name: m for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m is not head}


def generator(**config):
    from ragloop.plugins.generators.transformers import TransformersConfig, TransformersGenerator
    return TransformersGenerator(TransformersConfig(**config))


@pytest.mark.parametrize("method", INT8)
def test_int8_folder_stores_int8_linear_weights_a_quarter_of_float32(tmp_path, method):
    from transformers import AutoModelForCausalLM
    out = tmp_path / "q"
    report = json.loads(compress(out, method, "--json").stdout)
    stored = tensors(out)
    source = AutoModelForCausalLM.from_pretrained(tiny_causal_lm())
    linears = body_linears(source)
    float_bytes = int8_bytes = 0
    for name, linear in linears.items():
        assert f"{name}.weight" not in stored, "no float copy of a quantized weight"
        qdata = stored[f"{name}._weight_qdata"]
        assert qdata.dtype == torch.int8 and qdata.shape == linear.weight.shape
        float_bytes += linear.weight.numel() * 4
        int8_bytes += qdata.numel() * qdata.element_size()
    assert len(linears) == 14 and int8_bytes * 4 == float_bytes
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "torchao"
    assert report["weights_bytes"] == (out / "model.safetensors").stat().st_size
    assert report["weights_bytes"] < 0.7 * report["source_weights_bytes"]
    assert report["stored"] == ("quantized weights of 14 layers (Int8Tensor: integer data + "
                                "scales), the rest float32")


@pytest.mark.parametrize("method, dtype", [("torchao-int8-dynamic", "bfloat16"),
                                           ("torchao-int8", "float32")])
def test_loaded_folder_is_the_model_quantized_in_memory(tmp_path, method, dtype):
    from transformers import AutoModelForCausalLM
    source = tmp_path / "source"             # SmolLM2's checkpoint is bfloat16: test both
    AutoModelForCausalLM.from_pretrained(tiny_causal_lm()).to(getattr(torch, dtype)) \
        .save_pretrained(source)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (source / name).write_bytes((tiny_causal_lm() / name).read_bytes())
    out = tmp_path / "q"
    compress(out, method, model=source)
    folder, memory = generator(model=str(out)), generator(model=str(source), compress=method)
    ids = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(folder.model(input_ids=ids).logits, memory.model(input_ids=ids).logits)
    assert folder.compressed == memory.compressed and folder.compressed.startswith(method)
    answer = "".join(folder.generate(MESSAGES, max_new_tokens=24))
    assert answer and answer == "".join(memory.generate(MESSAGES, max_new_tokens=24))


def test_int4_folder_says_it_holds_full_precision_weights(tmp_path):
    out = tmp_path / "q"
    text = compress(out, "torchao-int4", "-o", "activation_dtype=float32", "-o",
                    "group_size=32").output
    size = f"{(out / 'model.safetensors').stat().st_size / 1000:,.1f} KB"
    assert (f"  stored       {size} of weights (source {size}): full-precision float32 "
            f"weights, quantized again on load (torchao cannot save its CPU int4 layout "
            f"(Int4OpaqueTensor) in safetensors, and ragloop loads no pickles)\n") in text
    assert "quantization_config" not in json.loads((out / "config.json").read_text())


def test_text_report_says_what_an_int8_folder_stores_and_how_big(tmp_path):
    text = compress(tmp_path / "q", "torchao-int8").output
    line = re.search(r"\n  stored       ([\d,.]+) KB of weights \(source ([\d,.]+) KB\): "
                     r"quantized weights of 14 layers \(Int8Tensor: integer data \+ scales\), "
                     r"the rest float32\n", text)
    assert line and float(line[1]) < float(line[2])


def test_a_quantized_folder_is_not_quantized_or_compressed_again(tmp_path):
    out = tmp_path / "q"
    compress(out, "torchao-int8-dynamic")
    with pytest.raises(RagloopError, match=re.escape(
            f"{out.resolve()} holds weights quantized with torchao-int8-dynamic already; drop "
            f"--compress, or quantize the model it came from ({tiny_causal_lm()}) with "
            f"--compress torchao-int8")):
        generator(model=str(out), compress="torchao-int8").model
    same = generator(model=str(out), compress="torchao-int8-dynamic")
    assert same.model is not None and same.compressed.startswith("torchao-int8-dynamic: 14 ")
    result = compress(tmp_path / "again", "prune-magnitude", model=out, ok=False)
    assert result.output.splitlines()[-1] == (
        f"Error: {out.resolve()} holds quantized weights; compress the full-precision model it "
        f"came from ({tiny_causal_lm()}) instead")
    assert not (tmp_path / "again").exists()


# ---- what a loader applies (hf.compressed.for_loading) ------------------------------------

def folder_with(tmp_path, recipe=None, quantized=False):
    from ragloop.plugins.hf.compressed import RECIPE
    folder = tmp_path / "model"
    folder.mkdir()
    config = {"model_type": "llama"}
    if quantized:
        config["quantization_config"] = {"quant_method": "torchao"}
    (folder / "config.json").write_text(json.dumps(config))
    if recipe is not None:
        (folder / RECIPE).write_text(recipe if isinstance(recipe, str) else json.dumps(recipe))
    return str(folder)


def test_a_loader_applies_what_the_folder_records_or_what_it_is_told(tmp_path):
    from ragloop.plugins.hf.compressed import for_loading, holds_quantized, read_recipe
    assert for_loading(None, None) is None
    plain = folder_with(tmp_path)
    assert read_recipe(plain) is None and not holds_quantized(plain)
    assert for_loading(None, plain) is None
    assert for_loading("torchao-int8", plain).name == "torchao-int8"

    recorded = {"method": "torchao-int8-dynamic", "kind": "quantize", "checkpoint": "src/",
                "config": {}}
    (tmp_path / "q").mkdir()
    folder = folder_with(tmp_path / "q", recorded, quantized=True)
    assert holds_quantized(folder) and read_recipe(folder)["method"] == "torchao-int8-dynamic"
    assert for_loading(None, folder).name == "torchao-int8-dynamic"
    assert for_loading("torchao-int8-dynamic", folder).name == "torchao-int8-dynamic"
    with pytest.raises(RagloopError, match="holds weights quantized with torchao-int8-dynamic "
                                           "already; drop --compress.*\\(src/\\)"):
        for_loading("torchao-int8", folder)


def test_a_loader_refuses_what_it_cannot_apply(tmp_path):
    from ragloop.plugins.hf.compressed import for_loading, read_recipe
    with pytest.raises(RagloopError, match="--compress quantizes as the model loads, and "
                                           "prune-magnitude is a prune method"):
        for_loading("prune-magnitude", None)
    for name, recipe in [("pruned", {"method": "prune-magnitude", "kind": "prune"}),
                         ("gone", {"method": "magic-quant", "kind": "quantize"}),
                         ("broken", "{not json")]:
        (tmp_path / name).mkdir()
        folder = folder_with(tmp_path / name, recipe)
        if name == "pruned":
            assert for_loading(None, folder) is None      # pruned weights need nothing on load
        elif name == "gone":
            with pytest.raises(RagloopError, match="quantized with 'magic-quant', which no "
                                                   "installed plugin provides; available: "):
                for_loading(None, folder)
        else:
            with pytest.raises(RagloopError, match="is not valid JSON"):
                read_recipe(folder)
