"""A query encoder that needs neither torch nor transformers nor sentence-transformers: the
model's `tokenizer.json` (the `tokenizers` library), its ONNX export run by ONNX Runtime, and
the pooling and normalization of its sentence-transformers modules done in numpy.

Importing sentence-transformers costs ~10 s on a busy two-core machine and encoding one
query ~20 ms, so a cold `ragloop search` spends almost all its time importing. When the
workspace holds an fp32 (or the index's own int8) ONNX export of the same model, a query
goes through this path instead, with the same vectors within ~1e-6.

    spec(folder)                  -> what the model's module files ask for, or None when this
                                     path cannot reproduce it (then the normal path runs)
    LightEncoder(folder, onnx, s) -> .encode(texts): L2-normalized float32 vectors
    check(...) / checked(...)     -> the light path's vectors compared with the model's on
                                     probe texts once, when the export is made; only an
                                     export that passed is used
    cached_digest(ws, folder, fn) -> fn(folder), remembered in the workspace per file stamps

Only the few module layouts it can match exactly are accepted: Transformer at the folder's
root, then Pooling by mean or CLS token, then optionally Normalize; no prompts; no other
tokenizer options. Anything else returns None from `spec`, never a guess.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ragloop.core import atomic_write_bytes

# sentence_bert_config.json keys this path reproduces, with the values it accepts (None: any
# value); another key with a value it would have to honour refuses the light path.
# sentence-transformers 6 writes the last three, with these values, for a plain text model.
_KNOWN_ST_KEYS = {
    "max_seq_length": None, "do_lower_case": None,
    "transformer_task": "feature-extraction", "module_output_name": "token_embeddings",
    "modality_config": {"method": "forward", "method_output_name": "last_hidden_state"},
}
_POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean"}
DIGESTS = "model-digests.json"
CHECK = "light-query.json"      # in the export's folder: the probe comparison's outcome
# Largest difference allowed between the light path's and the model's normalized vectors
# (fp32 ONNX vs torch: ~2e-7 on MiniLM).
TOLERANCE = 1e-5


@dataclass(frozen=True)
class LightSpec:
    pooling: str              # "mean" or "cls"
    dimension: int
    max_seq_length: int
    lower_case: bool


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _module_kind(entry) -> str | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        return None
    return entry["type"].rsplit(".", 1)[-1]


def _pooling(config) -> str | None:
    """"mean" or "cls" when that is the one pooling the config turns on."""
    if not isinstance(config, dict):
        return None
    if isinstance(config.get("pooling_mode"), str):
        mode = config["pooling_mode"]
        return {"mean": "mean", "cls": "cls"}.get(mode)
    on = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
    if len(on) != 1 or on[0] not in _POOLING_FLAGS:
        return None
    return _POOLING_FLAGS[on[0]]


def spec(folder: Path | None) -> LightSpec | None:
    """The model folder's modules as this path understands them, or None."""
    if folder is None or not (folder / "tokenizer.json").is_file():
        return None
    modules = _json(folder / "modules.json")
    if not isinstance(modules, list) or not 2 <= len(modules) <= 3:
        return None
    kinds = [_module_kind(m) for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        return None
    if modules[0].get("path", "") not in ("", "."):
        return None
    if _has_chat_template(folder):
        return None             # sentence-transformers 6 then renders texts as chat messages
    pooling_config = _json(folder / str(modules[1].get("path", "")) / "config.json")
    pooling = _pooling(pooling_config)
    st_config = _json(folder / "sentence_bert_config.json")
    model_config = _json(folder / "config.json")
    if pooling is None or not isinstance(st_config, dict) or not isinstance(model_config, dict):
        return None
    if not all(_accepted(k, v) for k, v in st_config.items()):
        return None
    prompts = _json(folder / "config_sentence_transformers.json") or {}
    if isinstance(prompts, dict) and (prompts.get("default_prompt_name")
                                      or prompts.get("default_prompt")):
        return None
    dimension = (pooling_config.get("word_embedding_dimension")
                 or pooling_config.get("embedding_dimension") or model_config.get("hidden_size"))
    length = _max_length(folder, st_config, model_config)
    if not isinstance(dimension, int) or length is None:
        return None
    return LightSpec(pooling, dimension, length, bool(st_config.get("do_lower_case")))


def _has_chat_template(folder: Path) -> bool:
    tokenizer_config = _json(folder / "tokenizer_config.json") or {}
    return (folder / "chat_template.jinja").exists() or (folder / "chat_template.json").exists() \
        or bool(isinstance(tokenizer_config, dict) and tokenizer_config.get("chat_template"))


def _accepted(key: str, value) -> bool:
    if value in (None, {}, [], False):
        return True
    if key not in _KNOWN_ST_KEYS:
        return False
    wanted = _KNOWN_ST_KEYS[key]
    if key == "modality_config":
        # Only the text entry applies to a string; it must be the plain forward pass.
        return isinstance(value, dict) and set(value) == {"text"} and all(
            value["text"].get(k) == v for k, v in wanted.items())
    return wanted is None or value == wanted


def _max_length(folder: Path, st_config: dict, model_config: dict) -> int | None:
    """Where sentence-transformers truncates: max_seq_length when the module config gives
    one, else the tokenizer's model_max_length capped at the model's positions."""
    length = st_config.get("max_seq_length")
    if length is None:
        tokenizer_config = _json(folder / "tokenizer_config.json") or {}
        positions = model_config.get("max_position_embeddings")
        limits = [v for v in (tokenizer_config.get("model_max_length"), positions)
                  if isinstance(v, int) and v > 0]
        length = min(limits) if limits else None
    return length if isinstance(length, int) and length > 0 else None


class LightEncoder:
    """Encodes a few texts at a time (a query) on one thread: on a busy two-core machine a
    one-query encode with two threads waits for the second core."""

    def __init__(self, folder: Path, onnx_path: Path, light: LightSpec, threads: int = 1):
        import onnxruntime as ort
        from tokenizers import Tokenizer
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=light.max_seq_length)
        pad = tokenizer.padding or {}
        tokenizer.enable_padding(pad_id=pad.get("pad_id", 0),
                                 pad_type_id=pad.get("pad_type_id", 0),
                                 pad_token=pad.get("pad_token", "[PAD]"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer, self.spec = tokenizer, light

    def encode(self, texts: list[str]):
        import numpy as np
        if self.spec.lower_case:
            texts = [t.lower() for t in texts]
        encodings = self.tokenizer.encode_batch(texts)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        arrays = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                  "attention_mask": mask,
                  "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
        hidden = self.session.run(None, {n: arrays[n] for n in self.inputs})[0]
        hidden = np.asarray(hidden, dtype=np.float32)
        if self.spec.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32)


def _stamps(folder: Path) -> list:
    return sorted([p.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns]
                  for p in folder.rglob("*") if p.is_file() for st in [p.stat()])


def cached_digest(workspace, folder: Path, compute) -> str:
    """`compute(folder)`, remembered in the workspace under the folder's path and its files'
    sizes and modification times, so a search need not read the weights again. A damaged
    cache file is ignored and rewritten."""
    if workspace is None:
        return compute(folder)
    path = workspace.models_dir / DIGESTS
    stamps = _stamps(folder)
    cache = _json(path)
    cache = cache if isinstance(cache, dict) else {}
    entry = cache.get(str(folder))
    if isinstance(entry, dict) and entry.get("stamps") == stamps and \
            isinstance(entry.get("digest"), str):
        return entry["digest"]
    digest = compute(folder)
    cache[str(folder)] = {"stamps": stamps, "digest": digest}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(cache, indent=1).encode())
    except OSError:
        pass                    # a read-only workspace: computed again next time
    return digest


def checked(export: Path, light: LightSpec, passed: bool = True) -> bool:
    """Whether the light path matched the model on this export, for this module spec (with
    passed=False: whether it was compared at all, whatever the outcome)."""
    record = _json(export / CHECK)
    return isinstance(record, dict) and record.get("spec") == asdict(light) and \
        (record.get("ok") is True or not passed)


def check(folder: Path, onnx_path: Path, light: LightSpec, texts, reference) -> bool:
    """Encode `texts` on the light path, compare with `reference` (the model's vectors),
    and record the outcome beside the export. Any failure counts as a mismatch."""
    import numpy as np
    try:
        got = LightEncoder(folder, onnx_path, light).encode(list(texts))
        worst = float(np.abs(got - np.asarray(reference, dtype=np.float32)).max())
    except Exception as exc:        # a light path that cannot run is simply not used
        worst, why = None, f"{type(exc).__name__}: {exc}"[:200]
    else:
        why = None
    ok = worst is not None and worst <= TOLERANCE
    record = {"ok": ok, "spec": asdict(light), "max_abs_diff": worst, "error": why}
    try:
        atomic_write_bytes(onnx_path.parent / CHECK, json.dumps(record, indent=1).encode())
    except OSError:
        return False
    return ok
