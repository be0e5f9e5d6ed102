"""Cross-encoder reranker (sentence-transformers CrossEncoder): off unless `--rerank` asks."""

from __future__ import annotations

from dataclasses import dataclass, field

from ragloop.core.errors import RagloopError
from ragloop.core.hookspecs import hookimpl
from ragloop.core.kinds import Reranker


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


@hookimpl
def register_rerankers(register):
    register(CrossEncoderReranker)
