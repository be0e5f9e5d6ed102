"""A chat model (with its adapter merged in) exported once for ONNX Runtime GenAI and kept in
the workspace's models folder, for the `onnx-genai` generator.

The export is the runtime's own model builder (`onnxruntime_genai.models.builder`): it writes
the decoder with its fused attention and KV cache, int4/int8 weights as MatMulNBits, and the
`genai_config.json` the runtime reads. It runs in a child process: it prints pages of
progress, and its peak memory (the whole model, twice) is given back when it ends.

    export_key(model_id, adapter_id, precision)  -> what the export depends on
    export_folder(workspace, key)                -> where that export is kept
    ensure_export(source, adapter, folder, key, ...) -> its record, exported now if need be

The folder's name holds a digest of the key (base model, adapter fingerprint, precision,
recipe and library versions), so a new adapter or upgraded library gets a new export and a
changed one is never reused. It is written into a temporary folder and swapped into place
complete (core/workspace.py atomic_folder): an interrupted export leaves nothing, and a folder
whose record does not match its key is exported again, not half-used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from ragloop.core import RagloopError, atomic_folder
from ragloop.plugins.hf.common import library_warnings_hidden, quiet_transformers, short_error
from ragloop.plugins.hf.gguf import models_cache_dir
from ragloop.plugins.hf.loader import load_causal_lm

PRECISIONS = ("int4", "int8", "fp32")
EXTRA = "onnx-genai"
# Modules the extra installs: the runtime, and what its model builder imports.
MODULES = {"onnxruntime_genai": "onnxruntime-genai", "onnx_ir": "onnx-ir", "onnx": "onnx"}
RECIPE = 1           # bumped when the export steps change, so older exports are not reused
EXPORTS_DIR = "generator-exports"
RECORD = "ragloop-export.json"
CONFIG = "genai_config.json"


def require() -> None:
    """A one-line error naming the extra to install when the runtime is missing."""
    for module, dist in MODULES.items():
        try:
            __import__(module)
        except ImportError:
            raise RagloopError(
                f"the onnx-genai generator needs the Python package {dist!r}, which is not "
                f"installed; install it with `pip install 'ragloop[{EXTRA}]'`, or use "
                f"--generator transformers") from None


def runtime_version() -> str:
    try:
        return metadata.version("onnxruntime-genai")
    except metadata.PackageNotFoundError:
        return "none"


def _versions() -> dict[str, str]:
    found = {}
    for name in ("onnxruntime-genai", "onnxruntime", "onnx-ir", "onnx", "transformers",
                 "torch", "peft"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "none"
    return found


def export_key(model_id: str, adapter_id: str | None, precision: str) -> dict:
    """What an export depends on: a change to any of it makes a new export."""
    return {"recipe": RECIPE, "model": model_id, "adapter": adapter_id,
            "precision": precision, "versions": _versions()}


def export_folder(workspace, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", key["model"].split("@")[0])[:40]
    return models_cache_dir(workspace) / EXPORTS_DIR / f"{slug}-{key['precision']}-{digest}"


def read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_export(source: str, adapter: Path | None, folder: Path, key: dict, *,
                  eos: list[int], pad: int, what: str) -> dict:
    """The export's record, exporting into `folder` first when it holds none for `key`. A
    failed export is recorded too (`failed`: why), so later runs do not try again with the
    same libraries. `what` names the model in the progress line."""
    record = read_record(folder)
    if record is not None and record.get("key") == key:
        return record
    # A line, not a spinner: the command's own "Loading the model" spinner is already live,
    # and keeps turning while this runs.
    say(f"exporting {what} to ONNX Runtime GenAI {key['precision']} (once per model, "
        f"adapter and precision; about a minute) ...")
    started = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(folder) as tmp:
        try:
            model_dir = _merged(source, adapter, tmp / "merged") if adapter else Path(source)
            _build(model_dir, tmp, key["precision"])
            _configure(tmp, eos, pad)
            _smoke_test(tmp)
            record = {"key": key, "seconds": round(time.perf_counter() - started, 1)}
        except (KeyboardInterrupt, RagloopError):
            raise
        except Exception as exc:            # the builder's or the runtime's own refusal
            for p in tmp.iterdir():
                _remove(p)
            record = {"key": key, "failed": short_error(exc, 200)}
        for leftover in ("merged", "cache"):
            _remove(tmp / leftover)
        (tmp / RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
    if "failed" not in record:
        say(f"exported in {record['seconds']:.0f}s to {folder}")
    return record


def say(text: str) -> None:
    """One plain line on stderr (paths and brackets are not rich markup)."""
    from ragloop.core import stderr
    stderr.print(text, markup=False, highlight=False, soft_wrap=True)


def _remove(path: Path) -> None:
    import shutil
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _merged(source: str, adapter: Path, out: Path) -> Path:
    """The base with the adapter merged in, in float32, as a model folder for the builder."""
    quiet_transformers()
    from transformers import AutoTokenizer
    try:
        model = load_causal_lm(source, adapter=adapter, merge=True, dtype="float32")
    except Exception as exc:
        raise RagloopError(f"cannot apply adapter {adapter} to {source} ({short_error(exc)}); "
                           f"was it trained on this model?") from None
    with library_warnings_hidden():
        model.save_pretrained(out, safe_serialization=True)
        AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


class ExportFailed(Exception):
    """The model builder refused or crashed; the message is its last words."""


def _build(model_dir: Path, out: Path, precision: str) -> None:
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir),
               "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(out / "cache")]
    # Nothing from a hub: the builder reads the folder it is given.
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1", TQDM_DISABLE="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines()
                 if line.strip()]
        errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b", line)]
        raise ExportFailed((errors or lines or [f"exit status {done.returncode}"])[-1])


def _configure(out: Path, eos: list[int], pad: int) -> None:
    """The turn-ending tokens the transformers generator stops at (the builder records only
    the config's eos), and a pad token for batches."""
    path = out / CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    config["model"]["eos_token_id"] = eos if len(eos) > 1 else eos[0]
    config["model"]["pad_token_id"] = pad
    path.write_text(json.dumps(config, indent=4), encoding="utf-8")


def _smoke_test(out: Path) -> None:
    """Load the export and generate a token: a folder that cannot do that is not kept."""
    import numpy as np
    import onnxruntime_genai as og
    model = og.Model(str(out))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=4, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([[1, 2]], dtype=np.int32))
    generator.generate_next_token()
