"""Compressing a model: `ragloop compress` and quantize-on-load (`--compress METHOD`).

A compressed folder is a transformers checkpoint (safetensors) plus `ragloop-compress.json`:
the method, its options, where the weights came from, what the folder stores, and the
report. Pruned folders hold the pruned weights. Quantized folders hold the quantized
weights where the method gives a transformers quantization config for them
(`Compressor.quantization_config(model)`; torchao's int8 methods: int8 data + scales in
transformers' torchao safetensors format, so `from_pretrained` gives the quantized model
back and no tensor subclass is ever pickled); otherwise (int4, bitsandbytes) they hold the
full-precision weights, quantized again on load. Either way loading applies the recorded
method, which only does what the folder could not store (the CPU int8 kernel swap). Folders
are written beside their final place and renamed into it. What loading a compressed folder
needs (the recipe, `for_loading`, `load_compressor`) is in plugins/hf/compressed.py, which
generators import without importing this family.

    weight_stats(model) -> dict        held_out_texts(ws, eval_text) -> (texts, source)
    token_ids(tokenizer, texts, count) -> list[int]
    perplexity(model, ids) -> (ppl, tokens scored)     windows(ids) -> LongTensor
    compress(ws, method, options, out, ...) -> report dict
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections import Counter
from pathlib import Path

from ragloop.core import RagloopError, __version__, utcnow
from ragloop.plugins.hf.common import library_warnings_hidden
from ragloop.plugins.hf.compressed import RECIPE, holds_quantized, load_compressor, read_recipe
from ragloop.plugins.hf.loader import apply_adapter, load_causal_lm

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus"
WINDOW = 256                 # tokens per perplexity window; windows are scored independently


def weight_stats(model) -> dict:
    """Parameters (tied ones once), and the Linear weights and how many of them are zero."""
    import torch
    linear = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    unique = {id(w): w for w in linear}.values()
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "linear_weights": sum(w.numel() for w in unique),
            "zeros": sum(int((w == 0).sum()) for w in unique)}


def held_out_texts(ws, eval_text: str | None = None) -> tuple[list[str], str]:
    """Text to measure perplexity on: --eval-text, else the workspace's chunks, else the
    example corpus shipped with ragloop."""
    if eval_text:
        path = Path(eval_text).expanduser()
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise RagloopError(f"cannot read {path} ({exc.strerror or exc})") from None
        if not text.strip():
            raise RagloopError(f"{path} is empty; give a file with some text to measure on")
        return [text], str(path)
    rows = [r[0] for r in ws.db.execute("select text from chunks order by rowid limit 2000")]
    if rows:
        return rows, f"the workspace's chunks ({len(rows)})"
    files = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".md", ".txt", ".rst"))
    if files:
        return [p.read_text(encoding="utf-8", errors="replace") for p in files], "examples/corpus"
    raise RagloopError("no held-out text to measure perplexity on: index some documents or "
                       "give --eval-text FILE")


def token_ids(tokenizer, texts, count: int) -> list[int]:
    """The first `count` tokens of the texts, read one after another."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) >= count:
            break
    return ids[:count]


def windows(ids: list[int]):
    """Whole windows of WINDOW tokens, stacked (the tail that fills no window is dropped)."""
    import torch
    whole = len(ids) // WINDOW * WINDOW
    return torch.tensor(ids[:whole], dtype=torch.long).view(-1, WINDOW)


def perplexity(model, ids: list[int]) -> tuple[float, int]:
    """exp(mean next-token loss) over `ids`, in independent windows of WINDOW tokens;
    (perplexity, tokens scored)."""
    import torch
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids), WINDOW):
            window = torch.tensor([ids[start:start + WINDOW]], device=device)
            if window.shape[1] < 2:
                break
            logits = model(input_ids=window).logits[0, :-1].float()
            total += torch.nn.functional.cross_entropy(logits, window[0, 1:],
                                                       reduction="sum").item()
            count += window.shape[1] - 1
    if not count:
        raise RagloopError("the held-out text is too short to measure perplexity on")
    return math.exp(total / count), count


def _source(ws, model: str | None) -> tuple[str, str]:
    """(checkpoint folder or hub id, model id), as `ask` would load the model."""
    from ragloop.core import DEFAULT_GENERATOR, load_generator
    generator = load_generator(ws, DEFAULT_GENERATOR, [f"model={model}"] if model else [])
    checkpoint = generator.checkpoint()       # None: the generator has no weights to load
    if checkpoint is None:
        raise RagloopError(f"generator {DEFAULT_GENERATOR!r} cannot give a checkpoint to compress")
    return checkpoint, generator.model_id


def _adapter(ws, name: str | None, model_id: str) -> dict | None:
    if not name:
        return None
    from ragloop.core import check_base, read_metadata, require_lora, resolve_adapter
    meta = read_metadata(Path(resolve_adapter(ws, name)))
    require_lora(meta, "merged before compressing")
    check_base(meta, model_id)
    return meta


def _load(checkpoint: str, adapter: dict | None, device: str, dtype):
    from transformers import AutoTokenizer
    try:
        model = load_causal_lm(checkpoint, dtype=dtype, device=None)
        with library_warnings_hidden():
            tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    except Exception as exc:
        raise RagloopError(f"cannot load the model in {checkpoint} "
                           f"({' '.join(str(exc).split())[:200]})") from None
    if adapter is not None:         # merged before the model moves, as `adapters merge` does
        model = apply_adapter(model, adapter["path"], merge=True)
    return model.to(device).eval(), tokenizer


def _checkpoint_dtype(checkpoint: str):
    from transformers import AutoConfig
    try:
        return AutoConfig.from_pretrained(checkpoint).dtype
    except Exception:           # unreadable here means _load has already said why
        return None


def _save_dtype(choice: str, checkpoint_dtype, adapter):
    import torch
    if choice != "auto":
        return getattr(torch, choice)
    # A merged adapter's small deltas would round away in bfloat16; else keep the source's.
    if adapter is None and checkpoint_dtype in (torch.bfloat16, torch.float16):
        return checkpoint_dtype
    return torch.float32


def _weights_bytes(folder) -> int | None:
    folder = Path(folder)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) if folder.is_dir() \
        else None


def _is_subclass(tensor) -> bool:
    import torch
    return type(tensor) not in (torch.Tensor, torch.nn.Parameter)


def _store_quantized(plain: Path, tmp: Path, storage, device, work_dtype, saved_dtype) -> str:
    """Reload the full-precision folder `plain` through transformers with the method's
    quantization config and save it into `tmp` quantized; say what was stored. Quantizing
    the saved-precision weights in the working dtype on the device is what loading them used
    to do, so the integer data is the same as `ask --compress` computes in memory."""
    placed = {} if device == "cpu" else {"device_map": {"": device}}
    model = load_causal_lm(plain, dtype=work_dtype, device=None, quantization_config=storage,
                           **placed)
    quantized = Counter(type(p).__name__ for p in model.parameters() if _is_subclass(p))
    for p in model.parameters():          # norms and embeddings stay at the saved precision
        if not _is_subclass(p) and p.is_floating_point():
            p.data = p.data.to(saved_dtype)
    model.config.dtype = saved_dtype
    model.save_pretrained(tmp, safe_serialization=True)
    kinds = ", ".join(sorted(quantized))
    return (f"quantized weights of {sum(quantized.values())} layers ({kinds}: integer data + "
            f"scales), the rest {str(saved_dtype).removeprefix('torch.')}")


def check_out(out: Path) -> Path:
    out = Path(out).expanduser()
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise RagloopError(f"{out} already exists; choose another --out or remove it first")
    return out


def compress(ws, method: str, options=(), *, out, model: str | None = None,
             adapter: str | None = None, eval_text: str | None = None, eval_tokens: int = 2048,
             dtype: str = "auto", announce=lambda message: None) -> dict:
    """Load (merging an adapter first), compress, measure, and write the folder `out`."""
    import torch

    from ragloop.core import write_folder
    compressor = load_compressor(method, options, ws)       # cheap mistakes fail first
    out = check_out(out)
    calibrate = compressor.calibration_tokens
    texts, text_source = (held_out_texts(ws, eval_text) if eval_tokens + calibrate
                          else (None, None))
    checkpoint, model_id = _source(ws, model)
    if Path(checkpoint).is_dir() and holds_quantized(checkpoint):
        origin = (read_recipe(checkpoint) or {}).get("checkpoint")
        raise RagloopError(f"{checkpoint} holds quantized weights; compress the full-precision "
                           f"model it came from{f' ({origin})' if origin else ''} instead")
    meta = _adapter(ws, adapter, model_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    compressor.check(device)
    started = time.perf_counter()
    announce(f"Loading {model_id}" + (f" with adapter {meta['name']} merged" if meta else ""))
    work_dtype = torch.float32 if device == "cpu" else torch.bfloat16
    base, tokenizer = _load(checkpoint, meta, device, work_dtype)
    saved_dtype = _save_dtype(dtype, _checkpoint_dtype(checkpoint), meta)
    report: dict = {"before": weight_stats(base)}
    # Calibration reads the tokens after the measured ones, so it never sees what is scored.
    ids = token_ids(tokenizer, texts, eval_tokens + calibrate) if texts else []
    sample = windows(ids[eval_tokens:]) if calibrate else None
    if calibrate and not len(sample):
        raise RagloopError(f"{method} needs sample text beyond the {eval_tokens} tokens "
                           f"perplexity is measured on, and {text_source} has {len(ids)} in "
                           f"all; give --eval-text FILE with more text, or lower --eval-tokens")
    if sample is not None:
        report["calibration_tokens"] = sample.numel()
    if eval_tokens:
        announce(f"Measuring perplexity on {eval_tokens} tokens of {text_source}")
        report["perplexity_before"], report["eval_tokens"] = perplexity(base, ids[:eval_tokens])
        report["eval_source"] = text_source

    def write(tmp: Path) -> None:
        announce(f"Compressing with {method}")
        tick = time.perf_counter()
        if compressor.kind != "prune":
            result = base
        elif sample is not None:
            result = compressor.compress(base, calibration=sample)
        else:
            result = compressor.compress(base)
        report["after"] = weight_stats(result)
        storage = (getattr(compressor, "quantization_config", lambda model: None)(result)
                   if compressor.kind != "prune" else None)
        plain = tmp / ".full-precision" if storage is not None else tmp
        # Saved and then measured at the saved precision, so the numbers are the folder's.
        result.to(saved_dtype).save_pretrained(plain, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        result.to(work_dtype)
        dtype_name = str(saved_dtype).removeprefix("torch.")
        report["stored"] = f"{dtype_name} weights"
        if compressor.kind != "prune":
            extra = compressor.load_kwargs(device)
            if storage is not None:
                announce("Saving the quantized weights")
                report["stored"] = _store_quantized(plain, tmp, storage, device, work_dtype,
                                                    saved_dtype)
                shutil.rmtree(plain)
                # Measure what `ask -o model=DIR` gets: the folder loaded, then the method.
                result = load_causal_lm(tmp, dtype=work_dtype, device=device)
            else:
                why = getattr(compressor, "not_stored", "")
                report["stored"] = (f"full-precision {dtype_name} weights, quantized again on "
                                    f"load{f' ({why})' if why else ''}")
                if extra:           # the method quantizes as it loads (bitsandbytes)
                    result = load_causal_lm(tmp, device=None, **{"dtype": "auto", **extra})
            result = compressor.compress(result)
        report["weights_bytes"] = _weights_bytes(tmp)
        report["source_weights_bytes"] = _weights_bytes(checkpoint)
        report["compress_s"] = round(time.perf_counter() - tick, 2)
        if eval_tokens:
            report["perplexity_after"], _ = perplexity(result, ids[:eval_tokens])
        recipe = {
            "method": method, "kind": compressor.kind,
            "config": dataclasses.asdict(compressor.config), "summary": compressor.summary,
            "model_id": model_id, "checkpoint": checkpoint, "source_recipe": read_recipe(checkpoint)
            if Path(checkpoint).is_dir() else None,
            "adapter": {k: meta.get(k) for k in ("name", "path", "method", "created_at")}
            if meta else None,
            "dtype": str(saved_dtype).removeprefix("torch."), "created_at": utcnow(),
            "ragloop_version": __version__, "report": report,
        }
        (tmp / RECIPE).write_text(json.dumps(recipe, indent=2, default=str), encoding="utf-8")

    write_folder(out, write, f"writing {out}", replace=True)
    report.update(method=method, kind=compressor.kind, summary=compressor.summary, out=str(out),
                  model_id=model_id, seconds=round(time.perf_counter() - started, 1))
    return report
