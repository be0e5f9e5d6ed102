"""Loaded models handed from one step of a command to a later one in the same process, so a
model is loaded once: `distill --method logits` loads the teacher to answer the prompts, and
the `distill-logits` trainer (a training method, in another family) takes that model instead
of loading the teacher again. Only inside the `keep` block: nothing outlives the command that
loaded it. A training run in other processes (the accelerate backend) loads its own.

    with keep(model, adapter, loaded): ...      kept(model, adapter=None) -> loaded | None

`model` and `adapter` name what was loaded (the checkpoint folder or hub id, and the adapter
folder merged into it, or None), exactly as the later step is given them.
"""

from __future__ import annotations

from contextlib import contextmanager

_kept: dict[tuple[str, str | None], object] = {}


def _key(model, adapter) -> tuple[str, str | None]:
    return str(model), str(adapter) if adapter else None


@contextmanager
def keep(model, adapter, loaded):
    """Make `loaded` (the model `model` with `adapter` merged) what `kept` gives inside the
    block."""
    key = _key(model, adapter)
    _kept[key] = loaded
    try:
        yield loaded
    finally:
        _kept.pop(key, None)


def kept(model, adapter=None):
    """The model kept for (`model`, `adapter`) by an enclosing `keep`, else None."""
    return _kept.get(_key(model, adapter))
