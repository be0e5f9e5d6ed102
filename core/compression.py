"""Compressing a model: `ragloop compress` and quantize-on-load (`--compress METHOD`).

A compressed folder is an ordinary transformers checkpoint (safetensors) plus
`ragloop-compress.json`: the method, its options, where the weights came from, and the
report. Pruned folders hold the pruned weights. Quantized folders hold the full-precision
weights and loading applies the recorded quantization again (under a second for
SmolLM2-135M), so no tensor subclass is ever pickled or unpickled and other tools read the
folder as the plain model. Folders are written beside their final place and renamed into it.

    load_compressor(name, options=(), workspace=None) -> Compressor
    for_loading(name, folder, workspace=None) -> Compressor | None
    read_recipe(folder) -> dict | None
    weight_stats(model) -> dict        held_out_texts(ws, eval_text) -> (texts, source)
    token_ids(tokenizer, texts, count) -> list[int]
    perplexity(model, ids) -> (ppl, tokens scored)     windows(ids) -> LongTensor
    compress(ws, method, options, out, ...) -> report dict
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from . import __version__, registry
from .config import build_config
from .errors import RagloopError
from .workspace import utcnow

RECIPE = "ragloop-compress.json"
CORPUS = Path(__file__).resolve().parent.parent / "examples" / "corpus"
WINDOW = 256                 # tokens per perplexity window; windows are scored independently


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
    path = Path(folder) / RECIPE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RagloopError(f"{path} is not valid JSON ({exc}); compress the model again") from None


def for_loading(name: str | None, folder: str | None, workspace=None):
    """What a generator applies after loading: the compressor named (--compress), else the
    quantization a compressed folder records, else None."""
    if name:
        compressor = load_compressor(name, (), workspace)
        if compressor.kind != "quantize":
            raise RagloopError(f"--compress quantizes as the model loads, and {name} is a "
                               f"{compressor.kind} method; write a pruned folder with `ragloop "
                               f"compress --method {name} --out DIR` and load that")
        return compressor
    recipe = read_recipe(folder) if folder else None
    if not recipe or recipe.get("kind") != "quantize":
        return None
    if recipe.get("method") not in registry.names("compressor"):
        raise RagloopError(f"{folder} was quantized with {recipe.get('method')!r}, which no "
                           f"installed plugin provides; available: "
                           f"{', '.join(registry.names('compressor'))}")
    return load_compressor(recipe["method"], workspace=workspace, config=recipe.get("config", {}))


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
    from .ask import DEFAULT_GENERATOR, load_generator
    generator = load_generator(ws, DEFAULT_GENERATOR, [f"model={model}"] if model else [])
    if not hasattr(generator, "checkpoint"):
        raise RagloopError(f"generator {DEFAULT_GENERATOR!r} cannot give a checkpoint to compress")
    return generator.checkpoint(), generator.model_id


def _adapter(ws, name: str | None, model_id: str) -> dict | None:
    if not name:
        return None
    from .adapters import check_base, read_metadata, require_lora
    from .ask import resolve_adapter
    meta = read_metadata(Path(resolve_adapter(ws, name)))
    require_lora(meta, "merged before compressing")
    check_base(meta, model_id)
    return meta


def _load(checkpoint: str, adapter: dict | None, device: str, dtype):
    import warnings

    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    transformers.logging.set_verbosity_error()     # progress bars and notes for library authors
    transformers.logging.disable_progress_bar()
    with warnings.catch_warnings():          # peft and transformers warn about each other
        warnings.simplefilter("ignore", FutureWarning)
        try:
            model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        except Exception as exc:
            raise RagloopError(f"cannot load the model in {checkpoint} "
                               f"({' '.join(str(exc).split())[:200]})") from None
        if adapter is not None:
            from peft import PeftModel
            model = PeftModel.from_pretrained(model, adapter["path"]).merge_and_unload()
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

    from .adapters import write_folder
    compressor = load_compressor(method, options, ws)       # cheap mistakes fail first
    out = check_out(out)
    calibrate = compressor.calibration_tokens
    texts, text_source = (held_out_texts(ws, eval_text) if eval_tokens + calibrate
                          else (None, None))
    checkpoint, model_id = _source(ws, model)
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
        # Saved and then measured at the saved precision, so the numbers are the folder's.
        result.to(saved_dtype).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        result.to(work_dtype)
        if compressor.kind != "prune":
            extra = compressor.load_kwargs(device)
            if extra:
                from transformers import AutoModelForCausalLM
                result = AutoModelForCausalLM.from_pretrained(tmp, **extra)
            result = compressor.compress(result)
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
