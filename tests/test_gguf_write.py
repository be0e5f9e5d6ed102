"""The GGUF writer the openvino generator starts from (plugins/generators/gguf_write.py),
read back with the gguf package's own reader: each architecture's tensors and keys, and a
token for every embedding row (llama.cpp refuses a file whose token list is shorter)."""

import gguf
import pytest
from tiny_models import make_tiny_causal_lm

from ragloop.plugins.generators.gguf_write import write_gguf


def field(reader, name):
    part = reader.fields[name]
    values = [part.parts[i] for i in part.data]
    if part.types[0] == gguf.GGUFValueType.STRING:
        values = [bytes(v).decode() for v in values]
    else:
        values = [v.item() for v in values]
    return values if part.types[0] == gguf.GGUFValueType.ARRAY else values[0]


@pytest.mark.parametrize("architecture, head", [("llama", 16), ("qwen2", 16), ("qwen3", 32)])
def test_each_architecture_is_written_with_its_own_tensors_and_a_token_per_row(
        tmp_path, architecture, head):
    model = make_tiny_causal_lm(tmp_path / "model", hidden=64, architecture=architecture)
    write_gguf(model, tmp_path / "model.gguf", "int8")
    reader = gguf.GGUFReader(str(tmp_path / "model.gguf"))
    assert field(reader, "general.architecture") == architecture
    assert field(reader, f"{architecture}.attention.key_length") == head
    tensors = {t.name: t for t in reader.tensors}
    rows = int(tensors["token_embd.weight"].shape[-1])
    assert rows == 512 + (0 if architecture == "llama" else 64)     # Qwen's are padded
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == rows
    assert ("blk.1.attn_q.bias" in tensors) == (architecture == "qwen2")
    assert ("blk.1.attn_k_norm.weight" in tensors) == (architecture == "qwen3")
    # int8 blocks for the matrices; biases and norms stay float32.
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
