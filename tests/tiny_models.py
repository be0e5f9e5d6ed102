"""Tiny random models built locally in well under a second each, never from a hub.

Plain functions, not fixtures, so any test module (or a bench script) can use them:

- ``make_tiny_tokenizer(path)``: byte-level BPE (any text tokenizes) with a ChatML template.
- ``make_tiny_causal_lm(path, seed=0)``: a 2-layer Llama on that tokenizer.
- ``make_tiny_embedder(path, seed=0)``: a 2-layer BERT + mean pooling + normalize, loadable
  by ``SentenceTransformer(path)``.

Each ``make_*`` returns ``path`` and does nothing when ``path`` already holds a finished
build, so pointing it at a session-scoped folder builds each model once. ``tiny_causal_lm()``,
``tiny_embedder()`` and ``tiny_tokenizer()`` do exactly that with a per-process temp folder
(removed at exit) for tests that do not want to manage folders.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]

# Enough English to give BPE some merges; byte-level coverage handles everything else.
_WORDS = """
the a an of to in and or is are was were be been it this that these those for on with as at by
from what which who whom how why when where answer question passage source document index chunk
model token text file folder search retrieve embed vector store rating adapter train loop learn
install linux windows mac python package command option help error warning fix path line page
cat dog sun moon tree river city house water fire earth stone light dark fast slow big small
one two three four five six seven eight nine ten hundred thousand first second last next
red green blue yellow black white good bad new old long short high low open close read write
paris france london england berlin germany rome italy capital country language people time year
""".split()
_CORPUS = [" ".join(_WORDS[i:i + 12]) for i in range(0, len(_WORDS), 6)] + [
    "The quick brown fox jumps over the lazy dog. 0123456789 ,.;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`",
    "Question: What is the capital of France? Answer: Paris is the capital of France [1].",
]

_DONE = ".tiny-model-done"   # written last: a folder without it is an interrupted build


def _done(path: Path) -> bool:
    return (path / _DONE).exists()


def _finish(path: Path) -> Path:
    (path / _DONE).write_text("ok\n")
    return path


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 3, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
        bos_token="<|im_start|>", eos_token="<|im_end|>",
        # Llama's forward takes no token_type_ids; keep both models on the same inputs.
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=1024, padding_side="right")
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def make_tiny_tokenizer(path) -> Path:
    """A byte-level BPE tokenizer (vocab ~500) with pad/unk/bos/eos and a ChatML template."""
    path = Path(path)
    if _done(path):
        return path
    path.mkdir(parents=True, exist_ok=True)
    _tokenizer().save_pretrained(path)
    return _finish(path)


def make_tiny_causal_lm(path, seed: int = 0, hidden: int = 48, layers: int = 2,
                        architecture: str = "llama") -> Path:
    """A 2-layer, 48-wide Llama with random weights, saved as safetensors with its tokenizer
    (`hidden`, a multiple of 4, and `layers` make a smaller student for distillation).
    `architecture` qwen2 or qwen3 makes that model instead, its attention biases (qwen2) and
    query/key norms (qwen3) random too, so that a file that drops or misplaces them answers
    otherwise; as in the real ones, qwen3's head size (32) is not hidden / heads, and the
    embedding has more rows than the tokenizer has tokens (64 more)."""
    import torch
    import transformers

    path = Path(path)
    if _done(path):
        return path
    path.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer()
    name = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3"}[architecture]
    config = getattr(transformers, f"{name}Config")(
        vocab_size=len(tok) + (0 if architecture == "llama" else 64), hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
        # Wide random weights: greedy output varies instead of repeating one token, so
        # streaming and sampling tests see real text (the 0.02 default gives "\n\n\n...").
        initializer_range=0.3, **({"head_dim": 32} if architecture == "qwen3" else {}))
    torch.manual_seed(seed)
    model = getattr(transformers, f"{name}ForCausalLM")(config).eval()
    with torch.no_grad():
        for weight_name, weight in model.named_parameters():
            if weight_name.endswith(".bias"):
                weight.normal_(0.0, 0.3)
            elif weight_name.endswith(("q_norm.weight", "k_norm.weight")):
                weight.uniform_(0.5, 1.5)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return _finish(path)


def make_tiny_embedder(path, seed: int = 0) -> Path:
    """A sentence-transformers model: 2-layer BERT (hidden 32) + mean pooling + Normalize."""
    import torch
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.modules import (
            Normalize,
            Pooling,
            Transformer,
        )
    except ImportError:                      # sentence-transformers < 6
        from sentence_transformers.models import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    path = Path(path)
    if _done(path):
        return path
    path.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer()
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    # models.Transformer loads from a folder, so write the HF model first, then wrap it.
    hf_dir = path / ".hf"
    BertModel(config).save_pretrained(hf_dir, safe_serialization=True)
    tok.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=128)
    dim = getattr(transformer, "get_embedding_dimension", None) or \
        transformer.get_word_embedding_dimension
    pooling = Pooling(dim(), pooling_mode="mean")
    st = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    st.save(str(path))
    shutil.rmtree(hf_dir)
    return _finish(path)


# ---- one build per process ---------------------------------------------------------------

_root: Path | None = None
_built: dict[tuple, Path] = {}


def _cache_root() -> Path:
    global _root
    if _root is None:
        _root = Path(tempfile.mkdtemp(prefix="ragloop-tiny-"))
        atexit.register(shutil.rmtree, _root, ignore_errors=True)
    return _root


def _cached(maker, name: str, *args) -> Path:
    key = (name, *args)
    if key not in _built:
        suffix = "-".join(str(a) for a in args)
        _built[key] = maker(_cache_root() / (f"{name}-{suffix}" if suffix else name), *args)
    return _built[key]


def tiny_tokenizer() -> Path:
    """The tiny tokenizer, built once per process."""
    return _cached(make_tiny_tokenizer, "tokenizer")


def tiny_causal_lm(seed: int = 0) -> Path:
    """The tiny causal LM for `seed`, built once per process."""
    return _cached(make_tiny_causal_lm, "causal-lm", seed)


def tiny_embedder(seed: int = 0) -> Path:
    """The tiny embedder for `seed`, built once per process."""
    return _cached(make_tiny_embedder, "embedder", seed)


if __name__ == "__main__":   # python tests/tiny_models.py OUT_DIR: build all three there
    import sys
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-models")
    print(json.dumps({
        "tokenizer": str(make_tiny_tokenizer(out / "tokenizer")),
        "causal_lm": str(make_tiny_causal_lm(out / "causal-lm")),
        "embedder": str(make_tiny_embedder(out / "embedder")),
    }, indent=2))
