"""Plugin options: plain dataclasses, filled from ``-o key=value`` pairs coerced by field type."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Iterable, Literal

from ragloop.core.errors import RagloopError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def option_help(config_cls) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for each field, for --help texts and docs."""
    hints = typing.get_type_hints(config_cls)
    rows = []
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return rows


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: str, tp, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value.lower() in ("none", "null", "") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key)
    if origin is Literal:
        if value not in [str(a) for a in args]:
            raise RagloopError(f"option {key}: {value!r} is not one of "
                               f"{', '.join(str(a) for a in args)}")
        return next(a for a in args if str(a) == value)
    if origin in (list, tuple):
        item = args[0] if args else str
        return [coerce(v.strip(), item, key) for v in value.split(",") if v.strip()]
    if tp is bool:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise RagloopError(f"option {key}: expected true or false, got {value!r}")
    if tp in (int, float):
        try:
            return tp(value)
        except ValueError:
            raise RagloopError(f"option {key}: expected {tp.__name__}, got {value!r}") from None
    return value


def parse_pairs(pairs: Iterable[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RagloopError(f"option {pair!r} is not key=value; write it as -o key=value")
        result[key.strip()] = value.strip()
    return result


def build_config(config_cls, pairs: Iterable[str] = (), owner: str = "", **overrides):
    """An instance of `config_cls` from `-o key=value` pairs; unknown keys are refused
    with the list of valid ones, and `__post_init__` ValueErrors become one-line errors."""
    raw = parse_pairs(pairs)
    hints = typing.get_type_hints(config_cls)
    valid = [f.name for f in dataclasses.fields(config_cls)]
    who = f" for {owner}" if owner else ""
    values = dict(overrides)
    for key, value in raw.items():
        if key not in valid:
            listing = ", ".join(valid) or "none (it takes no options)"
            raise RagloopError(f"unknown option {key!r}{who}; valid options: {listing}")
        values[key] = coerce(value, hints[key], key)
    try:
        return config_cls(**values)
    except (ValueError, TypeError) as exc:
        raise RagloopError(f"invalid options{who}: {exc}") from None


def split_prefixed(pairs: Iterable[str], prefixes: Iterable[str]) -> dict[str, list[str]]:
    """Route `-o part.key=value` to the named part of a command (e.g. chunker, embedder)."""
    prefixes = list(prefixes)
    routed: dict[str, list[str]] = {p: [] for p in prefixes}
    for pair in pairs:
        head, dot, rest = pair.partition(".")
        if not dot or head not in routed or "=" in head:
            raise RagloopError(f"option {pair!r} does not say which part it is for; write "
                               f"-o PART.key=value with PART one of {', '.join(prefixes)}")
        routed[head].append(rest)
    return routed
