"""Rating sessions: for each question, retrieve passages and generate two candidate answers
the way `ask` does, store them, show them to a rater plugin in a random (recorded) order,
and store its verdict the moment it is given.

Two writes per item, each one short transaction: the question and both candidates once
generated (so an interrupted session reuses them instead of generating again), then the
comparison with its scores, passage judgments and comment. A question counts as done for a
rater id once it has a comparison by that id, skips included; resuming is just running the
same command again.

With an interactive rater (a person), the next item's answers are generated in the
background while the current item is on screen (core/pipeline/rating_prefetch.py), so after
the first item the person hardly waits; each comparison records that wait (`wait_seconds`).

Sessions running at the same time coordinate through claims (core/pipeline/rating_claims.py): one
session generates a question's pair and the others wait for it and rate the same pair; with
`skip_rated`, a rater id never rates a question twice, nor two of its sessions at once.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path

from ragloop.core import registry
from ragloop.core.components import CHOICES, Comparison, Rater, Verdict
from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.core.ids import new_id
from ragloop.core.pipeline.ask import (
    DEFAULT_GENERATOR,
    generate,
    load_generator,
    prepare,
    resolve_adapter,
)
from ragloop.core.pipeline.prompt import DEFAULT_PROMPT, load_prompt, route_options
from ragloop.core.pipeline.rating_candidates import Ranking, parse_best_of
from ragloop.core.pipeline.rating_claims import PAIR, RATER, Claims, drop_claim
from ragloop.core.pipeline.rating_prefetch import Prefetch
from ragloop.core.pipeline.rating_questions import Question
from ragloop.core.pipeline.search import Searcher
from ragloop.core.workspace import Workspace, utcnow, write_transaction

SAMPLE = "sample"
BASE_VS_ADAPTER = "base-vs-adapter"
PROMPTS = "prompts"           # eval --baseline-prompt: one model, a: baseline_prompt, b: prompt
BEST_OF = "best-of"           # best-of-N: N samples ranked by the rater (rating_candidates.py)
MAX_COMMENT_CHARS = 2000
POLL_SECONDS = 0.2            # how often a session waiting for another's pair looks again


@dataclass
class Settings:
    candidates: str = SAMPLE           # sample | base-vs-adapter:NAME | best-of[-N]
    k: int = 4
    mode: str = "hybrid"
    temperature: float = 0.8           # for sample; base-vs-adapter is greedy
    max_new_tokens: int = 256
    scores: bool = False
    passages: bool = False
    generator: str = DEFAULT_GENERATOR
    generator_options: tuple[str, ...] = ()
    prompt: str = DEFAULT_PROMPT       # prompt plugin (--prompt); part of the pair-reuse key
    prompt_options: tuple[str, ...] = ()      # -o NAME.key=value for the prompts
    baseline_prompt: str | None = None        # PROMPTS[:ADAPTER]: answer a's prompt
    margin: float | None = None        # best-of: also record agreeing pairs this far apart

    def __post_init__(self):
        try:
            self.best_of = parse_best_of(self.candidates)
        except ValueError as exc:
            raise RagloopError(str(exc)) from None
        if self.best_of:
            self._check_best_of()
        elif self.margin is not None:
            raise RagloopError("--margin is for --candidates best-of-N; drop it or rank N answers")
        kind, _, name = self.candidates.partition(":")
        if not self.best_of and not (
                (kind == SAMPLE and not name) or (kind == BASE_VS_ADAPTER and name.strip())
                or (kind == PROMPTS and self.baseline_prompt)):
            raise RagloopError(f"--candidates {self.candidates!r} is not understood; use "
                               f"sample, base-vs-adapter:NAME or best-of-N")
        if kind == SAMPLE and self.temperature <= 0:
            raise RagloopError("--temperature must be above 0 for two different samples; "
                               "use --candidates base-vs-adapter:NAME to compare greedy answers")
        if self.k < 1:
            raise RagloopError("-k must be at least 1")
        if self.max_new_tokens < 1:
            raise RagloopError("--max-new-tokens must be at least 1")

    def _check_best_of(self) -> None:
        if self.temperature <= 0:
            raise RagloopError(f"--temperature {self.temperature:g} gives one greedy answer, not "
                               f"{self.best_of} different ones; --candidates {self.candidates} "
                               f"needs a temperature above 0")
        if self.scores or self.passages:
            raise RagloopError("--scores and --passages are not asked with --candidates best-of; "
                               "use --candidates sample for them")
        if self.margin is not None and not 0 < self.margin <= 1:
            raise RagloopError(f"--margin {self.margin:g} is not a score difference; give one "
                               f"above 0 and at most 1")

    @property
    def kind(self) -> str:
        return BEST_OF if self.best_of else self.candidates.partition(":")[0]


@dataclass
class Candidate:
    id: str
    text: str
    cut_off: bool


@dataclass
class Outcome:
    """What one rated item produced, in the rater's terms (a = shown left)."""
    comparison_id: str
    choice: str                        # a, b, tie, both-bad or skip
    seconds: float


def load_rater(name: str, workspace=None, options=()) -> Rater:
    """The rater plugin `name` with its options (`-o rater.key=value`, prefix removed)."""
    cls = registry.get_rater(name)
    return cls(build_config(cls.Config, options, name), workspace=workspace)


class Session:
    """`skip_rated`: `rate` returns None, rating nothing, for a question this rater id has
    rated already or that another live session of the same rater id is showing (`ragloop
    rate`); without it a question is rated whenever asked (eval's win rate decides itself)."""

    def __init__(self, ws, rater: Rater, rater_name: str, rater_id: str, settings: Settings,
                 skip_rated: bool = False, prefetch: bool = False):
        if not rater_id.strip():
            raise RagloopError("--rater-id is empty; give a name for who is rating")
        self.ws, self.db = ws, ws.db
        self.rater, self.rater_name, self.rater_id = rater, rater_name, rater_id.strip()
        self.settings, self.skip_rated = settings, skip_rated
        self.prefetch = prefetch           # generate the upcoming item while one is rated
        self._prefetch: Prefetch | None = None
        self.id = new_id()
        self.claims: Claims | None = None
        self.searcher = Searcher(ws)
        self.generators: list = []
        self.adapters: list[str | None] = []
        self.status = lambda text: nullcontext()   # the CLI shows a spinner or lines here
        self._random = random.SystemRandom()

    def open(self) -> None:
        """Everything that can fail for want of an index, model or adapter, before any write."""
        self.searcher.require_index()
        s = self.settings
        names = [s.baseline_prompt or s.prompt, s.prompt]
        routed, _ = route_options(s.prompt_options, names)
        prompt = load_prompt(self.ws, s.prompt, routed[s.prompt])
        self.prompts = [load_prompt(self.ws, names[0], routed[names[0]])
                        if s.kind == PROMPTS else prompt, prompt]
        if s.kind == PROMPTS:       # one model (with the adapter named, if any), greedy
            name = s.candidates.partition(":")[2].strip()
            adapter = resolve_adapter(self.ws, name) if name else None
            gen = load_generator(self.ws, s.generator, s.generator_options, adapter)
            self.generators, self.adapters = [gen, gen], [adapter, adapter]
        elif s.kind in (SAMPLE, BEST_OF):
            adapter = resolve_adapter(self.ws, None)
            gen = load_generator(self.ws, s.generator, s.generator_options, adapter)
            self.generators, self.adapters = [gen, gen], [adapter, adapter]
        else:
            adapter = resolve_adapter(self.ws, s.candidates.partition(":")[2].strip())
            self.generators = [load_generator(self.ws, s.generator, s.generator_options),
                               load_generator(self.ws, s.generator, s.generator_options, adapter)]
            self.adapters = [None, adapter]
        unique = {id(g): (g, a) for g, a in zip(self.generators, self.adapters)}.values()
        for gen, _ in unique:
            gen.model_id                    # a missing model folder fails before the status
        for gen, adapter in unique:
            # Loads the model, so a missing or broken one fails here, before any write.
            with self.status("Loading the model" + (f" with adapter {Path(adapter).name}"
                                                    if adapter else "")):
                context = gen.context_length
            if context <= s.max_new_tokens:
                raise RagloopError(f"--max-new-tokens {s.max_new_tokens} leaves no room for a "
                                   f"prompt in the model's context of {context} tokens; "
                                   f"lower it")
        self.adapter_ids = [getattr(g, "adapter_id", None) or a
                            for g, a in zip(self.generators, self.adapters)]
        self.index_version = self.searcher.index.version
        self.fingerprint = self._fingerprint()
        self.claims = Claims(self.ws, self.id)      # here: eval sets its own id before open

    def close(self) -> None:
        """Let go of this session's lock file (also done at exit; a killed session's lock
        is dropped by the operating system); a generation under way in the background stops."""
        if self._prefetch is not None:
            self._prefetch.cancel()
        if self.claims is not None:
            self.claims.close()

    def _fingerprint(self) -> str:
        """Candidates generated under the same settings are interchangeable: reused on resume
        and shared between raters, which is what makes their agreement measurable."""
        s = self.settings
        key = {"candidates": s.candidates, "generator": s.generator,
               "options": sorted(s.generator_options), "k": s.k, "mode": s.mode,
               "max_new_tokens": s.max_new_tokens,
               "temperature": s.temperature if s.kind in (SAMPLE, BEST_OF) else 0.0,
               "models": [g.model_id for g in self.generators], "adapters": self.adapter_ids,
               "index_version": self.index_version}
        if s.prompt != DEFAULT_PROMPT or s.kind == PROMPTS or s.prompt_options:
            key["prompts"] = [s.baseline_prompt or s.prompt, s.prompt, sorted(s.prompt_options)]
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    # ---- what is done ------------------------------------------------------------------

    def done_hashes(self) -> set[str]:
        return {r[0] for r in self.db.execute(
            "select distinct q.text_hash from comparisons c join questions q "
            "on q.id = c.question_id where c.rater_id = ?", [self.rater_id])}

    def is_done(self, question: Question) -> bool:
        return self.db.execute(
            "select 1 from comparisons c join questions q on q.id = c.question_id "
            "where q.text_hash = ? and c.rater_id = ? limit 1",
            [question.hash, self.rater_id]).fetchone() is not None

    # ---- one item ----------------------------------------------------------------------

    def rate(self, question: Question, position: int = 1, total: int | None = None,
             upcoming: Question | None = None) -> Outcome | None:
        """Generate (or reuse) two candidates, ask the rater, store the verdict. A
        StopRating or KeyboardInterrupt from the rater leaves this item unrated. None: with
        `skip_rated`, the question is rated already or being rated in another session.
        `upcoming`: the question rated next, whose answers a prefetching session generates
        while the rater decides on this one."""
        arrived = time.perf_counter()
        if self.skip_rated and not self._claim_for_rater(question):
            return None
        try:
            counter = f" ({position}/{total})" if total else f" ({position})"
            question_id, pair, hits = self._pair(question, counter)
            if self.settings.best_of:
                return self._rate_set(question, question_id, pair, hits, position, total,
                                      round(time.perf_counter() - arrived, 3))
            if self.prefetch and upcoming is not None:
                self._start_prefetch(upcoming)
            left = self._random.randrange(2)
            shown = [pair[left], pair[1 - left]]
            item = Comparison(
                question.text, [h.text for h in hits], shown[0].text, shown[1].text,
                sources=[h.source + (f" ({h.heading})" if h.heading else "") for h in hits],
                cut_off=(shown[0].cut_off, shown[1].cut_off), position=position, total=total,
                ask_scores=self.settings.scores, ask_passages=self.settings.passages,
                reference=question.answer)
            started = time.perf_counter()
            waited = round(started - arrived, 3)
            verdict = self._check(self.rater.compare(item), item)
            seconds = round(time.perf_counter() - started, 3)
            comparison_id = self._store(question, question_id, pair, shown, hits, verdict,
                                        seconds, waited)
        finally:
            self._let_go(question)
        return Outcome(comparison_id, verdict.choice or "skip", seconds)

    def pair(self, question: Question):
        """(question_id, [candidate a, candidate b], hits) for `question` without a verdict:
        the stored pair for these settings, else generated (with the same claims `rate`
        takes), and nothing left held afterwards. For evaluators that score the pair."""
        try:
            return self._pair(question, "")
        finally:
            self._let_go(question)

    # ---- claims ------------------------------------------------------------------------

    def _claim_for_rater(self, question: Question) -> bool:
        with write_transaction(self.db):
            if self.is_done(question):
                return False
            return self.claims.take(question.hash, RATER, self.rater_id) is None

    def _let_go(self, question: Question) -> None:
        """Release what this item still holds after a quit, Ctrl-C or error."""
        held = self.claims.held_for(question.hash) if self.claims else []
        if not held:
            return
        try:
            with write_transaction(self.db):
                for claim in held:
                    self.claims.release(*claim)
        except sqlite3.Error:
            pass     # the claim goes stale when this process ends; others then take it over

    def _pair(self, question: Question, counter: str):
        """The stored pair for these settings; else, when another live session is
        generating it, wait for that one; else claim it and generate it here."""
        self._await_prefetch(question, counter)
        with ExitStack() as waiting:
            told = False
            while True:
                with write_transaction(self.db):
                    found = self._stored_pair(question)
                    holder = None if found else self.claims.take(question.hash, PAIR,
                                                                 self.fingerprint)
                if found:
                    return found
                if holder is None:
                    break
                if not told:
                    waiting.enter_context(self.status(
                        f"Waiting for another session (pid {holder[1]}) to generate the "
                        f"answers{counter}"))
                    told = True
                self._wait_for(question, holder[0])
        n = self.settings.best_of or 2
        with self.status(f"Generating {'two' if n == 2 else n} answers{counter}"):
            return self._generate(question)

    # ---- prefetch ----------------------------------------------------------------------

    def _start_prefetch(self, question: Question) -> None:
        """Generate `question`'s pair in the background, under the same pair claim as in
        the foreground, unless it is stored, claimed by another session, or rated."""
        if self.settings.best_of or (self._prefetch is not None and self._prefetch.running):
            return
        if self.skip_rated and self.is_done(question):
            return
        with write_transaction(self.db):
            if self._stored_pair(question) is not None:
                return
            if self.claims.take(question.hash, PAIR, self.fingerprint) is not None:
                return                          # another session is generating it
        try:
            bases = self._prepare(question)     # retrieval here: FAISS stays on this thread
        except RagloopError:
            self._let_go(question)              # it fails again, in the open, when rated
            return
        self._prefetch = Prefetch(
            question.hash, lambda cancelled: self._generate_rows(bases, cancelled, True),
            lambda rows: self._store_in_thread(question, rows))

    def _store_in_thread(self, question: Question, rows: list[dict]) -> None:
        """The prefetch thread's own connection: a sqlite3 connection stays in its thread."""
        db = Workspace(self.ws.home).db
        try:
            self._store_rows(db, question, rows, release=False)
        finally:
            db.conn.close()

    def _await_prefetch(self, question: Question, counter: str) -> None:
        prefetch = self._prefetch
        if prefetch is None or prefetch.question_hash != question.hash:
            return
        self._prefetch = None
        try:
            if prefetch.running:
                with self.status(f"Generating two answers{counter}"):
                    prefetch.wait()
            else:
                prefetch.wait()
        finally:
            self.claims.held.discard((question.hash, PAIR, self.fingerprint))
        # Not stored (an error re-raised above aside): _pair generates it in the open.

    def _wait_for(self, question: Question, session: str) -> None:
        """Until `session` no longer holds the pair claim: it stored the pair, or died."""
        while True:
            time.sleep(POLL_SECONDS)
            row = self.claims.holder(question.hash, PAIR, self.fingerprint)
            if row is None or row[0] != session or not self.claims.alive(session):
                return

    def _check(self, result, item: Comparison) -> Verdict:
        who = f"rater {self.rater_name!r}"
        verdict = result if isinstance(result, Verdict) else Verdict(result)
        if verdict.choice is not None and verdict.choice not in CHOICES:
            raise RagloopError(f"{who} returned {verdict.choice!r}; expected one of "
                               f"{', '.join(CHOICES)} or None to skip")
        if verdict.scores is not None and (
                len(verdict.scores) != 2 or
                not all(isinstance(v, int) and 1 <= v <= 5 for v in verdict.scores)):
            raise RagloopError(f"{who} returned scores {verdict.scores!r}; expected two "
                               f"whole numbers from 1 to 5")
        if verdict.relevant is not None and len(verdict.relevant) != len(item.passages):
            raise RagloopError(f"{who} judged {len(verdict.relevant)} passages of "
                               f"{len(item.passages)}")
        if len(verdict.comment or "") > MAX_COMMENT_CHARS:
            raise RagloopError(f"{who} returned a comment over {MAX_COMMENT_CHARS} characters")
        return verdict

    # ---- candidates --------------------------------------------------------------------

    def _stored_pair(self, question: Question):
        """The stored pair (or best-of set: slots 0..N-1) of these settings, with its hits."""
        slots_wanted = ({str(i) for i in range(self.settings.best_of)} if self.settings.best_of
                        else {"a", "b"})
        rows = self.db.execute(
            "select c.id, c.text, c.question_id, c.chunk_ids_json, c.scores_json, c.params_json "
            "from candidates c join questions q on q.id = c.question_id "
            "where q.text_hash = ? and json_extract(c.params_json, '$.settings') = ? "
            "order by c.created_at, c.id", [question.hash, self.fingerprint]).fetchall()
        pairs: dict[str, dict] = {}
        for row in rows:
            params = json.loads(row[5])
            pairs.setdefault(params.get("pair"), {})[params.get("slot")] = (row, params)
        for slots in pairs.values():
            if set(slots) >= slots_wanted:
                order = sorted(slots_wanted)
                row = slots[order[0]][0]
                ranked = list(zip(json.loads(row[3]), json.loads(row[4])))
                hits = self.searcher.hits(ranked)
                if len(hits) != len(ranked):       # a chunk is gone: generate afresh
                    continue
                pair = [Candidate(r[0], r[1], p.get("stop") == "length")
                        for r, p in (slots[slot] for slot in sorted(order, key=_slot_key))]
                return row[2], pair, hits
        return None

    def _seeds(self) -> list[int | None]:
        if self.settings.kind != SAMPLE:
            return [None, None]
        first = self._random.randrange(2**31)
        second = first
        while second == first:
            second = self._random.randrange(2**31)
        return [first, second]

    def _prepare(self, question: Question) -> list:
        """Each slot's prepared answer (retrieval and prompt), on the calling thread: the
        vector store stays on the main one. Slots with the same prompt share one."""
        s = self.settings
        base = prepare(self.ws, question.text, self.generators[0], k=s.k, mode=s.mode,
                       max_new_tokens=s.max_new_tokens, searcher=self.searcher,
                       prompt=self.prompts[0])
        return [base if prompt is self.prompts[0] else
                prepare(self.ws, question.text, gen, k=s.k, mode=s.mode,
                        max_new_tokens=s.max_new_tokens, searcher=self.searcher, prompt=prompt)
                for gen, prompt in zip(self.generators, self.prompts)]

    def _generate(self, question: Question):
        bases = self._prepare(question)
        base = bases[0]
        rows = (self._generate_set(base) if self.settings.best_of
                else self._generate_rows(bases))
        question_id = self._store_rows(self.db, question, rows)
        pair = [Candidate(r["id"], r["text"], json.loads(r["params_json"]).get("stop") == "length")
                for r in rows]
        # The hits as the model saw them (the last one may have been shortened to fit).
        return question_id, pair, list(base.prompt.passages)

    def _generate_rows(self, bases, cancelled=None, prefetched: bool = False) -> list | None:
        """The pair's candidate rows for the prepared `bases`; None once `cancelled()`."""
        s = self.settings
        temperature = s.temperature if s.kind == SAMPLE else 0.0
        pair_id, rows = new_id(), []
        for slot, gen, adapter_id, seed, base in zip("ab", self.generators, self.adapter_ids,
                                                     self._seeds(), bases):
            answer = replace(base, params=dict(base.params), timings=dict(base.timings))
            pieces = generate(answer, gen, temperature=temperature, seed=seed)
            try:
                for _ in pieces:
                    if cancelled is not None and cancelled():
                        return None
            finally:
                pieces.close()                  # stops the model at its next token
            extra = {"prefetched": True} if prefetched else {}
            rows.append(self._candidate_row(answer, gen, adapter_id, pair_id, slot, extra))
        return rows

    def _candidate_row(self, answer, gen, adapter_id, pair_id: str, slot: str,
                       extra: dict) -> dict:
        """The `candidates` row of one generated answer of a pair."""
        passages = answer.prompt.passages
        params = {**answer.params, "candidates": self.settings.candidates,
                  "settings": self.fingerprint, "pair": pair_id, "slot": slot,
                  "notes": answer.prompt.notes, "timings": answer.timings, **extra}
        return {
            "id": new_id(), "text": answer.text, "prompt": gen.render(answer.prompt.messages),
            "messages_json": json.dumps(answer.prompt.messages),
            "chunk_ids_json": json.dumps([h.chunk_id for h in passages]),
            "scores_json": json.dumps(answer.scores[:len(passages)]),
            "index_version": self.index_version, "generator": self.settings.generator,
            "model_id": gen.model_id, "adapter": adapter_id,
            "params_json": json.dumps(params, default=str), "seed": answer.params.get("seed"),
            "created_at": utcnow(),
        }

    def _store_rows(self, db, question: Question, rows: list[dict], release: bool = True) -> str:
        """The question and its candidates, and the pair claim dropped, in one transaction
        on `db` (the prefetch thread's own connection drops the claim row itself; the main
        thread forgets it when it collects the prefetch)."""
        with write_transaction(db):
            question_id = self._question_id(question, db)
            for row in rows:
                db["candidates"].insert({**row, "question_id": question_id})
            if release:
                self.claims.release(question.hash, PAIR, self.fingerprint)
            else:
                drop_claim(db, self.id, question.hash, PAIR, self.fingerprint)
        return question_id

    # ---- best-of-N (core/pipeline/rating_candidates.py) -----------------------------------

    def _generate_set(self, base) -> list[dict]:
        """N samples of one prompt in one generate_many call, seeds seed..seed+N-1."""
        return self._generate_sets([base])[0]

    def _generate_sets(self, bases) -> list[list[dict]]:
        """The best-of-N set of each prepared prompt, all in one generate_many call (a
        generator that keeps a batch full gains from more than one set at a time); set q
        draws with seeds seed+qN .. seed+qN+N-1."""
        s, gen = self.settings, self.generators[0]
        n = s.best_of
        seed = self._random.randrange(2**31)
        started = time.perf_counter()
        texts = gen.generate_many([base.prompt.messages for base in bases for _ in range(n)],
                                  max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                  seed=seed)
        seconds = round(time.perf_counter() - started, 4)
        return [self._set_rows(base, texts[q * n:(q + 1) * n], seed + q * n, seconds,
                               len(bases))
                for q, base in enumerate(bases)]

    def _set_rows(self, base, texts, seed: int, seconds: float, sets: int) -> list[dict]:
        """The `candidates` rows of one best-of-N set; `seconds` is the time of the call
        that generated `sets` sets."""
        s, gen = self.settings, self.generators[0]
        group, rows = new_id(), []
        prompt_text = gen.render(base.prompt.messages)
        passages = base.prompt.passages
        for i, text in enumerate(texts):
            # generate_many gives text only: an answer as long as the cap was cut off.
            cut = gen.count_tokens(text) >= base.params["max_new_tokens"]
            params = {**base.params, "temperature": s.temperature, "seed": seed + i,
                      "candidates": s.candidates, "settings": self.fingerprint,
                      "pair": group, "slot": str(i), "best_of": s.best_of,
                      "stop": "length" if cut else "end", "notes": base.prompt.notes,
                      "timings": {**base.timings, "generate_all_s": seconds},
                      **({"batched": sets} if sets > 1 else {})}
            rows.append({
                "id": new_id(), "text": text, "prompt": prompt_text,
                "messages_json": json.dumps(base.prompt.messages),
                "chunk_ids_json": json.dumps([h.chunk_id for h in passages]),
                "scores_json": json.dumps(base.scores[:len(passages)]),
                "index_version": self.index_version, "generator": s.generator,
                "model_id": gen.model_id, "adapter": self.adapter_ids[0],
                "params_json": json.dumps(params, default=str), "seed": seed + i,
                "created_at": utcnow()})
        return rows

    def _rate_set(self, question, question_id, cands, hits, position, total,
                  waited) -> Outcome:
        """Round robin of the N answers through the rater; records best vs worst (and,
        with a margin, more pairs) with the ranking as provenance. A skip skips the set."""
        ranking, lefts = Ranking(len(cands)), {}
        started = time.perf_counter()
        for i, j in combinations(range(len(cands)), 2):
            x, y = (i, j) if self._random.randrange(2) else (j, i)
            item = Comparison(
                question.text, [h.text for h in hits], cands[x].text, cands[y].text,
                sources=[h.source + (f" ({h.heading})" if h.heading else "") for h in hits],
                cut_off=(cands[x].cut_off, cands[y].cut_off), position=position, total=total,
                reference=question.answer)
            verdict = self._check(self.rater.compare(item), item)
            seconds = round(time.perf_counter() - started, 3)
            if verdict.choice is None:
                shown = [cands[x], cands[y]]
                comparison_id = self._store(question, question_id, [cands[i], cands[j]], shown,
                                            hits, verdict, seconds, waited)
                return Outcome(comparison_id, "skip", seconds)
            choice = verdict.choice
            if choice in ("a", "b"):
                choice = "a" if (x if choice == "a" else y) == i else "b"
            ranking.verdicts[(i, j)] = choice
            lefts[(i, j)] = cands[x].id
        now, who = utcnow(), {"rater": self.rater_name, "rater_id": self.rater_id}
        recorded = []
        with write_transaction(self.db):
            self.claims.release(question.hash, RATER, self.rater_id)
            for first, second, choice in ranking.pairs(self.settings.margin):
                comparison_id = new_id()
                self.db["comparisons"].insert({
                    "id": comparison_id, "question_id": question_id,
                    "candidate_a": cands[first].id, "candidate_b": cands[second].id,
                    "left_candidate": lefts[(min(first, second), max(first, second))],
                    "choice": choice, **who, "session": self.id, "seconds": seconds,
                    "wait_seconds": waited, "created_at": now})
                recorded.append((comparison_id, choice))
            self.db["rating_rankings"].insert({
                "id": new_id(), "question_id": question_id, **who, "session": self.id,
                "n": len(cands), "candidate_ids_json": json.dumps([c.id for c in cands]),
                "scores_json": json.dumps(ranking.scores),
                "verdicts_json": json.dumps([[i, j, c] for (i, j), c in ranking.verdicts.items()]),
                "comparison_ids_json": json.dumps([c for c, _ in recorded]),
                "margin": self.settings.margin, "created_at": now})
        return Outcome(recorded[0][0], recorded[0][1], seconds)

    def _question_id(self, question: Question, db=None) -> str:
        db = db if db is not None else self.db
        db.execute(
            "insert or ignore into questions (id, text, text_hash, origin, origin_ref, "
            "created_at) values (?, ?, ?, ?, ?, ?)",
            [new_id(), question.text, question.hash, question.origin, question.origin_ref,
             utcnow()])
        return db.execute("select id from questions where text_hash = ?",
                               [question.hash]).fetchone()[0]

    # ---- the verdict -------------------------------------------------------------------

    def _store(self, question, question_id, pair, shown, hits, verdict: Verdict,
               seconds, waited: float | None = None) -> str:
        """The rater's a/b mean left/right; stored choices mean candidate_a/candidate_b,
        so a pair reads the same whichever way round it was shown."""
        choice = verdict.choice or "skip"
        if choice in ("a", "b"):
            winner = shown[0] if choice == "a" else shown[1]
            choice = "a" if winner.id == pair[0].id else "b"
        now, who = utcnow(), {"rater": self.rater_name, "rater_id": self.rater_id}
        comparison_id = new_id()
        with write_transaction(self.db):
            self.claims.release(question.hash, RATER, self.rater_id)
            self.db["comparisons"].insert({
                "id": comparison_id, "question_id": question_id, "candidate_a": pair[0].id,
                "candidate_b": pair[1].id, "left_candidate": shown[0].id, "choice": choice,
                **who, "session": self.id, "seconds": seconds, "wait_seconds": waited,
                "created_at": now})
            if verdict.scores and verdict.choice is not None:
                for candidate, score in zip(shown, verdict.scores):
                    self.db["scores"].insert({
                        "id": new_id(), "comparison_id": comparison_id,
                        "candidate_id": candidate.id, "score": score, **who, "created_at": now})
            for hit, relevant in zip(hits, verdict.relevant or []):
                self.db["passage_judgments"].insert({
                    "id": new_id(), "comparison_id": comparison_id, "question_id": question_id,
                    "chunk_id": hit.chunk_id, "chunk_text": hit.text, "relevant": int(relevant),
                    **who, "created_at": now})
            if (verdict.comment or "").strip():
                self.db["comments"].insert({
                    "id": new_id(), "comparison_id": comparison_id,
                    "text": verdict.comment.strip(), "rater_id": self.rater_id,
                    "created_at": now})
        return comparison_id


def _slot_key(slot: str):
    return (0, int(slot)) if slot.isdigit() else (1, slot)


__all__ = ["Session", "Settings", "Outcome", "load_rater", "write_transaction"]
