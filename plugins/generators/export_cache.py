"""Model exports for the generators on other runtimes (`onnx-genai`, `openvino`): made once
per base model, adapter fingerprint, settings and library versions, kept in the workspace's
models folder, never half-used.

    installed_version(name)                       -> a library's version, for export keys
    export_folder(workspace, key)                 -> where the export for `key` is kept
    ensure_export(folder, key, ...)               -> its record, exported now if need be
    merged_model(source, adapter, out)            -> base + adapter as one float32 folder

The folder's name holds a digest of the key, so a new adapter or upgraded library gets a new
export and a changed one is never reused. It is written into a temporary folder and swapped
into place complete (core/workspace.py atomic_folder): an interrupted export leaves nothing,
and a folder whose record does not match its key is exported again.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

from ragloop.core import RagloopError, atomic_folder
from ragloop.plugins.hf.common import library_warnings_hidden, quiet_transformers, short_error
from ragloop.plugins.hf.gguf import models_cache_dir
from ragloop.plugins.hf.loader import load_causal_lm

EXPORTS_DIR = "generator-exports"
RECORD = "ragloop-export.json"
LEFTOVERS = ("merged", "cache")       # scratch a build may leave in its folder


def installed_version(name: str) -> str:
    """The installed version of distribution `name`, or "none"."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def export_folder(workspace, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", key["model"].split("@")[0])[:40]
    return models_cache_dir(workspace) / EXPORTS_DIR / f"{slug}-{key['precision']}-{digest}"


def read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_export(folder: Path, key: dict, *, what: str, runtime: str,
                  build: Callable[[Path], None], takes: str) -> dict:
    """The export's record, running `build(tmp)` into a fresh folder first when `folder`
    holds none for `key`. A failed export (anything `build` raises but a RagloopError or
    Ctrl-C) is recorded too (`failed`: why), so later runs do not try again with the same
    libraries. `what` names the model, `runtime` the target and `takes` how long it takes in
    the progress lines."""
    record = read_record(folder)
    if record is not None and record.get("key") == key:
        return record
    # A line, not a spinner: the command's own "Loading the model" spinner is already live,
    # and keeps turning while this runs.
    say(f"exporting {what} to {runtime} {key['precision']} (once per model, adapter and "
        f"precision; {takes}) ...")
    started = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(folder) as tmp:
        try:
            build(tmp)
            record = {"key": key, "seconds": round(time.perf_counter() - started, 1)}
        except (KeyboardInterrupt, RagloopError):
            raise
        except Exception as exc:            # the builder's or the runtime's own refusal
            for p in tmp.iterdir():
                remove(p)
            record = {"key": key, "failed": short_error(exc, 200)}
        for leftover in LEFTOVERS:
            remove(tmp / leftover)
        (tmp / RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
    if "failed" not in record:
        say(f"exported in {record['seconds']:.0f}s to {folder}")
    return record


def say(text: str) -> None:
    """One plain line on stderr (paths and brackets are not rich markup)."""
    from ragloop.core import stderr
    stderr.print(text, markup=False, highlight=False, soft_wrap=True)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def merged_model(source: str, adapter: Path, out: Path) -> Path:
    """The base with the adapter merged in, in float32, as a model folder."""
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
