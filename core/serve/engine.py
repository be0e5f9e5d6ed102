"""The warm side of a server worker: the workspace, searcher and generator(s) loaded once, and
one thread that runs every search and generation.

One thread, because a worker's model answers one question at a time anyway (CPU threads or
the GPU are already all in use by one generation); requests wait in the thread's queue
instead of competing, and nothing crashes under load. Writes go to the writer thread
(core/serve/writer.py), so feedback never waits for a generation.

Adapters: a fixed `--adapter`, else the workspace's chosen one, read again on every request,
so `ragloop adapters use NAME` takes effect without a restart (the new adapter loads on the
next request; the one it replaces is dropped). `--ab NAME:SHARE` routes each user (a hash of
their rater id) to one adapter, the same one every time; `base` means no adapter. Under
`--ab`, `/v1/compare` puts two adapters of the set head to head on one prompt.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import random
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

from ragloop.core.errors import RagloopError
from ragloop.core.ids import new_id
from ragloop.core.pipeline.adapters import ADAPTER_SETTING, find_adapter
from ragloop.core.pipeline.ask import DEFAULT_GENERATOR, generate, load_generator, log_ask, prepare
from ragloop.core.pipeline.rating_questions import question_hash
from ragloop.core.pipeline.session import Ragloop
from ragloop.core.serve.feedback import candidate_row, hits_json, record_answers, record_search
from ragloop.core.serve.writer import Writer

BASE = "base"                   # in --ab: the model without an adapter
COMPARE_TEMPERATURE = 0.8       # as `ragloop rate --candidates sample` samples its two answers


@dataclass
class ServeSettings:
    home: str | None = None
    generator: str = DEFAULT_GENERATOR
    generator_options: tuple = ()
    adapter: str | None = None                  # None: the workspace's chosen one, live
    ab: tuple = ()                              # ((name, share), ...)
    compress: str | None = None
    cache_size: int = 256

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        data = json.loads(text)
        data["generator_options"] = tuple(data["generator_options"])
        data["ab"] = tuple(tuple(x) for x in data["ab"])
        return cls(**data)


def parse_ab(values) -> tuple:
    """`NAME:SHARE` strings as ((name, share), ...), shares summing to 1."""
    pairs = []
    for value in values:
        name, sep, share = value.rpartition(":")
        try:
            number = float(share)
        except ValueError:
            number = -1
        if not sep or not name or not number > 0:
            raise RagloopError(f"--ab {value!r} is not understood; write NAME:SHARE, e.g. "
                               f"--ab base:0.5 --ab my-adapter:0.5")
        pairs.append((name, number))
    if len(pairs) == 1:
        raise RagloopError("--ab needs two adapters or more (use --adapter for one)")
    total = sum(share for _, share in pairs)
    return tuple((name, share / total) for name, share in pairs)


def route(ab: tuple, user: str) -> str:
    """The adapter name `user` always gets under `ab`."""
    point = int(hashlib.sha256(user.encode()).hexdigest()[:12], 16) / 16**12
    for name, share in ab:
        point -= share
        if point < 0:
            return name
    return ab[-1][0]


@dataclass
class Served:
    """One answer as the API returns it, and what to record for it."""
    trace_id: str
    answer: str
    sources: list
    adapter: str | None
    cached: bool
    record: tuple = ()          # (candidate row or id, trace fields) for record_answers
    cache_key: tuple | None = None
    extra: dict = field(default_factory=dict)


def sources(passages) -> list[dict]:
    return [{"n": i, "chunk_id": h.chunk_id, "path": h.path, "heading": h.heading,
             "source": h.source, "text": h.text, "score": h.score}
            for i, h in enumerate(passages, 1)]


def settle_heap() -> None:
    """Move everything loaded so far out of the garbage collector's sight. torch, transformers
    and the models leave millions of long-lived objects; each full collection walked them all,
    a 150-400 ms stall of every request in flight (seen as the feedback latency's tail). A
    server process's loaded objects live as long as it does, so they need no collecting."""
    gc.collect()
    gc.freeze()


class Engine:
    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.writer = Writer(settings.home)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ragloop-generate")
        self._cache: OrderedDict = OrderedDict()
        self._cache_lock = threading.Lock()
        self.rl: Ragloop | None = None
        self.generators: dict = {}
        self.queued = 0                 # requests waiting for or in the generation thread
        self.cache_hits = 0
        self._random = random.SystemRandom()

    # ---- life ---------------------------------------------------------------------------

    def start(self) -> None:
        """Open everything and load the models; a RagloopError here means the server cannot
        serve (no index, a missing model or adapter)."""
        self.writer.start()
        self._pool.submit(self._open).result()

    def _open(self) -> None:
        self.rl = Ragloop(self.settings.home)
        self.rl.searcher.require_index()
        self.rl.search("warm up", k=1, mode="dense")       # loads the embedder now
        names = [name for name, _ in self.settings.ab] or [self.settings.adapter]
        for name in names:
            self._model(self._resolve(name)[0])

    def close(self) -> None:
        self._pool.submit(self._close).result()
        self._pool.shutdown()
        self.writer.close()

    def _close(self) -> None:
        if self.rl is not None:
            self.rl.close()
        self.generators.clear()

    async def run(self, fn, *args, **kwargs):
        """`fn(*args, **kwargs)` on the generation thread, awaited."""
        self.queued += 1
        try:
            return await asyncio.wrap_future(self._pool.submit(fn, *args, **kwargs))
        finally:
            self.queued -= 1

    async def write(self, fn, *args, **kwargs):
        """`fn(db, *args, **kwargs)` in the writer's next commit, awaited."""
        return await asyncio.wrap_future(self.writer.submit(fn, *args, **kwargs))

    # ---- adapters (generation thread) ---------------------------------------------------

    def pick(self, user: str) -> str | None:
        """The adapter name for this user's request: None means the workspace's chosen one."""
        if self.settings.ab:
            return route(self.settings.ab, user)
        return self.settings.adapter

    def _resolve(self, name: str | None) -> tuple[str | None, str | None]:
        """(adapter folder, name shown in responses)."""
        ws = self.rl.workspace
        if name == BASE and self.settings.ab:
            return None, BASE
        name = name or ws.get_setting(ADAPTER_SETTING)
        if not name:
            return None, None
        return find_adapter(ws, name)["path"], name

    def _model(self, path: str | None):
        model = self.generators.get(path)
        if model is None:
            s = self.settings
            model = load_generator(self.rl.workspace, s.generator, s.generator_options, path,
                                   s.compress)
            model.model_id          # a missing model folder is refused before loading
            model.check()
            model.context_length    # loads the weights
            # A fixed set of adapters stays; a replaced workspace choice is let go.
            pinned = {self._resolve(n)[0] for n, _ in self.settings.ab}
            if self.settings.adapter:
                pinned.add(self._resolve(self.settings.adapter)[0])
            for old in [p for p in self.generators if p not in pinned]:
                del self.generators[old]
            self.generators[path] = model
        return model

    # ---- requests (generation thread) ---------------------------------------------------

    def search(self, query: str, k: int, mode: str, user: str | None):
        hits = self.rl.search(query, k=k, mode=mode)
        return hits, self.writer.submit(record_search, query, hits, user)

    def answer(self, trace_id: str, question: str, *, k: int, mode: str, max_new_tokens: int,
               temperature: float, adapter: str | None, on_sources=None, on_text=None
               ) -> Served:
        searcher = self.rl.searcher
        searcher.require_index()
        if not question.strip():
            raise RagloopError("the question is empty")
        path, label = self._resolve(adapter)
        model = self._model(path)
        adapter_id = getattr(model, "adapter_id", None) or path
        key = None
        if temperature == 0:
            key = (question_hash(question), k, mode, max_new_tokens, self.settings.generator,
                   model.model_id, adapter_id, searcher.index.version)
            with self._cache_lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
            if hit is not None:
                self.cache_hits += 1
                text, srcs, candidate_id, hits = hit
                if on_sources:
                    on_sources(srcs)
                if on_text:
                    on_text(text)
                return Served(trace_id, text, srcs, label, True,
                              (candidate_id, {"adapter": label, "hits": hits, "cached": True}))
        answer = prepare(self.rl.workspace, question, model, k=k, mode=mode,
                         max_new_tokens=max_new_tokens, searcher=searcher)
        srcs = sources(answer.prompt.passages)
        if on_sources:
            on_sources(srcs)
        for piece in generate(answer, model, temperature=temperature):
            if on_text:
                on_text(piece)
        ask_id = log_ask(self.rl.workspace, answer, model, self.settings.generator, path,
                         searcher.index.version)
        row = candidate_row(answer, model, self.settings.generator, adapter_id,
                            searcher.index.version, {"ask_id": ask_id, "trace": trace_id})
        fields = {"adapter": label, "ask_id": ask_id, "hits": hits_json(answer.prompt.passages)}
        return Served(trace_id, answer.text, srcs, label, False, (row, fields), key)

    def compare(self, question: str, *, k: int, mode: str, max_new_tokens: int,
                adapter: str | None) -> dict:
        """Two sampled answers to one prompt, as `ragloop rate` makes a pair, shown in a
        random order that is recorded. Under `--ab`, a head-to-head: the two answers come
        from two different adapters of the set (a random pair), each recorded on its trace;
        otherwise both are samples of `adapter`."""
        searcher = self.rl.searcher
        searcher.require_index()
        names = [name for name, _ in self.settings.ab]
        pair = self._random.sample(names, 2) if len(names) > 1 else [adapter, adapter]
        models = []
        for name in pair:
            path, label = self._resolve(name)
            model = self._model(path)
            models.append((model, label, getattr(model, "adapter_id", None) or path))
        # One retrieval and one prompt for both: the pair is a preference on one input. The
        # adapters of an --ab set share a base model, so the prompt renders the same for each.
        base = prepare(self.rl.workspace, question, models[0][0], k=k, mode=mode,
                       max_new_tokens=max_new_tokens, searcher=searcher)
        seeds = self._random.sample(range(2**31), 2)
        pair_id, answers = new_id(), []
        for slot, seed, (model, label, adapter_id) in zip("ab", seeds, models):
            answer = replace(base, params=dict(base.params), timings=dict(base.timings))
            for _ in generate(answer, model, temperature=COMPARE_TEMPERATURE, seed=seed):
                pass
            row = candidate_row(answer, model, self.settings.generator, adapter_id,
                                searcher.index.version, {"pair": pair_id, "slot": slot})
            answers.append((row, {"adapter": label,
                                  "hits": hits_json(answer.prompt.passages)}))
        left = self._random.randrange(2)
        # A head-to-head stays blind: which adapter wrote which answer is on the traces only.
        same = models[0][1] == models[1][1]
        return {"answers": answers, "left": left, "sources": sources(base.prompt.passages),
                "adapter": models[0][1] if same else None, "head_to_head": not same}

    def remember(self, served: Served, candidate_id: str) -> None:
        """Cache a greedy answer once its candidate is stored (feedback on a cached answer
        then rates that same candidate)."""
        if served.cache_key is None or self.settings.cache_size <= 0:
            return
        with self._cache_lock:
            self._cache[served.cache_key] = (served.answer, served.sources, candidate_id,
                                             served.record[1]["hits"])
            while len(self._cache) > self.settings.cache_size:
                self._cache.popitem(last=False)


def record(db, question: str, served: list[Served], user, compare: tuple | None = None):
    """Writer job: the traces of `served` (and a comparison `(compare_id, left)`)."""
    answers = [(s.trace_id, *s.record) for s in served]
    return record_answers(db, question, answers, user=user, compare=compare)


