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

from ragloop.core.errors import RagloopError


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
        """An (n, dimension) float32 numpy array, rows in input order. After each batch,
        `progress(n)` is called with the number of texts just encoded (an increment)."""
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

    # Optional, with defaults: a store on a database server that several workspaces share
    # also keeps each chunk's text, so it answers full-text search and returns chunks that
    # another workspace indexed (the pgvector store does).
    holds_text = False

    def vectors(self, ids: Sequence[int]):
        """The stored vectors of `ids`, in that order (`ragloop store copy`)."""
        raise NotImplementedError

    def new_ids(self, n: int) -> list[int] | None:
        """`n` fresh chunk ids unique across everything the store holds; None (the default)
        lets the workspace database number its chunks."""
        return None

    def bind(self, embedder_id: str) -> None:
        """Refuse (or record) the embedder whose vectors the store holds; a shared store
        checks it here, a file in the workspace needs nothing."""

    def clear(self) -> None:
        """Drop this workspace's vectors before a rebuild (`index --repair`)."""

    @classmethod
    def recorded_options(cls, pairs: list[str]) -> list[str]:
        """The `key=value` options as the workspace may record them (secrets removed)."""
        return pairs

    def describe(self) -> dict:
        """What `ragloop store info` prints about the store beyond its vector count."""
        return {}

    def text_search(self, query: str, n: int, glob: str | None = None) -> list[tuple[int, float]]:
        """A holds_text store: BM25-ranked (chunk id, score), best first."""
        raise NotImplementedError

    def dense_search(self, vector, n: int, glob: str | None = None) -> list[tuple[int, float]]:
        """A holds_text store: nearest (chunk id, score) among chunks whose path matches."""
        raise NotImplementedError

    def chunk_rows(self, ids: Sequence[int]) -> dict[int, tuple]:
        """A holds_text store: id -> (path, heading, start_line, end_line, text)."""
        raise NotImplementedError

    def chunk_total(self) -> int:
        """A holds_text store: chunks held for every workspace that shares it."""
        raise NotImplementedError


class Reranker(Component):
    """Reorders search hits (objects with .text and .score) for a query, best first."""

    def rerank(self, query: str, hits: list) -> list:
        raise NotImplementedError


# ---- generation and rating ---------------------------------------------------------------

class Generator(Component):
    """A chat language model. `messages` are [{"role": ..., "content": ...}]."""

    # True for a generator whose generate_many keeps `batch_size` answers running and starts
    # the next as one ends: a call of several batches' worth then never waits on a batch's
    # longest answer, so callers with many questions hand it more per call
    # (core/pipeline/rating_batches.py).
    refills_batch = False

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

    def generate_many(self, conversations: list[list[dict]], *, max_new_tokens: int = 256,
                      temperature: float = 0.0, seed: int | None = None) -> list[str]:
        """Whole answers to several conversations; generators that batch override this. The
        default generates them one after another. Conversation i is sampled with seed
        `seed + i` when a seed is given, so equal conversations still give different samples
        and one seed reproduces the whole list; greedy answers do not depend on the seed."""
        return ["".join(self.generate(messages, max_new_tokens=max_new_tokens,
                                      temperature=temperature,
                                      seed=None if seed is None else seed + i))
                for i, messages in enumerate(conversations)]

    def checkpoint(self) -> str | None:
        """The folder or hub id the model's weights load from, for code that loads the
        model itself (training, merging, compression, distillation) and to check an
        adapter's recorded base; resolving it loads no weights. None, the default, for a
        generator without such weights (e.g. a model behind an API): those commands then
        refuse it."""
        return None

    def check(self) -> None:
        """Refuse with a RagloopError, before the model loads, what loading would refuse
        at once (e.g. an option that cannot work on this machine); `ask` calls it before
        its loading line. The default checks nothing."""

    def save_merged(self, adapter: dict, folder: Path) -> None:
        """Write the model with the adapter (its record, with `path`) merged in, as a
        standalone model folder, into the existing empty `folder` (`adapters merge`)."""
        raise RagloopError(f"generator {self.name!r} cannot merge adapters")


class Prompt(Component):
    """Turns a question, its retrieved passages and any worked examples into the chat
    messages a generator answers (`ask --prompt NAME`; `default` is the built-in one).

    Core calls `check()` once, before any model loads; then, per question,
    `examples(question, searcher)` once and `messages(question, passages, examples)` as
    often as fitting the context takes: it leaves out examples from the end first, then the
    lowest-ranked passages, then shortens the last passage. The question must appear in the
    last message. Notes appended to `self.notes` are shown to the user once and cleared.
    """

    def __init__(self, config: Any = None, workspace: Any = None):
        super().__init__(config, workspace)
        self.notes: list[str] = []

    def check(self) -> None:
        """Refuse with a RagloopError what cannot work (say, a template without the
        question), before anything is loaded or generated. The default checks nothing."""

    def examples(self, question: str, searcher: Any) -> list[dict]:
        """Worked examples to show before `question`, most useful first; each a dict that
        `messages` understands, whose "provenance" entry (a dict) is logged with the answer.
        `searcher` is the workspace's `Searcher` (`searcher.index.encode(texts)` embeds
        with the index's embedder). The default: none."""
        return []

    def messages(self, question: str, passages: list, examples: list[dict]) -> list[dict]:
        """The chat messages: `passages` are search hits (`.text`, `.path`, `.heading`),
        numbered from 1 as the answer cites them."""
        raise NotImplementedError


CHOICES = ("a", "b", "tie", "both-bad")


@dataclass
class Comparison:
    """Two candidate answers to one question, with the passages both were given.

    `answer_a` is the answer shown first (on the left), `answer_b` the second; which model
    or seed produced which is hidden from the rater (the order is random and recorded).
    """

    question: str
    passages: list[str]
    answer_a: str
    answer_b: str
    sources: list[str] = field(default_factory=list)   # "path:lines (heading)" per passage
    cut_off: tuple[bool, bool] = (False, False)         # each answer hit the token limit
    position: int = 1                  # this item's number in the session, for a counter
    total: int | None = None           # items planned this session; None when open-ended
    ask_scores: bool = False           # the user asked for a 1-5 score per answer
    ask_passages: bool = False         # ... and for a relevant yes/no per passage
    reference: str | None = None       # the question's reference answer, when it has one


@dataclass
class Verdict:
    """A rater's decision on a Comparison; a/b refer to answer_a/answer_b."""

    choice: str | None                        # one of CHOICES, or None to skip the item
    scores: tuple[int, int] | None = None     # 1-5 for answer_a and answer_b
    relevant: list[bool] | None = None        # one per passage, in order
    comment: str = ""


class StopRating(Exception):
    """Raised by a rater to end the session (the user quit, or input ended); the item in
    hand is not stored, everything rated before it is. The message says why."""


class Rater(Component):
    """Decides between two answers.

    `compare(item)` returns a Verdict, or just its choice: 'a', 'b', 'tie', 'both-bad', or
    None to skip. `version` goes into the default rater id of automatic raters, so ratings
    from a changed heuristic are told apart.
    """

    version: ClassVar[str] = ""
    # True for a rater that waits on a person: `rate` then generates the next item's answers
    # while this one is on screen, so the person does not wait for them.
    interactive: ClassVar[bool] = False
    # True for a rater that decides by the question's reference answer (`Comparison.
    # reference`): `rate` leaves questions without one out before generating, and counts them.
    needs_reference: ClassVar[bool] = False

    def default_rater_id(self) -> str:
        """Who is rating, when the user gives no --rater-id."""
        return f"{self.name}@{self.version}" if self.version else self.name

    def check(self) -> None:
        """Raise RagloopError if this rater cannot work here (say, no terminal); called
        before anything is generated or stored."""

    def compare(self, item: Comparison) -> "Verdict | str | None":
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


class RowFormat(Component):
    """A file format for training rows (pairs, kto or sft rows, as dicts): what `prefs export
    --format NAME` writes, and what `prefs import PATH` and `train --data PATH` read.

    `noun` names a path in this format for messages, e.g. "a JSONL file". A format that
    `writes_folder` writes a folder, so export needs --out; otherwise one file, which
    `dumps` gives as bytes for export to stdout.
    """

    noun: ClassVar[str] = ""
    writes_folder: ClassVar[bool] = False

    def recognizes(self, path: Path) -> bool:
        """Whether `path`, an existing regular file or folder, is in this format. A file no
        format recognizes is read by the default format, `jsonl`, which says what is wrong."""
        raise NotImplementedError

    def write(self, rows: list[dict], out: Path) -> None:
        """Write all or nothing (`atomic_write_bytes`, `atomic_folder`). Core has checked
        `out`: its folder exists; a file format's `out` is no folder; a folder format's is
        absent, empty, or a folder this format recognizes (which is replaced)."""
        raise NotImplementedError

    def dumps(self, rows: list[dict]) -> bytes:
        """The rows as the bytes of one file, for export without --out (to stdout)."""
        raise RagloopError(f"--format {self.name} cannot write to stdout; give a file with --out")

    def read(self, path: Path) -> tuple[list[tuple[int, Any]], str]:
        """(number, row) pairs, and the word for a number: "line" or "row". A row that cannot
        be parsed is a ValueError saying why, kept in its place so validation reports it
        with its number; a RagloopError refuses the whole path."""
        raise NotImplementedError


class TrainingMethod(Component):
    """Trains an adapter from a dataset of the shape `data_kind` ("pairs", "kto", "sft")."""

    data_kind: ClassVar[str] = "pairs"

    def train(self, job: Any) -> dict:
        """Run the training job; return its metrics."""
        raise NotImplementedError


class TrainingBackend(Component):
    """Runs a training method in one or more processes.

    Core calls, in this order:

    - `pick_device()` while preparing a job: the (device, precision) the method trains on,
      e.g. ("cuda", "bf16"), kept as `job.device`/`job.precision` and in the run record.
    - `configure(job, flags)` for `ragloop train`, with its launch flags as given:
      `{"processes": 1, "fsdp": False, "zero": None, "offload": False}` (`zero` is "2" or
      "3" when given). The backend validates them and keeps what `run` needs on
      `job.parallel`; the default takes none of them and refuses any but those values.
    - `check(job)`: refuse, with a RagloopError, what cannot run here (too many processes,
      no CUDA); runs before anything is written.
    - `run(method, job)`: train and return the method's metrics.
    """

    def pick_device(self) -> tuple[str, str]:
        """(device, precision) for the method; the default, without looking, is the CPU in
        fp32 (core itself looks at no GPU: a backend that can use one says so here)."""
        return "cpu", "fp32"

    def configure(self, job: Any, flags: dict) -> None:
        if (flags.get("processes", 1) > 1
                or any(flags.get(name) for name in ("fsdp", "zero", "offload"))):
            raise RagloopError("--processes, --fsdp, --zero and --offload need --backend "
                               "accelerate or deepspeed")

    def check(self, job: Any) -> None:
        """Raise RagloopError if the job cannot run with this backend here."""

    def run(self, method: TrainingMethod, job: Any) -> dict:
        raise NotImplementedError


class Compressor(Component):
    """Quantizes or prunes a model (a transformers causal LM, a `torch.nn.Module`).

    `kind` says what a saved folder holds. "prune": the changed weights themselves, which load
    as an ordinary model. "quantize": a recipe (`ragloop-compress.json`) beside the quantized
    weights when the class defines `quantization_config(model)` (a transformers config to
    save them with, in safetensors), else beside the full-precision weights (its `not_stored`
    says why); loading applies `compress` again, which skips weights already quantized.
    """

    kind: ClassVar[str] = "quantize"          # or "prune"
    # Tokens of sample text compress() wants, passed as `calibration=` (a LongTensor of
    # windows, batch x tokens) to weigh weights by the activations they see; 0 for none.
    calibration_tokens: ClassVar[int] = 0
    summary: str = ""                         # one line on what compress() did, set by it

    def check(self, device: str) -> None:
        """Raise RagloopError if this method cannot run on `device` ("cpu", "cuda", ...) here;
        called before any weights are loaded."""

    def load_kwargs(self, device: str) -> dict:
        """Extra `from_pretrained` arguments for methods that quantize while loading
        (bitsandbytes); {} for methods that change an already loaded model."""
        return {}

    def compress(self, model: Any, calibration: Any = None) -> Any:
        """Return the compressed model, which may be `model` changed in place."""
        raise NotImplementedError


class Distiller(Component):
    """Trains a student model from a teacher."""

    def distill(self, job: Any) -> dict:
        raise NotImplementedError


class Evaluator(Component):
    """Computes metrics for a model, an adapter or an index."""

    def evaluate(self, context: Any) -> dict:
        raise NotImplementedError
