"""A transformers model folder of the llama, qwen2 or qwen3 architecture (the ones OpenVINO
GenAI's GGUF reader runs) written as one GGUF file, the format OpenVINO GenAI reads without
optimum-intel (plugins/generators/openvino.py).

    write_gguf(folder, path, precision)   precision: fp16 | int8 (Q8_0) | int4 (Q4_0)

The weights are laid out as llama.cpp's own converter lays them out: its tensor names, the
query and key rows of a llama model permuted for its interleaved rotary layout (qwen2 and
qwen3 keep transformers' layout, as llama.cpp runs them), qwen2's attention biases and
qwen3's query/key norms. The tokenizer (a byte-level BPE `tokenizer.json`) and chat template
go in as metadata, because the reader builds its tokenizer from them, though ragloop
encodes and decodes with the model folder's own. Anything else (another architecture, rope
scaling, sliding-window attention, a SentencePiece tokenizer) is a one-line refusal naming
what the file cannot hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ragloop.core import RagloopError

PRECISIONS = ("fp16", "int8", "int4")
# GGUF's general.file_type numbers (llama.cpp's LLAMA_FTYPE) for each precision.
FILE_TYPES = {"fp16": 1, "int8": 7, "int4": 2}
LAYER_TENSORS = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
TOKEN_NORMAL, TOKEN_CONTROL = 1, 3


@dataclass(frozen=True)
class Architecture:
    rope_rows: bool = False       # query/key rows permuted to the interleaved rotary layout
    biases: tuple = ()            # layer tensors that carry a bias
    norms: tuple = ()             # extra per-layer norm weights: (ours, GGUF name)


ARCHITECTURES = {
    "llama": Architecture(rope_rows=True),
    "qwen2": Architecture(biases=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    "qwen3": Architecture(norms=(("self_attn.q_norm", "attn_q_norm"),
                                 ("self_attn.k_norm", "attn_k_norm"))),
}


class Unsupported(Exception):
    """The model is one this writer cannot put into a GGUF file; the message says why."""


def write_gguf(folder: Path, path: Path, precision: str) -> None:
    import gguf
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    check_config(config)
    tokenizer = _tokenizer_metadata(folder, config["vocab_size"])
    writer = gguf.GGUFWriter(str(path), config["model_type"])
    _write_config(writer, config, precision)
    for key, (value, kind) in tokenizer.items():
        writer.add_key_value(key, value, kind, sub_type=_sub_type(value, kind))
    qtype = {"fp16": gguf.GGMLQuantizationType.F16, "int8": gguf.GGMLQuantizationType.Q8_0,
             "int4": gguf.GGMLQuantizationType.Q4_0}[precision]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    for name, array in _tensors(folder, config):
        if array.ndim == 2:
            # Rows that are no whole number of quantization blocks stay float16.
            kind = qtype if array.shape[-1] % block == 0 else gguf.GGMLQuantizationType.F16
            writer.add_tensor(name, gguf.quants.quantize(array, kind), raw_dtype=kind)
        else:                       # norms and biases stay float32, as llama.cpp keeps them
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def check_config(config: dict) -> None:
    kind = config.get("model_type")
    if kind not in ARCHITECTURES:
        raise Unsupported(f"it is a {kind!r} model, and only {', '.join(ARCHITECTURES)} "
                          f"models (SmolLM2, Llama, Qwen2.5, Qwen3) are written for OpenVINO "
                          f"GenAI")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise Unsupported(f"its rope scaling ({rope.get('rope_type', rope.get('type'))}) "
                          f"is not written")
    if config.get("mlp_bias") or (kind != "qwen2" and config.get("attention_bias")):
        raise Unsupported(f"its layers have biases, which {kind} GGUF files do not hold")
    if config.get("use_sliding_window"):
        raise Unsupported("it uses sliding-window attention, which is not written")


def _write_config(writer, config: dict, precision: str) -> None:
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer.add_name(str(config.get("_name_or_path") or "ragloop export"))
    writer.add_file_type(FILE_TYPES[precision])
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(config["vocab_size"])


def _tokenizer_metadata(folder: Path, rows: int) -> dict:
    """tokenizer.ggml.* from the folder's byte-level BPE tokenizer.json, as (value, type);
    the token list as long as the embedding's `rows` (Qwen's are padded past the tokenizer's
    last id: readers such as llama.cpp take the vocabulary's size from this list)."""
    import gguf
    kinds = gguf.GGUFValueType
    try:
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise Unsupported("it has no tokenizer.json") from None
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise Unsupported(f"its tokenizer is {model.get('type')!r}, and only byte-level BPE "
                          f"tokenizers are written")
    vocab = dict(model.get("vocab") or {})
    special = set()
    for added in data.get("added_tokens") or []:
        vocab[added["content"]] = added["id"]
        if added.get("special"):
            special.add(added["id"])
    size = max(max(vocab.values()) + 1, rows)
    tokens = [f"[PAD{i}]" for i in range(size)]
    for token, index in vocab.items():
        tokens[index] = token
    types = [TOKEN_CONTROL if i in special else TOKEN_NORMAL for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    found = {"tokenizer.ggml.model": ("gpt2", kinds.STRING),
             "tokenizer.ggml.pre": ("default", kinds.STRING),
             "tokenizer.ggml.tokens": (tokens, kinds.ARRAY),
             "tokenizer.ggml.token_type": (types, kinds.ARRAY),
             "tokenizer.ggml.merges": (merges, kinds.ARRAY),
             "tokenizer.ggml.add_bos_token": (False, kinds.BOOL)}
    settings = _read_json(folder / "tokenizer_config.json")
    for role in ("bos", "eos", "unk", "pad"):
        token = settings.get(f"{role}_token")
        token = token.get("content") if isinstance(token, dict) else token
        if token in vocab:
            found[f"tokenizer.ggml.{role}_token_id"] = (vocab[token], kinds.UINT32)
    template = settings.get("chat_template")
    if not template and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if template:
        found["tokenizer.chat_template"] = (template, kinds.STRING)
    return found


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _sub_type(value, kind):
    import gguf
    if kind != gguf.GGUFValueType.ARRAY:
        return None
    return gguf.GGUFValueType.STRING if isinstance(value[0], str) else gguf.GGUFValueType.INT32


def _tensors(folder: Path, config: dict):
    """(GGUF name, float32 array) for every weight, in llama.cpp's layout."""
    import numpy as np
    from safetensors import safe_open
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise Unsupported("it has no .safetensors weights")
    weights = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                weights[name] = f.get_tensor(name)

    def take(name: str):
        if name not in weights:
            raise Unsupported(f"its weights lack {name}")
        return np.ascontiguousarray(weights.pop(name).float().numpy())

    arch = ARCHITECTURES[config["model_type"]]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    yield "token_embd.weight", take("model.embed_tokens.weight")
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        for ours, theirs in LAYER_TENSORS.items():
            for part in ("weight", "bias") if ours in arch.biases else ("weight",):
                array = take(f"{prefix}{ours}.{part}")
                if arch.rope_rows and theirs in ("attn_q", "attn_k"):
                    array = _rope_rows(array, heads if theirs == "attn_q" else kv_heads)
                yield f"blk.{layer}.{theirs}.{part}", array
        for ours, theirs in arch.norms:
            yield f"blk.{layer}.{theirs}.weight", take(f"{prefix}{ours}.weight")
    yield "output_norm.weight", take("model.norm.weight")
    if not config.get("tie_word_embeddings", False):
        yield "output.weight", take("lm_head.weight")


def _rope_rows(array, heads: int):
    """Each head's rows reordered from transformers' rotate-half rotary layout to the
    interleaved one GGUF files hold (llama.cpp's convert_hf_to_gguf `permute`)."""
    rows = array.shape[0]
    return array.reshape(heads, 2, rows // heads // 2, *array.shape[1:]) \
        .swapaxes(1, 2).reshape(array.shape)


def refusal(model: str, exc: Unsupported) -> RagloopError:
    return RagloopError(f"the openvino generator cannot run {model}: {exc}; use "
                        f"--generator transformers or onnx-genai")
