"""Cross-encoder reranker (sentence-transformers CrossEncoder): off unless `--rerank` asks."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ragloop.core import RagloopError, Reranker, hookimpl


@dataclass
class CrossEncoderConfig:
    model: str = field(default="", metadata={
        "help": "Local path or hub id of a cross-encoder, e.g. cross-encoder/ms-marco-MiniLM-L6-v2."})
    batch_size: int = field(default=32, metadata={"help": "Pairs scored per batch."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Run code shipped with the model (only for models you trust)."})


class CrossEncoderReranker(Reranker):
    name = "cross-encoder"
    description = "Rescores each (query, passage) pair with a cross-encoder model."
    Config = CrossEncoderConfig

    def rerank(self, query: str, hits: list) -> list:
        if not self.config.model:
            raise RagloopError("the cross-encoder reranker needs a model; "
                               "add --rerank-option model=PATH_OR_HUB_ID")
        if not hits:
            return hits
        _check_architecture(self.config.model)
        from sentence_transformers import CrossEncoder
        try:
            model = CrossEncoder(self.config.model, device="cpu",
                                 trust_remote_code=self.config.trust_remote_code)
        except OSError as exc:
            raise RagloopError(f"cannot load cross-encoder {self.config.model!r} "
                               f"({str(exc).splitlines()[0]}); give a local model folder") from None
        scores = model.predict([(query, h.text) for h in hits], batch_size=self.config.batch_size)
        for hit, score in zip(hits, scores):
            hit.score = float(score)
        return sorted(hits, key=lambda h: -h.score)


def _model_file(model: str, name: str) -> dict | None:
    """A json file of the model: from its folder, or from the hub (cache first); None when
    it cannot be read (the load that follows then says why)."""
    folder = Path(model).expanduser()
    try:
        if folder.is_dir():
            path = folder / name
        else:
            from huggingface_hub import hf_hub_download
            path = Path(hf_hub_download(model, name))
        data = json.loads(path.read_text(encoding="utf-8"))
    except Exception:        # missing file, offline, no such repo: not a verdict on the model
        return None
    return data if isinstance(data, dict) else None


def _check_architecture(model: str) -> None:
    """A bi-encoder (embedder) loads as a CrossEncoder with a freshly initialized, random
    classification head, which then reorders the passages at random; refuse it up front.
    A cross-encoder is a sequence classifier, or a sentence-transformers CrossEncoder folder."""
    config = _model_file(model, "config.json")
    if config is None:
        return
    st = _model_file(model, "config_sentence_transformers.json") or {}
    architectures = config.get("architectures") or []
    if st.get("model_type") == "CrossEncoder" or any(
            str(a).endswith("ForSequenceClassification") for a in architectures):
        return
    kind = ("a sentence-transformers embedder (a bi-encoder)"
            if st.get("model_type") == "SentenceTransformer" else
            f"a {', '.join(map(str, architectures)) or config.get('model_type') or 'bare'} model")
    raise RagloopError(f"{model} is {kind}, not a cross-encoder (a sequence classifier), so "
                       f"it cannot score (query, passage) pairs; give --rerank-option model= a "
                       f"cross-encoder such as cross-encoder/ms-marco-MiniLM-L6-v2")


@hookimpl
def register_rerankers(register):
    register(CrossEncoderReranker)
