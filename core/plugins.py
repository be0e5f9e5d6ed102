"""The plugin manager: built-ins and third-party distributions load through the same door.

Built-ins are listed by module name in DEFAULT_PLUGINS (the core never imports them
directly); third-party plugins are entry points in the group ``ragloop``. Loading is
idempotent and on demand. ``RAGLOOP_LOAD_PLUGINS`` restricts third-party loading: unset
loads every installed one, empty loads none, a comma list loads only those distributions.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from importlib import metadata

import click
import pluggy

from ragloop.core import __version__, hookspecs

ENTRY_POINT_GROUP = "ragloop"

DEFAULT_PLUGINS = (
    "ragloop.plugins.loaders.text",
    "ragloop.plugins.loaders.html",
    "ragloop.plugins.loaders.pdf",
    "ragloop.plugins.loaders.jsonl",
    "ragloop.plugins.chunkers.tokens",
    "ragloop.plugins.rerankers.cross_encoder",
    "ragloop.plugins.embedders.sentence_transformers",
    "ragloop.plugins.generators.transformers",
    "ragloop.plugins.generators.onnx_genai",
    "ragloop.plugins.generators.openvino",
    "ragloop.plugins.prompts.default",
    "ragloop.plugins.prompts.few_shot",
    "ragloop.plugins.raters.human",
    "ragloop.plugins.raters.judge",
    "ragloop.plugins.raters.llm_judge",
    "ragloop.plugins.raters.reference",
    "ragloop.plugins.filters.dedup",
    "ragloop.plugins.filters.quality",
    "ragloop.plugins.filters.pii",
    "ragloop.plugins.filters.agreement",
    "ragloop.plugins.filters.curriculum",
    "ragloop.plugins.filters.command",
    "ragloop.plugins.formats.jsonl",
    "ragloop.plugins.formats.hf",
    "ragloop.plugins.training.dpo",
    "ragloop.plugins.training.kto",
    "ragloop.plugins.training.orpo",
    "ragloop.plugins.training.sft",
    "ragloop.plugins.training.sft_dpo",
    "ragloop.plugins.training.reward",
    "ragloop.plugins.training.rlhf",
    "ragloop.plugins.training.distill_logits",
    "ragloop.plugins.backends.local",
    "ragloop.plugins.backends.accelerate",
    "ragloop.plugins.backends.deepspeed",
    "ragloop.plugins.distillation.logits",
    "ragloop.plugins.distillation.sequences",
    "ragloop.plugins.distillation.command",
    "ragloop.plugins.evaluators.retrieval",
    "ragloop.plugins.evaluators.reward",
    "ragloop.plugins.evaluators.winrate",
    "ragloop.plugins.evaluators.correctness",
    "ragloop.plugins.compression.torchao",
    "ragloop.plugins.compression.prune",
    "ragloop.plugins.compression.bnb",
    "ragloop.plugins.compression.command",
    "ragloop.stores.faiss",
    "ragloop.stores.pgvector",
)

pm = pluggy.PluginManager("ragloop")
pm.add_hookspecs(hookspecs)


@dataclass
class PluginInfo:
    name: str
    version: str
    builtin: bool
    distribution: str | None = None
    hooks: list[str] = field(default_factory=list)


_info: dict[str, PluginInfo] = {}
_loaded = False
_warned: set[str] = set()


def warn(message: str) -> None:
    """Print a one-line warning to stderr, once per message per process."""
    if message not in _warned:
        _warned.add(message)
        click.secho(f"Warning: {message}", fg="yellow", err=True)


def normalize(dist_name: str) -> str:
    return re.sub(r"[-_.]+", "-", dist_name).lower()


def allowed_distributions() -> set[str] | None:
    """None means every installed plugin; otherwise the normalized names allowed."""
    value = os.environ.get("RAGLOOP_LOAD_PLUGINS")
    if value is None:
        return None
    return {normalize(v.strip()) for v in value.split(",") if v.strip()}


def allowlist_report() -> tuple[list[str], list[str], list[str]]:
    """(installed third-party distributions, those RAGLOOP_LOAD_PLUGINS hides, entries of it
    that name no installed distribution), so `ragloop plugins` can say why a plugin is
    missing instead of calling it not installed."""
    installed = {normalize(ep.dist.name if ep.dist else ep.name): ep.dist.name if ep.dist
                 else ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    names = sorted(installed.values(), key=str.lower)
    allowed = os.environ.get("RAGLOOP_LOAD_PLUGINS")
    if allowed is None:
        return names, [], []
    entries = [v.strip() for v in allowed.split(",") if v.strip()]
    wanted = {normalize(v) for v in entries}
    hidden = [name for name in names if normalize(name) not in wanted]
    unknown = [v for v in dict.fromkeys(entries) if normalize(v) not in installed]
    return names, hidden, unknown


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _register(module, name: str) -> bool:
    """Register a module, rejecting hook implementations that match no hook."""
    try:
        pm.register(module, name=name)
    except Exception as exc:  # pluggy's PluginValidationError: wrong hook signature
        warn(f"plugin {name!r} was not loaded ({_one_line(exc)}); fix or uninstall it")
        return False
    unknown = [hc.name for hc in pm.get_hookcallers(module) or [] if hc.spec is None]
    if unknown:
        pm.unregister(module)
        warn(f"plugin {name!r} was not loaded: {', '.join(unknown)} is not a ragloop hook; "
             f"see `ragloop plugins --hooks`")
        return False
    return True


def load_plugins() -> None:
    """Register the built-ins and every allowed third-party entry point, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        if _register(module, module_name):
            _info[module_name] = PluginInfo(module_name, __version__, builtin=True)
    allowed = allowed_distributions()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else ep.name
        if allowed is not None and normalize(dist) not in allowed:
            continue
        if pm.has_plugin(ep.name):
            warn(f"plugin {ep.name!r} from {dist} clashes with one already loaded; skipped")
            continue
        try:
            module = ep.load()
        except Exception as exc:
            warn(f"plugin {ep.name!r} from {dist} failed to import ({_one_line(exc)}); skipped")
            continue
        if _register(module, ep.name):
            version = ep.dist.version if ep.dist else "unknown"
            _info[ep.name] = PluginInfo(ep.name, version, builtin=False, distribution=dist)


def reset_for_tests() -> None:
    """Unregister every plugin and forget warnings, so the next load_plugins() reads the
    environment (RAGLOOP_LOAD_PLUGINS, sys.path) afresh."""
    global _loaded
    for name, plugin in list(pm.list_name_plugin()):
        if plugin is not None:
            pm.unregister(plugin, name)
    _info.clear()
    _warned.clear()
    _loaded = False


def plugin_infos(include_builtin: bool = False) -> list[PluginInfo]:
    """Every registered plugin with the hooks it implements (one-off test plugins included)."""
    load_plugins()
    result = []
    for name, plugin in pm.list_name_plugin():
        info = _info.get(name) or PluginInfo(name, "unknown", builtin=False)
        if info.builtin and not include_builtin:
            continue
        info.hooks = sorted(hc.name for hc in pm.get_hookcallers(plugin) or [])
        result.append(info)
    return sorted(result, key=lambda i: (not i.builtin, i.name))


def hook_names() -> list[str]:
    return sorted(n for n in dir(hookspecs) if n.startswith("register_"))


def call_each(hook_name: str, arguments) -> None:
    """Call every implementation of a hook with ``arguments(plugin_name)`` as its keyword
    arguments, isolating failures: one broken third-party plugin warns and is skipped
    instead of stopping the built-ins (pluggy's own call aborts at the first exception)."""
    load_plugins()
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        kwargs = arguments(impl.plugin_name)
        try:
            impl.function(*[kwargs[arg] for arg in impl.argnames])
        except Exception as exc:
            if impl.plugin_name in DEFAULT_PLUGINS:
                raise
            warn(f"plugin {impl.plugin_name!r} failed in {hook_name} ({_one_line(exc)}); skipped")
