"""Answering a question: retrieve passages, build the prompt, generate, and log the ask.
`ask` uses this, and so do the rating and evaluation commands."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ragloop.core import registry
from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.core.ids import new_id
from ragloop.core.pipeline.adapters import (
    ADAPTER_SETTING,
    check_base,
    find_adapter,
    read_metadata,
    require_chat,
)
from ragloop.core.pipeline.prompt import RagPrompt, build_prompt
from ragloop.core.pipeline.search import Searcher
from ragloop.core.workspace import utcnow, write_transaction

DEFAULT_GENERATOR = "transformers"


def resolve_adapter(ws, name: str | None) -> str | None:
    """An adapter given by path, or by name in the workspace's adapters folder; with no name,
    the workspace default chosen by `ragloop adapters use`."""
    name = name or ws.get_setting(ADAPTER_SETTING)
    return find_adapter(ws, name)["path"] if name else None


def load_generator(ws, name: str = DEFAULT_GENERATOR, options=(), adapter: str | None = None,
                   compress: str | None = None):
    """The generator plugin `name`, configured (nothing is loaded yet); `compress` names a
    compressor that quantizes the model as it loads."""
    cls = registry.get_generator(name)
    overrides = {}
    if adapter:
        if "adapter" not in getattr(cls.Config, "__dataclass_fields__", {}):
            raise RagloopError(f"generator {name!r} does not take adapters")
        overrides["adapter"] = adapter
    if compress:
        registry.get_compressor(compress)      # an unknown name lists the valid ones, now
        if "compress" not in getattr(cls.Config, "__dataclass_fields__", {}):
            raise RagloopError(f"generator {name!r} does not take --compress")
        overrides["compress"] = compress
    generator = cls(build_config(cls.Config, options, name, **overrides), workspace=ws)
    # Also an adapter given as -o adapter=...: every way to answer with one passes here.
    named = None if adapter else getattr(getattr(generator, "config", None), "adapter", None)
    if adapter or named:
        meta = read_metadata(Path(adapter)) if adapter else find_adapter(ws, named)
        require_chat(meta, "used to generate answers")
        checkpoint = getattr(generator, "checkpoint", None)
        check_base(meta, generator.model_id, checkpoint() if checkpoint else None)
    return generator


@dataclass
class Answer:
    question: str
    prompt: RagPrompt
    text: str = ""
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    scores: list = field(default_factory=list)
    id: str | None = None


def prepare(ws, question: str, generator, *, k: int = 4, mode: str = "hybrid",
            max_new_tokens: int = 256, searcher: Searcher | None = None,
            expand: str = "chunk", prompt=None) -> Answer:
    """`prompt`: a prompt plugin (core.pipeline.prompt.load_prompt); None: the default."""
    if not question.strip():
        raise RagloopError("the question is empty")
    started = time.perf_counter()
    searcher = searcher or Searcher(ws)
    hits = searcher.search(question, k=k, mode=mode, expand=expand)
    retrieved = time.perf_counter()
    rag = build_prompt(question, hits, generator, max_new_tokens, prompt, searcher)
    params = {"k": k, "mode": mode, "max_new_tokens": max_new_tokens}
    if expand != "chunk":           # logs of asks without it stay as they were
        params["expand"] = expand
    params.update(rag.provenance)   # the prompt and its examples, unless the default
    answer = Answer(question, rag, params=params)
    answer.scores = [h.score for h in hits]
    answer.timings = {"retrieve_s": round(retrieved - started, 4),
                      "prompt_s": round(time.perf_counter() - retrieved, 4)}
    return answer


def generate(answer: Answer, generator, *, temperature: float = 0.0, seed: int | None = None):
    """Yield the answer's pieces as they come; `answer.text` holds the whole when done."""
    started = time.perf_counter()
    pieces = []
    for piece in generator.generate(answer.prompt.messages,
                                    max_new_tokens=answer.params["max_new_tokens"],
                                    temperature=temperature, seed=seed):
        pieces.append(piece)
        yield piece
    record_generation(answer, "".join(pieces), getattr(generator, "last_generation", None),
                      temperature=temperature, seed=seed,
                      seconds=round(time.perf_counter() - started, 4))


def record_generation(answer: Answer, text: str, record: dict | None, *, temperature: float,
                      seed: int | None, seconds: float) -> None:
    """Puts a generated text and how it was made (the sampling settings, the generator's
    record of the call, its time) on the answer, as its logged row and pair row show them."""
    answer.text = text
    answer.params.update(temperature=temperature, seed=seed)
    answer.params.update(record or {})
    answer.timings["generate_s"] = seconds


def log_ask(ws, answer: Answer, generator, generator_name: str, adapter: str | None,
            index_version: int) -> str:
    answer.id = new_id()
    with write_transaction(ws.db):
        ws.db["asks"].insert({
            "id": answer.id, "created_at": utcnow(), "question": answer.question,
            "mode": answer.params.get("mode"), "k": answer.params.get("k"),
            "chunk_ids_json": json.dumps([h.chunk_id for h in answer.prompt.passages]),
            "scores_json": json.dumps(answer.scores[:len(answer.prompt.passages)]),
            "prompt": answer.prompt.text, "answer": answer.text,
            "generator": generator_name, "model_id": generator.model_id, "adapter": adapter,
            "params_json": json.dumps(answer.params, default=str),
            "timings_json": json.dumps(answer.timings), "index_version": index_version,
            "notes_json": json.dumps(answer.prompt.notes),
        })
    return answer.id
