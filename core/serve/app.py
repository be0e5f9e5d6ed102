"""The FastAPI app of `ragloop serve` (docs/serve.md has the API). FastAPI, because it
checks request bodies against typed models and publishes them as /openapi.json, the schema
clients and the property tests work from; uvicorn runs it (and its workers).

`create_app(engine, auth)` builds the app around a started `Engine`; `worker_app()` is the
factory each of `--workers N` processes calls, starting its own engine. Every error answers
`{"error": "one line"}` with a 4xx status; a body over 64 KiB gets 413 before it is read.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ragloop.core.errors import RagloopError
from ragloop.core.ids import new_id
from ragloop.core.serve import page
from ragloop.core.serve.auth import Auth, user_header
from ragloop.core.serve.engine import (
    Engine,
    Served,
    ServeSettings,
    record,
    settle_heap,
    sources,
)
from ragloop.core.serve.errors import ServeError
from ragloop.core.serve.feedback import apply, record_answers
from ragloop.core.serve.metrics import Metrics
from ragloop.core.workspace import Workspace
from ragloop.core.serve.schemas import (
    AskRequest,
    ChatRequest,
    CompareRequest,
    FeedbackRequest,
    Mode,
)

MAX_BODY = 64 * 1024
SETTINGS_ENV = "RAGLOOP_SERVE_SETTINGS"      # how `--workers N` hands settings to each worker
TOKEN_ENV = "RAGLOOP_SERVE_TOKEN"
CORS_ENV = "RAGLOOP_SERVE_CORS"
log = logging.getLogger("ragloop.serve")


class ErrorBody(BaseModel):
    """Every refusal: one line saying what is wrong and how to fix it."""
    error: str


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


class _TooLarge(Exception):
    pass


class Guard:
    """Outermost ASGI layer: refuses bodies over MAX_BODY with 413 (by Content-Length, or
    while reading one without it) and counts every request and its latency by route."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        received = 0

        async def receiving():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY:
                    raise _TooLarge
            return message

        length = dict(scope["headers"]).get(b"content-length", b"0")
        try:
            if not length.isdigit() or int(length) > MAX_BODY:
                raise _TooLarge
            await self.app(scope, receiving, sending)
        except _TooLarge:
            await _error(413, f"the request body is over {MAX_BODY // 1024} KiB")(
                scope, receive, sending)
        finally:
            route = scope.get("route")
            self.metrics.observe(scope["method"], getattr(route, "path", "unmatched"),
                                 status[0], time.perf_counter() - started)


def _message(exc: Exception) -> str:
    """What a stream's error event says: the one line of a RagloopError; else logged here."""
    if isinstance(exc, RagloopError):
        return exc.message
    log.error("generation failed", exc_info=exc)
    return f"internal error ({type(exc).__name__}); see the server's log"


def _sse(data) -> str:
    return f"data: {json.dumps(data)}\n\n"


def create_app(engine: Engine, auth: Auth, *, cors=(), start: bool = False) -> FastAPI:
    """The app around `engine`; `start`: start (and close) the engine with the app, as a
    worker does; otherwise the caller started it, so a failure was reported before."""
    metrics = Metrics()
    background: set = set()     # answers still being recorded after their client left

    @asynccontextmanager
    async def lifespan(app):
        if start:
            await asyncio.get_running_loop().run_in_executor(None, engine.start)
            settle_heap()
        try:
            yield
        finally:
            await asyncio.gather(*background, return_exceptions=True)
            await asyncio.get_running_loop().run_in_executor(None, engine.close)

    app = FastAPI(title="ragloop", summary="Answers with citations from your documents, "
                  "and feedback that trains the model", lifespan=lifespan,
                  responses={status: {"model": ErrorBody} for status in (400, 401, 404, 413, 422)})

    # ---- errors -------------------------------------------------------------------------

    @app.exception_handler(ServeError)
    async def serve_error(request, exc: ServeError):
        return _error(exc.status, exc.message)

    @app.exception_handler(RagloopError)
    async def ragloop_error(request, exc: RagloopError):
        return _error(400, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return _error(400, "the body is not valid JSON")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "the body"
        return _error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return _error(exc.status_code, exc.detail)

    @app.exception_handler(Exception)
    async def crash(request, exc: Exception):
        log.exception("request failed")
        return _error(500, f"internal error ({type(exc).__name__}); see the server's log")

    # ---- who is asking ------------------------------------------------------------------

    def who(request: Request) -> tuple[str, str]:
        """(rater id for feedback, key the A/B routing sticks to)."""
        headers = request.headers
        rater = auth.rater(headers.get("authorization"), headers.get("x-user"))
        if auth.enabled:
            return rater, rater
        client = request.client.host if request.client else "local"
        return rater, user_header(headers.get("x-user")) or client

    async def store(question: str, served: Served, user: str) -> None:
        ids = await engine.write(record, question, [served], user)
        if not served.cached:
            engine.remember(served, ids[0])

    async def answer(question, request, *, k, mode, max_new_tokens, temperature, on_event=None):
        """Run one answer on the generation thread; with `on_event`, return at once with the
        job and the first event (sources) once it is there."""
        rater, key = who(request)
        trace_id = new_id()
        kwargs = dict(k=k, mode=mode, max_new_tokens=max_new_tokens, temperature=temperature,
                      adapter=engine.pick(key))
        if on_event is None:
            served = await engine.run(engine.answer, trace_id, question, **kwargs)
            await store(question, served, rater)
            return served
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def put(kind):
            return lambda value: loop.call_soon_threadsafe(events.put_nowait, (kind, value))

        async def job():
            try:
                served = await engine.run(engine.answer, trace_id, question, **kwargs,
                                          on_sources=put("sources"), on_text=put("delta"))
                await store(question, served, rater)
                return served
            finally:
                events.put_nowait(("end", None))

        task = asyncio.ensure_future(job())
        background.add(task)
        task.add_done_callback(background.discard)
        first = await events.get()
        if first[0] == "end":
            await task          # raises the error, answered as JSON
        return trace_id, task, first[1], events

    # ---- the API ------------------------------------------------------------------------

    @app.post("/v1/ask", summary="Answer a question, with its sources and a trace id")
    async def ask(body: AskRequest, request: Request):
        settings = dict(k=body.k, mode=body.mode, max_new_tokens=body.max_new_tokens,
                        temperature=body.temperature)
        if not body.stream:
            served = await answer(body.question, request, **settings)
            return {"trace_id": served.trace_id, "answer": served.answer,
                    "sources": served.sources, "adapter": served.adapter,
                    "cached": served.cached}
        trace_id, task, first, events = await answer(body.question, request, **settings,
                                                     on_event=True)

        async def stream():
            yield _sse({"sources": first, "trace_id": trace_id})
            while (event := await events.get())[0] != "end":
                yield _sse({"delta": event[1]})
            try:
                served = await task
            except Exception as exc:
                yield _sse({"error": _message(exc)})
                return
            yield _sse({"done": True, "answer": served.answer, "cached": served.cached,
                        "adapter": served.adapter, "trace_id": trace_id})

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/v1/search", summary="The passages a question retrieves, with a trace id")
    async def search(request: Request, q: str = Query(min_length=1, max_length=4000),
                     k: int = Query(5, ge=1, le=50), mode: Mode = "hybrid"):
        rater, _ = who(request)
        hits, recorded = await engine.run(engine.search, q, k, mode, rater)
        trace_id = await asyncio.wrap_future(recorded)
        return {"trace_id": trace_id, "hits": sources(hits)}

    @app.post("/v1/compare", summary="Two answers, blind and in random order, for a verdict")
    async def compare(body: CompareRequest, request: Request):
        rater, key = who(request)
        made = await engine.run(engine.compare, body.question, k=body.k, mode=body.mode,
                                max_new_tokens=body.max_new_tokens, adapter=engine.pick(key))
        trace_ids, compare_id = [new_id(), new_id()], new_id()
        answers = [(t, row, fields) for t, (row, fields) in zip(trace_ids, made["answers"])]
        await engine.write(record_answers, body.question, answers, user=rater,
                           compare=(compare_id, made["left"]))
        shown = [made["left"], 1 - made["left"]]
        a, b = ({"trace_id": trace_ids[i], "answer": made["answers"][i][0]["text"]}
                for i in shown)
        return {"compare_id": compare_id, "a": a, "b": b, "sources": made["sources"],
                "adapter": made["adapter"], "head_to_head": made["head_to_head"]}

    @app.post("/v1/feedback", summary="Thumbs, a score, a correction, passages, a comment; "
              "or a verdict on a comparison")
    async def feedback(body: FeedbackRequest, request: Request):
        rater, _ = who(request)
        feedback_id = await engine.write(apply, body.model_dump(), rater)
        return {"ok": True, "feedback_id": feedback_id}

    @app.post("/v1/chat/completions", summary="OpenAI-compatible chat, answered from your "
              "documents; `ragloop` in the response has the trace id and sources")
    async def chat(body: ChatRequest, request: Request):
        question = body.question()
        if question is None:
            raise ServeError("no user message with text; the last user message is the "
                             "question")
        settings = dict(k=body.k, mode=body.mode,
                        max_new_tokens=body.max_completion_tokens or body.max_tokens or 256,
                        temperature=body.temperature or 0.0)
        created = int(time.time())

        def chunk(trace_id, model, delta, finish=None, extra=None):
            return {"id": f"chatcmpl-{trace_id}", "object": "chat.completion.chunk",
                    "created": created, "model": model, **(extra or {}),
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        if not body.stream:
            served = await answer(question, request, **settings)
            return {"id": f"chatcmpl-{served.trace_id}", "object": "chat.completion",
                    "created": created, "model": body.model or served.adapter or "ragloop",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": served.answer}}],
                    "ragloop": {"trace_id": served.trace_id, "sources": served.sources,
                                "adapter": served.adapter, "cached": served.cached}}
        trace_id, task, first, events = await answer(question, request, **settings,
                                                     on_event=True)
        model = body.model or "ragloop"

        async def stream():
            yield _sse(chunk(trace_id, model, {"role": "assistant", "content": ""}, extra={
                "ragloop": {"trace_id": trace_id, "sources": first}}))
            while (event := await events.get())[0] != "end":
                yield _sse(chunk(trace_id, model, {"content": event[1]}))
            try:
                served = await task
            except Exception as exc:
                yield _sse({"error": {"message": _message(exc)}})
                return
            yield _sse(chunk(trace_id, model, {}, "stop", extra={
                "ragloop": {"trace_id": trace_id, "adapter": served.adapter,
                            "cached": served.cached}}))
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    # ---- operations ---------------------------------------------------------------------

    @app.get("/healthz", summary="Up, with how many requests wait for the model")
    async def healthz():
        return {"ok": True, "queued": engine.queued}

    @app.get("/metrics", response_class=PlainTextResponse,
             summary="Request counts and latencies (Prometheus text format)")
    async def prometheus():
        return PlainTextResponse(
            metrics.render({"queued": engine.queued, "cache_hits_total": engine.cache_hits,
                            # what the worker moved out of the collector after loading
                            "gc_frozen_objects": gc.get_freeze_count()}),
            media_type="text/plain; version=0.0.4")

    page.mount(app)
    if cors:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-User"])
    app.add_middleware(Guard, metrics=metrics)
    return app


def worker_app() -> FastAPI:
    """The app of one of `--workers N` processes (uvicorn calls this in each)."""
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    engine = Engine(settings)
    auth = Auth(Workspace(settings.home).db_path, os.environ.get(TOKEN_ENV) or None)
    cors = [o for o in os.environ.get(CORS_ENV, "").split("\n") if o]
    return create_app(engine, auth, cors=cors, start=True)
