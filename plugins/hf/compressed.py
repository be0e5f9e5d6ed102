"""What a loader needs to load a compressed model folder (one `ragloop compress` wrote) or to
quantize a model as it loads (`--compress METHOD`): the folder's recipe, whether it stores
quantized weights, and the compressor to apply after loading.

A compressed folder is a transformers checkpoint plus `ragloop-compress.json` (RECIPE), which
records the method, its options, where the weights came from and what the folder stores.
Loading applies the recorded method again, which only does what the folder could not store.
Writing such folders is the compression family's (`plugins/compression/common.py`); loading
them is every generator's, so it lives here, in the helpers any family may import.

    load_compressor(name, options=(), workspace=None, config=None) -> Compressor
    for_loading(name, folder, workspace=None) -> Compressor | None
    read_recipe(folder) -> dict | None     holds_quantized(folder) -> bool
"""

from __future__ import annotations

import json
from pathlib import Path

from ragloop.core import RagloopError, build_config, registry

RECIPE = "ragloop-compress.json"


def load_compressor(name: str, options=(), workspace=None, config=None):
    """A compressor by name (unknown names list the valid ones), built from -o pairs or from a
    recorded config dict."""
    cls = registry.get_compressor(name)
    if config is None:
        return cls(build_config(cls.Config, options, name), workspace=workspace)
    try:
        return cls(cls.Config(**config), workspace=workspace)
    except (TypeError, ValueError) as exc:
        raise RagloopError(f"the recorded options of {name} do not fit the installed plugin "
                           f"({exc}); compress the model again") from None


def read_recipe(folder) -> dict | None:
    """The folder's compression recipe, or None when it has none (not a compressed folder)."""
    path = Path(folder) / RECIPE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RagloopError(f"{path} is not valid JSON ({exc}); compress the model again") from None


def holds_quantized(folder) -> bool:
    """Whether a folder stores quantized weights (its config.json has a quantization_config),
    which load only as that quantized model."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("quantization_config"))


def for_loading(name: str | None, folder: str | None, workspace=None):
    """What a generator applies after loading: the compressor named (--compress), else the
    quantization a compressed folder records, else None."""
    recipe = read_recipe(folder) if folder else None
    if name:
        compressor = load_compressor(name, (), workspace)
        if compressor.kind != "quantize":
            raise RagloopError(f"--compress quantizes as the model loads, and {name} is a "
                               f"{compressor.kind} method; write a pruned folder with `ragloop "
                               f"compress --method {name} --out DIR` and load that")
        if not (recipe and recipe.get("kind") == "quantize" and holds_quantized(folder)):
            return compressor
        if recipe.get("method") != name:    # its full-precision weights are not in the folder
            raise RagloopError(f"{folder} holds weights quantized with {recipe.get('method')} "
                               f"already; drop --compress, or quantize the model it came from "
                               f"({recipe.get('checkpoint')}) with --compress {name}")
    if not recipe or recipe.get("kind") != "quantize":
        return None
    if recipe.get("method") not in registry.names("compressor"):
        raise RagloopError(f"{folder} was quantized with {recipe.get('method')!r}, which no "
                           f"installed plugin provides; available: "
                           f"{', '.join(registry.names('compressor'))}")
    return load_compressor(recipe["method"], workspace=workspace, config=recipe.get("config", {}))
