"""Small helpers shared by the built-in Hugging Face plugins (embedder and generator)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

from ragloop.core import quiet_library_logs


def short_error(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line, for messages that must stay on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quiet_transformers() -> None:
    """HF warnings and progress bars are for library authors, not for ragloop's users."""
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    quiet_library_logs("sentence_transformers", "peft", "huggingface_hub")
    try:
        from huggingface_hub.utils import disable_progress_bars
        disable_progress_bars()
    except ImportError:
        pass


def looks_like_path(name: str) -> bool:
    """Hub ids are `owner/name` or `name`; anything else is meant as a folder."""
    return (name.startswith((".", "/", "~", "\\")) or name.count("/") > 1
            or "\\" in name or (len(name) > 1 and name[1] == ":"))


def token_encoder(tokenizer):
    """`text -> token ids`, without special tokens added, truncation or padding.

    The Rust tokenizer inside a fast HF tokenizer keeps whatever truncation its last batch
    call set (sentence-transformers truncates to max_seq_length), so counts taken through
    it directly stop at that limit; a private copy with truncation off counts everything,
    and skips the "sequence is longer than the maximum" warning as well."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return lambda text: tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    from tokenizers import Tokenizer
    plain = Tokenizer.from_str(backend.to_str())
    plain.no_truncation()
    plain.no_padding()
    return lambda text: plain.encode(text, add_special_tokens=False).ids


# transformers builds a model under a torch device mode (meta) and swaps torch's init
# functions while it loads; two threads loading at once (a prefetch or server thread beside
# the main one, or the judge's embedder) can leave the meta mode on for every later load in
# the process ("Cannot copy out of meta tensor"). Loads take this lock: one at a time.
LOADING = threading.RLock()


@contextmanager
def library_warnings_hidden():
    """Deprecation notices raised inside transformers/peft/sentence-transformers speak to
    library authors about each other's APIs; a ragloop user can do nothing about them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


# ---- model identity -----------------------------------------------------------------------

WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")
# config.json fields that say which library saved the model, not what the model is.
_SAVED_BY = ("transformers_version", "_name_or_path")
ID_CACHE = "ragloop-model-ids.json"
_MAX_CACHED = 200
_known: dict[str, str] = {}


def content_id(folder, cache_dir=None, announce=None) -> str:
    """`<model_type>@<12 hex>` for a model folder: sha256 of its config (less the fields
    that only name the saving library) and of its weight files' bytes, so a copy, a
    symlink or a renamed folder has the same id and another model never does. Hashing
    reads every weight byte (a few seconds per GB); the result is remembered per file
    size and mtime, in this process and, with `cache_dir`, in a small json file there.
    `announce(message)` is told before a long first hash."""
    folder = Path(folder).resolve()
    weights = sorted({p for pattern in WEIGHT_FILES for p in folder.glob(pattern)
                      if p.is_file()}, key=lambda p: p.name)
    config_file = folder / "config.json"
    files = ([config_file] if config_file.is_file() else []) + weights
    stamp = hashlib.sha256(json.dumps(
        [str(folder)] + [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    ).encode()).hexdigest()
    if stamp in _known:
        return _known[stamp]
    cache = Path(cache_dir) / ID_CACHE if cache_dir is not None else None
    stored = _read_json(cache) if cache is not None else {}
    if isinstance(stored.get(stamp), str):
        _known[stamp] = stored[stamp]
        return stored[stamp]
    size = sum(p.stat().st_size for p in weights)
    if announce and size > 1 << 30:
        announce(f"Fingerprinting the {size / 2**30:.1f} GB of weights in {folder} to "
                 f"identify the model (once) ...")
    config = _read_json(config_file)
    for key in _SAVED_BY:
        config.pop(key, None)
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for p in weights:
        h.update(f"\0{p.name}\0{p.stat().st_size}\0".encode())
        with open(p, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    model_id = f"{config.get('model_type') or 'model'}@{h.hexdigest()[:12]}"
    _known[stamp] = model_id
    if cache is not None:
        _remember(cache, stored, stamp, model_id)
    return model_id


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(cache: Path, stored: dict, stamp: str, model_id: str) -> None:
    """Best effort (a cache): a folder that cannot be written only means hashing again."""
    entries = [(k, v) for k, v in stored.items() if k != stamp][-(_MAX_CACHED - 1):]
    tmp = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict([*entries, (stamp, model_id)]), f, indent=1)
        os.replace(tmp, cache)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def hub_cache_repo(folder) -> str | None:
    """The hub id of a snapshot folder in the Hugging Face cache
    (`.../models--OWNER--NAME/snapshots/REVISION`), whose id is its hub id, as when the
    model is given by that id; None for any other folder."""
    folder = Path(folder)
    repo = folder.parent.parent.name
    if folder.parent.name != "snapshots" or not repo.startswith("models--"):
        return None
    return repo[len("models--"):].replace("--", "/", 1)
