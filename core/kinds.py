"""Base classes for every kind of component a plugin can register.

A component is a class with a ``name`` (unique within its kind), a one-line
``description`` and a ``Config`` dataclass of options (``-o key=value`` on the CLI). It is
built as ``cls(config, workspace=ws)`` (the workspace may be None outside a command, so
use it only for caches); heavy libraries are imported inside methods, never at module top,
because every CLI start imports every plugin module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Sequence


@dataclass
class NoOptions:
    """A component without options."""


class Component:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type] = NoOptions

    def __init__(self, config: Any = None, workspace: Any = None):
        self.config = config if config is not None else self.Config()
        self.workspace = workspace


# ---- documents and retrieval -------------------------------------------------------------

@dataclass
class Document:
    """The text of one file, as a loader read it."""

    path: str
    text: str
    metadata: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class SkipFile(Exception):
    """Raised by a loader for a file it cannot read; the message is the reason shown."""


class Loader(Component):
    """Reads files with the given extensions (lower-case, with the dot) into Documents."""

    extensions: ClassVar[tuple[str, ...]] = ()

    def load(self, path: Path) -> Document:
        raise NotImplementedError


@dataclass
class Chunk:
    """A passage of a document, with where it came from."""

    text: str
    heading: str = ""          # heading path, e.g. "Install > Linux"
    start_char: int = 0
    end_char: int = 0
    start_line: int = 1
    end_line: int = 1


class Chunker(Component):
    """Splits a Document into Chunks; `count_tokens` is the embedder's tokenizer."""

    def chunk(self, document: Document, count_tokens) -> list[Chunk]:
        raise NotImplementedError


class Embedder(Component):
    """Turns texts into L2-normalized float32 vectors."""

    @property
    def id(self) -> str:
        """Identifies the model; an index remembers it and refuses another."""
        raise NotImplementedError

    @property
    def dimension(self) -> int:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    def encode(self, texts: Sequence[str], progress=None):
        """An (n, dimension) float32 numpy array; `progress(n_done)` may be called."""
        raise NotImplementedError


class Store(Component):
    """Vectors keyed by 64-bit chunk ids, kept in files under `directory`."""

    def __init__(self, config: Any, directory: Path, dimension: int, workspace: Any = None):
        super().__init__(config, workspace)
        self.directory = Path(directory)
        self.dimension = dimension

    def add(self, ids: Sequence[int], vectors) -> None:
        raise NotImplementedError

    def remove(self, ids: Sequence[int]) -> None:
        raise NotImplementedError

    def search(self, vectors, k: int) -> tuple[Any, Any]:
        """(scores, ids), each of shape (n_queries, k); missing results have id -1."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def ids(self):
        """Every stored id (an int64 numpy array), to reconcile with the database."""
        raise NotImplementedError

    def save(self) -> str:
        """Write atomically; return a checksum of what was written."""
        raise NotImplementedError

    def file_checksum(self) -> str | None:
        """The checksum of what is on disk now (None when nothing is), same scheme as save()."""
        raise NotImplementedError


class Reranker(Component):
    """Reorders search hits (objects with .text and .score) for a query, best first."""

    def rerank(self, query: str, hits: list) -> list:
        raise NotImplementedError


# ---- generation and rating ---------------------------------------------------------------

class Generator(Component):
    """A chat language model. `messages` are [{"role": ..., "content": ...}]."""

    @property
    def model_id(self) -> str:
        raise NotImplementedError

    @property
    def context_length(self) -> int:
        """Tokens the model can attend to, prompt and answer together."""
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    def render(self, messages: list[dict]) -> str:
        """The exact prompt text the model sees (chat template applied), for the logs."""
        raise NotImplementedError

    def generate(self, messages: list[dict], *, max_new_tokens: int = 256,
                 temperature: float = 0.0, seed: int | None = None) -> Iterator[str]:
        """Yield the answer's text piece by piece as it is generated."""
        raise NotImplementedError


@dataclass
class Comparison:
    """Two candidate answers to one question, with the passages both were given."""

    question: str
    passages: list[str]
    answer_a: str
    answer_b: str


class Rater(Component):
    """Decides between two answers: returns 'a', 'b', 'tie', 'both-bad' or None (skip)."""

    def compare(self, item: Comparison) -> str | None:
        raise NotImplementedError


# ---- data, training and models -----------------------------------------------------------

@dataclass
class FilterResult:
    kept: list[dict]
    removed: list[tuple[dict, str]] = field(default_factory=list)   # (record, reason)


class Filter(Component):
    """Keeps, drops, rewrites or reorders records (documents or training rows, as dicts).

    `applies_to` names the record kinds it understands: "documents" (a "text" key),
    "pairs" ("prompt"/"chosen"/"rejected"), "kto", "sft".
    """

    applies_to: ClassVar[tuple[str, ...]] = ("documents",)

    def apply(self, records: Iterable[dict]) -> FilterResult:
        raise NotImplementedError


class TrainingMethod(Component):
    """Trains an adapter from a dataset of the shape `data_kind` ("pairs", "kto", "sft")."""

    data_kind: ClassVar[str] = "pairs"

    def train(self, job: Any) -> dict:
        """Run the training job; return its metrics."""
        raise NotImplementedError


class TrainingBackend(Component):
    """Runs a training method in one or more processes."""

    def run(self, method: TrainingMethod, job: Any) -> dict:
        raise NotImplementedError


class Compressor(Component):
    """Quantizes or prunes a model."""

    def compress(self, model: Any) -> Any:
        raise NotImplementedError


class Distiller(Component):
    """Trains a student model from a teacher."""

    def distill(self, job: Any) -> dict:
        raise NotImplementedError


class Evaluator(Component):
    """Computes metrics for a model, an adapter or an index."""

    def evaluate(self, context: Any) -> dict:
        raise NotImplementedError
