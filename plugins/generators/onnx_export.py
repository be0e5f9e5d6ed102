"""A chat model (with its adapter merged in) exported once for ONNX Runtime GenAI and kept in
the workspace's models folder, for the `onnx-genai` generator.

The export is the runtime's own model builder (`onnxruntime_genai.models.builder`): it writes
the decoder with its fused attention and KV cache, int4/int8 weights as MatMulNBits, and the
`genai_config.json` the runtime reads. It runs in a child process: it prints pages of
progress, and its peak memory (the whole model, twice) is given back when it ends.

    export_key(model_id, adapter_id, precision)  -> what the export depends on
    ensure_export(source, adapter, folder, key, ...) -> its record, exported now if need be

Where exports are kept, and why one is never half-used: export_cache.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from ragloop.core import RagloopError
from ragloop.plugins.generators.export_cache import installed_version, merged_model
from ragloop.plugins.generators.export_cache import ensure_export as cached_export

PRECISIONS = ("int4", "int8", "fp32")
EXTRA = "onnx-genai"
# Modules the extra installs: the runtime, and what its model builder imports.
MODULES = {"onnxruntime_genai": "onnxruntime-genai", "onnx_ir": "onnx-ir", "onnx": "onnx"}
RECIPE = 1           # bumped when the export steps change, so older exports are not reused
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
    return installed_version("onnxruntime-genai")


def _versions() -> dict[str, str]:
    return {name: installed_version(name) for name in (
        "onnxruntime-genai", "onnxruntime", "onnx-ir", "onnx", "transformers", "torch", "peft")}


def export_key(model_id: str, adapter_id: str | None, precision: str) -> dict:
    """What an export depends on: a change to any of it makes a new export."""
    return {"recipe": RECIPE, "model": model_id, "adapter": adapter_id,
            "precision": precision, "versions": _versions()}


def ensure_export(source: str, adapter: Path | None, folder: Path, key: dict, *,
                  eos: list[int], pad: int, what: str) -> dict:
    """The export's record, exporting into `folder` first when it holds none for `key`
    (export_cache.ensure_export: a failed export is recorded too)."""
    def build(tmp: Path) -> None:
        model_dir = merged_model(source, adapter, tmp / "merged") if adapter else Path(source)
        _build(model_dir, tmp, key["precision"])
        _configure(tmp, eos, pad)
        _smoke_test(tmp)
    return cached_export(folder, key, what=what, runtime="ONNX Runtime GenAI", build=build,
                         takes="about a minute")


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
