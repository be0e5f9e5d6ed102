"""Faster CPU encoding for the sentence-transformers embedder: its transformer exported once
to ONNX (run by ONNX Runtime) or to OpenVINO, optionally int8, kept in the workspace, and
run under sentence-transformers' own tokenizer, pooling and normalization.

Why not `SentenceTransformer(..., backend="onnx")`: that option loads through optimum
(`optimum-onnx`, `optimum-intel`), and no release of either on the package index installs
beside sentence-transformers 6 (it needs transformers 5; optimum-onnx 0.1 pins
transformers<4.58, optimum-intel 2.2 transformers<5.6, and neither imports under 5.24).
The runtimes have no such pin, so this module does what optimum would: the same export
(torch.onnx, eager attention so ONNX Runtime can fuse it), ONNX Runtime's BERT graph
fusions, and its dynamic int8 quantization; for OpenVINO, its converter and NNCF.

    export_folder(workspace, ...)  -> the cache folder for a model, backend and quantization
    ensure_export(model, ...)      -> that folder, exported now when it is not there yet
    attach(model, folder, ...)     -> the model, its transformer run by the runtime

torch, onnx, onnxruntime, openvino and nncf are imported inside the functions: every CLI
start imports the plugin modules.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from importlib import metadata
from pathlib import Path

from ragloop.core import RagloopError, atomic_folder, quiet_library_logs
from ragloop.plugins.hf.common import short_error

BACKENDS = ("torch", "onnx", "openvino")
QUANTIZATIONS = ("none", "int8")
# The pyproject extra that installs each runtime, and the modules it must provide.
EXTRAS = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "nncf")}
RUNTIME_NAMES = {"onnx": "ONNX", "openvino": "OpenVINO"}
# Bumped when the export recipe changes, so older exports are not reused.
RECIPE = 1
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
EXPORTS_DIR = "embedder-exports"
RECORD = "export.json"
# An export whose vectors point elsewhere than the torch model's on the probe texts is a
# failed export, not a faster one (int8 keeps cosine >= 0.97 on MiniLM here).
MIN_COSINE = {"none": 0.9999, "int8": 0.95}
PROBES = (
    "How do I mount a disk image read-only?",
    "The configuration file is read once at start-up; send SIGHUP to reload it.",
    "Returns the number of bytes written, or -1 on error with errno set.",
    "Is there a way to list open files by process?",
    "Compression level 9 gives the smallest output at the cost of speed.",
    "a",
    "Environment variables override the defaults; the command line overrides both. " * 8,
)


def say(text: str) -> None:
    """One plain line on stderr (paths and brackets are not rich markup). The console is
    imported here: a search that never prints need not import rich."""
    from ragloop.core import stderr
    stderr.print(text, markup=False, highlight=False, soft_wrap=True)


def label(backend: str, quantize: str) -> str:
    """`ONNX int8`, `OpenVINO fp32`: for messages."""
    return f"{RUNTIME_NAMES[backend]} {'int8' if quantize == 'int8' else 'fp32'}"


def require(backend: str) -> None:
    """A one-line error naming the extra to install when the runtime is missing."""
    for module in EXTRAS[backend]:
        try:
            __import__(module)
        except ImportError:
            raise RagloopError(
                f"the embedder's {backend} backend needs the Python package {module!r}, "
                f"which is not installed; install it with `pip install 'ragloop[{backend}]'`, "
                f"or use -o embedder.backend=torch") from None


def _versions(backend: str) -> dict[str, str]:
    names = ["torch", "transformers", *EXTRAS[backend]]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "none"
    return found


def export_key(model_digest: str, backend: str, quantize: str) -> dict:
    """What an export depends on: a change to any of it makes a new export."""
    return {"recipe": RECIPE, "model": model_digest, "backend": backend,
            "quantize": quantize, "versions": _versions(backend)}


def export_folder(workspace, key: dict) -> Path:
    if workspace is None:
        raise RagloopError(f"the embedder's {key['backend']} backend keeps its export in a "
                           f"workspace; open one (or use -o embedder.backend=torch)")
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return workspace.models_dir / EXPORTS_DIR / f"{key['backend']}-{key['quantize']}-{digest}"


def read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_export(model, folder: Path, key: dict, why: str = "") -> dict:
    """The export's record, exporting into `folder` first when it holds none. A failed
    export is recorded too (`failed`: why), so later runs do not try again with the same
    libraries. Written atomically: an interrupted export leaves no folder. `why` ends the
    progress line (", so that ...")."""
    record = read_record(folder)
    if record is not None and record.get("key") == key:
        return record
    backend, quantize = key["backend"], key["quantize"]
    say(f"exporting the embedder to {label(backend, quantize)} (once{why}) ...")
    started = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(folder) as tmp:
        try:
            # The tracer's and NNCF's notes speak to model authors; the probe check below
            # is what tells whether the export is right.
            # (ONNX Runtime's quantizer logs to the root logger: quieted for the export only.)
            quiet_library_logs("nncf")
            root, level = logging.getLogger(), logging.getLogger().level
            root.setLevel(logging.ERROR)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    files, cosine = _export(model, tmp, backend, quantize)
            finally:
                root.setLevel(level)
            record = {"key": key, "files": files, "probe_min_cosine": round(cosine, 6),
                      "seconds": round(time.perf_counter() - started, 1)}
        except (KeyboardInterrupt, RagloopError):
            raise
        except Exception as exc:            # any library failure: fall back, say why
            for p in tmp.iterdir():
                p.unlink()
            record = {"key": key, "failed": short_error(exc, 200)}
        (tmp / RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
    if "failed" not in record:
        say(f"exported in {record['seconds']:.0f}s to {folder}")
    return record


def _probe_inputs(model, texts) -> dict:
    features = model.tokenize(list(texts))
    return {k: features[k] for k in INPUT_NAMES if k in features}


def _export(model, out: Path, backend: str, quantize: str) -> tuple[list[str], float]:
    """Write the runtime's files into `out`; (their names, the lowest cosine between the
    export's and torch's vectors on the probe texts)."""
    import numpy as np
    import torch
    reference = model.encode(list(PROBES), convert_to_numpy=True, normalize_embeddings=True)
    onnx_path = out / "model.onnx"
    _export_onnx(model, onnx_path)
    if backend == "onnx":
        files = [_onnx_finish(model, onnx_path, out, quantize)]
    else:
        files = _openvino_finish(model, onnx_path, out, quantize)
        onnx_path.unlink()
    run = runner(out, backend, files, threads=torch.get_num_threads())
    got = _encode_with(model, run, PROBES)
    cosine = float(np.min(np.sum(got * reference, axis=1)))
    if not cosine >= MIN_COSINE[quantize]:
        raise RuntimeError(f"the export's vectors differ from the model's (cosine "
                           f"{cosine:.4f} on a probe text)")
    return files, cosine


def _export_onnx(model, path: Path) -> None:
    """The transformer module to ONNX with dynamic batch and sequence axes. Eager attention
    exports as plain MatMul/Softmax, which ONNX Runtime's optimizer fuses into its Attention
    kernel; the SDPA path exports in a form it cannot fuse (1.2x slower here)."""
    import torch
    auto = model[0].auto_model
    before = getattr(auto.config, "_attn_implementation", None)
    _set_attention(auto, "eager")
    try:
        _trace(auto, model, path)
    finally:
        if before is not None and before != "eager":
            # The torch model may go on encoding (the torch backend's query-side export):
            # give it back the attention it had.
            _set_attention(auto, before)


def _set_attention(auto, name: str) -> None:
    setter = getattr(auto, "set_attn_implementation", None)
    if setter is not None:
        setter(name)
    else:
        auto.config._attn_implementation = name


def _trace(auto, model, path: Path) -> None:
    import torch
    inputs = _probe_inputs(model, ["an example", "a longer example of a text"])
    names = list(inputs)

    class Hidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(names, args))).last_hidden_state

    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    with torch.no_grad():
        torch.onnx.export(Hidden(auto).eval(), tuple(inputs.values()), str(path),
                          input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)


def _onnx_finish(model, path: Path, out: Path, quantize: str) -> str:
    """ONNX Runtime's transformer fusions, then (int8) dynamic quantization with the
    settings of optimum's AutoQuantizationConfig.avx2(is_static=False), which
    sentence-transformers' export_dynamic_quantized_onnx_model uses for "avx2", except
    signed int8 weights: on this AVX2 CPU (no VNNI) they run 1.3x faster than unsigned ones
    at similar accuracy. avx2 settings suit every x86-64 CPU of the last decade."""
    from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_model
    config = model[0].auto_model.config
    fused = out / "model_fused.onnx"
    if config.model_type in MODEL_TYPES:
        optimized = optimize_model(str(path), model_type=config.model_type,
                                   num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size)
        optimized.save_model_to_file(str(fused))
        path.unlink()
    else:
        path.rename(fused)
    if quantize == "none":
        return fused.name
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    target = out / "model_int8.onnx"
    quantize_dynamic(str(fused), str(target), per_channel=True, reduce_range=False,
                     weight_type=QuantType.QInt8,
                     extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                    "DefaultTensorType": onnx.TensorProto.FLOAT})
    fused.unlink()
    return target.name


def _openvino_finish(model, onnx_path: Path, out: Path, quantize: str) -> list[str]:
    """OpenVINO's converter on the ONNX export; int8 is NNCF's weight compression."""
    import openvino
    ov_model = openvino.convert_model(str(onnx_path))
    if quantize == "int8":
        import nncf
        ov_model = nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    xml = out / "openvino_model.xml"
    openvino.save_model(ov_model, str(xml), compress_to_fp16=False)
    return [xml.name, xml.with_suffix(".bin").name]


def runner(folder: Path, backend: str, files: list[str], threads: int):
    """A function from the tokenizer's int64 arrays (by input name) to the last hidden
    state, running on `threads` threads: as many as torch would use, so the backends
    compare like for like."""
    if backend == "onnx":
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(folder / files[0]), options,
                                       providers=["CPUExecutionProvider"])
        wanted = [i.name for i in session.get_inputs()]
        return lambda feeds: session.run(None, {n: feeds[n] for n in wanted})[0]
    import openvino
    compiled = openvino.Core().compile_model(
        str(folder / files[0]), "CPU", {"INFERENCE_NUM_THREADS": threads})
    wanted = [p.get_any_name() for p in compiled.inputs]
    return lambda feeds: compiled({n: feeds[n] for n in wanted})[0]


def _encode_with(model, run, texts):
    """sentence-transformers' encode with the transformer replaced by `run` for one call."""
    transformer = model[0]
    saved = transformer.model
    transformer.model = runtime_module(run, saved.config)
    try:
        return model.encode(list(texts), convert_to_numpy=True, normalize_embeddings=True)
    finally:
        transformer.model = saved


def runtime_module(run, config):
    """A torch module standing in for the transformer: sentence-transformers calls it with
    the tokenizer's tensors and reads `last_hidden_state`, as it does from optimum's
    ORTModelForFeatureExtraction under backend="onnx"."""
    import numpy as np
    import torch

    class RuntimeTransformer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = config

        def forward(self, **features):
            feeds = {n: features[n].cpu().numpy().astype(np.int64)
                     for n in INPUT_NAMES if features.get(n) is not None}
            return {"last_hidden_state": torch.from_numpy(np.asarray(run(feeds)))}

    return RuntimeTransformer()


def attach(model, folder: Path, backend: str, files: list[str]):
    """Run `model`'s transformer on the exported files from now on; torch's copy of the
    weights is dropped."""
    import torch
    run = runner(folder, backend, files, threads=torch.get_num_threads())
    transformer = model[0]
    transformer.model = runtime_module(run, transformer.model.config)
    return model
