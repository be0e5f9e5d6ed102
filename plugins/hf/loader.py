"""The one way the built-in plugins load a transformers model: base weights, then an optional
PEFT adapter on top, optionally merged into the base.

    load_causal_lm(model, adapter=None, merge=False, dtype="float32", device="cpu")
        -> the causal LM (a PeftModel with an adapter, a plain model when merged)
    load_sequence_classifier(model, adapter=None, merge=False, num_labels=1, pad_token_id=None)
        -> the same for a model with a sequence-classification head (reward models)
    apply_adapter(model, adapter, merge=False) -> the adapter applied to a loaded model

The adapter is applied and merged before the model moves to `device`, so a merge gives the
same float32 weights on every machine. Library logs, progress bars and the deprecation
notes transformers and peft raise about each other are silenced: they speak to library
authors, not to ragloop's users. torch, transformers and peft are imported inside the
functions: every CLI start imports the plugin modules.
"""

from __future__ import annotations

from ragloop.plugins.hf.common import LOADING, library_warnings_hidden, quiet_transformers


def torch_dtype(dtype):
    """A torch dtype from itself or its name ("float32", "bfloat16", ...); "auto" (the
    checkpoint's own, transformers decides) and None are passed through."""
    import torch
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    found = getattr(torch, str(dtype), None)
    if not isinstance(found, torch.dtype):
        raise ValueError(f"{dtype!r} is not a torch dtype; use e.g. float32 or bfloat16")
    return found


def apply_adapter(model, adapter, *, merge: bool = False):
    """`model` with the PEFT adapter in folder `adapter` on top: a PeftModel, or with
    `merge` the plain model with the adapter's weights added into it."""
    from peft import PeftModel
    with LOADING, library_warnings_hidden():
        model = PeftModel.from_pretrained(model, str(adapter))
        return model.merge_and_unload() if merge else model


def _finish(model, adapter, merge: bool, device):
    if adapter is not None:
        model = apply_adapter(model, adapter, merge=merge)
    return model if device is None else model.to(device)


def load_causal_lm(model, *, adapter=None, merge: bool = False, dtype="float32",
                   device="cpu", trust_remote_code: bool = False, **from_pretrained_kwargs):
    """A causal LM from a folder or hub id, with the PEFT adapter in folder `adapter` (a
    PeftModel; with `merge`, the plain model with the adapter merged in), on `device`
    (None: where from_pretrained placed it, e.g. with a device_map). `dtype` is a torch
    dtype or its name. Extra keyword arguments go to `from_pretrained` (e.g. a
    quantization_config). Errors are the libraries' own: callers word them for users."""
    quiet_transformers()
    from transformers import AutoModelForCausalLM
    with LOADING, library_warnings_hidden():
        loaded = AutoModelForCausalLM.from_pretrained(
            str(model), dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code,
            **from_pretrained_kwargs)
    return _finish(loaded, adapter, merge, device)


def load_sequence_classifier(model, *, adapter=None, merge: bool = False, num_labels: int = 1,
                             pad_token_id=None, dtype="float32", device="cpu",
                             trust_remote_code: bool = False, **from_pretrained_kwargs):
    """load_causal_lm for a model with a sequence-classification head of `num_labels`
    outputs (a reward model's score head). `pad_token_id` is set on its config before the
    adapter is applied: without it the head cannot find each sequence's last token in a
    padded batch."""
    quiet_transformers()
    from transformers import AutoModelForSequenceClassification
    with LOADING, library_warnings_hidden():
        loaded = AutoModelForSequenceClassification.from_pretrained(
            str(model), num_labels=num_labels, dtype=torch_dtype(dtype),
            trust_remote_code=trust_remote_code, **from_pretrained_kwargs)
    if pad_token_id is not None:
        loaded.config.pad_token_id = pad_token_id
    return _finish(loaded, adapter, merge, device)
