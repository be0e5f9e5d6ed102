"""One registry per kind of component, filled by the ``register_<things>`` hooks.

Registries are recomputed on each lookup (the hooks are cheap), so plugins registered or
unregistered at run time, as tests do, are seen at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from ragloop.core.errors import RagloopError
from ragloop.core.plugins import call_each, warn

# component kind -> the hook that fills its registry
HOOKS = {
    "loader": "register_loaders",
    "chunker": "register_chunkers",
    "embedder": "register_embedders",
    "store": "register_stores",
    "reranker": "register_rerankers",
    "generator": "register_generators",
    "prompt": "register_prompts",
    "rater": "register_raters",
    "filter": "register_filters",
    "row format": "register_row_formats",
    "training method": "register_training_methods",
    "training backend": "register_training_backends",
    "compressor": "register_compressors",
    "distiller": "register_distillers",
    "evaluator": "register_evaluators",
}


@dataclass(frozen=True)
class Entry:
    name: str
    cls: type
    plugin: str


def entries(kind: str) -> dict[str, Entry]:
    """Every registered component of a kind, by name, in registration order."""
    found: dict[str, Entry] = {}

    def register(plugin: str, cls: type) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls!r} registered as a {kind} has no `name` attribute")
        if name in found:
            warn(f"{kind} {name!r} from plugin {plugin!r} is already registered by "
                 f"{found[name].plugin!r}; the first one is kept")
            return
        found[name] = Entry(name, cls, plugin)

    call_each(HOOKS[kind], lambda plugin: {"register": partial(register, plugin)})
    return found


def names(kind: str) -> list[str]:
    return list(entries(kind))


def get(kind: str, name: str) -> type:
    """The class registered under `name`, or a one-line error listing the valid names."""
    found = entries(kind)
    if name not in found:
        available = ", ".join(found) or "none installed"
        raise RagloopError(f"unknown {kind} {name!r}; available: {available}")
    return found[name].cls


def get_loader(name: str) -> type: return get("loader", name)
def get_chunker(name: str) -> type: return get("chunker", name)
def get_embedder(name: str) -> type: return get("embedder", name)
def get_store(name: str) -> type: return get("store", name)
def get_reranker(name: str) -> type: return get("reranker", name)
def get_generator(name: str) -> type: return get("generator", name)
def get_prompt(name: str) -> type: return get("prompt", name)
def get_rater(name: str) -> type: return get("rater", name)
def get_filter(name: str) -> type: return get("filter", name)
def get_row_format(name: str) -> type: return get("row format", name)
def get_training_method(name: str) -> type: return get("training method", name)
def get_training_backend(name: str) -> type: return get("training backend", name)
def get_compressor(name: str) -> type: return get("compressor", name)
def get_distiller(name: str) -> type: return get("distiller", name)
def get_evaluator(name: str) -> type: return get("evaluator", name)
