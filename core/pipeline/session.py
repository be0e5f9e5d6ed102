"""The Python API: a workspace opened once, whose embedder, vector index and generator stay
loaded across `search` and `ask` calls.

    from ragloop.core import Ragloop
    with Ragloop() as rl:                       # home: RAGLOOP_HOME, else the user data folder
        for hit in rl.search("how do I install it?", k=3):
            print(hit.source, hit.score)
        answer = rl.ask("How do I install it?")
        print(answer.text)

A command line call pays for loading the embedder (seconds) on every query; a `Ragloop`
pays once. `search` and `ask` run the same code as `ragloop search` and `ragloop ask`
(`Searcher`, `prepare`, `generate`, `log_ask`), so results, prompts, logged rows and errors
are the same. docs/python-api.md has a runnable example.
"""

from __future__ import annotations

from pathlib import Path

from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.ask import (
    DEFAULT_GENERATOR,
    Answer,
    generate,
    load_generator,
    log_ask,
    prepare,
    resolve_adapter,
)
from ragloop.core.pipeline.search import DENSE_WEIGHT, Hit, Searcher
from ragloop.core.pipeline.vector_index import INDEX_NAME, VectorIndex
from ragloop.core.quiet import quiet_library_logs
from ragloop.core.workspace import Workspace


def answer_sources(answer: Answer) -> list[dict]:
    """The passages an answer cites as [n], numbered as in its prompt."""
    return [{"n": i, "source": h.source, "heading": h.heading, "chunk_id": h.chunk_id,
             "score": h.score} for i, h in enumerate(answer.prompt.passages, 1)]


class Ragloop:
    """A workspace opened for many searches and asks; close it (or use `with`) when done.

    `home`: the workspace folder; None means what the command line uses (`RAGLOOP_HOME`, else
    the user data folder). `embedder_options`: `KEY=VALUE` strings over the index's recorded
    embedder options, as `ragloop search -o embedder.KEY=VALUE` (e.g. `"device=cpu"`).
    """

    def __init__(self, home: str | Path | None = None, *, embedder_options=()):
        quiet_library_logs()
        self.workspace = Workspace(home)
        self.embedder_options = [str(o) for o in embedder_options]
        self._searcher: Searcher | None = None
        self._generator = None
        self._generator_key = None
        self._closed = False

    # ---- what stays loaded --------------------------------------------------------------

    @property
    def searcher(self) -> Searcher:
        """The searcher over the current index. Another process may re-index the workspace
        meanwhile: a new index version gets a new vector index, keeping the loaded embedder
        when it is still the one asked for."""
        if self._closed:
            raise RagloopError("this Ragloop is closed; open a new one with Ragloop(home)")
        ws = self.workspace
        version = (ws.db["index_state"].get(INDEX_NAME).get("version") or 0
                   if ws.db["index_state"].count_where("name = ?", [INDEX_NAME]) else 0)
        old = self._searcher
        if old is None or (old._index is not None and old._index.version != version):
            index = VectorIndex(ws, embedder_options=self.embedder_options)
            if old is not None and old._index is not None:
                previous = old._index
                if (previous.embedder_name, previous.embedder_options) == \
                        (index.embedder_name, index.embedder_options):
                    index.embedder = previous.embedder
            self._searcher = Searcher(ws, index)
        return self._searcher

    @property
    def embedder(self):
        """The index's embedder plugin (its model loads on the first dense search)."""
        return self.searcher.index.embedder

    @property
    def generator(self):
        """The generator of the last `ask` (None before one); kept for the next."""
        return self._generator

    def _generator_for(self, name: str, options, adapter: str | None, compress: str | None):
        key = (name, tuple(options), adapter, compress)
        if self._generator is None or key != self._generator_key:
            model = load_generator(self.workspace, name, options, adapter, compress)
            model.model_id      # a missing model folder is refused before anything loads
            model.check()
            self._generator, self._generator_key = model, key
        return self._generator

    # ---- the API ------------------------------------------------------------------------

    def search(self, query: str, k: int = 5, *, mode: str = "hybrid", where=(),
               fusion: str = "weighted", weight: float = DENSE_WEIGHT, rerank: str | None = None,
               rerank_options=(), expand: str = "chunk") -> list[Hit]:
        """The `k` best passages for `query`, as `ragloop search` finds them. `mode`: hybrid,
        dense or bm25; `where`: `["path=GLOB"]`; `rerank`: a reranker plugin's name;
        `expand="section"`: the section around each matched chunk, one hit per section."""
        return self.searcher.search(query, k=k, mode=mode, where=list(where), fusion=fusion,
                                    weight=weight, rerank=rerank,
                                    rerank_options=list(rerank_options), expand=expand)

    def ask(self, question: str, k: int = 4, *, mode: str = "hybrid", expand: str = "chunk",
            generator: str = DEFAULT_GENERATOR, generator_options=(),
            adapter: str | None = None, compress: str | None = None,
            max_new_tokens: int = 256, temperature: float = 0.0, seed: int | None = None,
            on_text=None) -> Answer:
        """Answer `question` from the indexed passages, with citations, and log the ask as
        `ragloop ask` does (`answer.id` is the logged row; `answer_sources(answer)` lists the
        passages cited as [n]). `generator_options`: the generator's `KEY=VALUE` options
        (`ragloop ask -o`); `adapter`: a name or folder, default the workspace's chosen one;
        `on_text(piece)` is called as the answer streams. The generator stays loaded for the
        next ask with the same generator, options, adapter and compress."""
        searcher = self.searcher
        searcher.require_index()
        adapter_path = resolve_adapter(self.workspace, adapter)
        if temperature < 0:
            raise RagloopError("temperature must be 0 or more")
        model = self._generator_for(generator, [str(o) for o in generator_options],
                                    adapter_path, compress)
        answer = prepare(self.workspace, question, model, k=k, mode=mode,
                         max_new_tokens=max_new_tokens, searcher=searcher, expand=expand)
        for piece in generate(answer, model, temperature=temperature, seed=seed):
            if on_text is not None:
                on_text(piece)
        log_ask(self.workspace, answer, model, generator, adapter_path, searcher.index.version)
        return answer

    def close(self) -> None:
        """Drop the loaded models and close the database."""
        self._searcher = self._generator = self._generator_key = None
        self._closed = True
        self.workspace.close()

    def __enter__(self) -> Ragloop:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
