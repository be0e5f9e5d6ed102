"""`ragloop serve`'s HTTP API against a real uvicorn server on a free local port (a thread of
this process), with the tiny embedder and generator: answers, streaming, search, feedback of
each kind landing in the rating tables and coming out of `prefs export` as the right rows,
comparisons, bad input answered 4xx with nothing written, metrics."""

import json
import sqlite3

import httpx
import pytest
from cli_helpers import emb, run
from tiny_models import tiny_causal_lm

from ragloop.core.serve.engine import ServeSettings
from ragloop.core.serve.server import Serving

PASSAGE = "The zebrafish tool reads its settings from zebra.toml in the project folder. "
TABLES = ("questions", "candidates", "comparisons", "scores", "passage_judgments", "comments",
          "serve_traces", "serve_feedback", "asks")


def make_workspace(home, docs):
    docs.mkdir()
    for i in range(5):
        (docs / f"doc{i}.md").write_text(f"# Part {i}\n\n{PASSAGE * (i + 1)}"
                                         f"Only part {i} mentions gadget{i}.\n")
    run("--home", home, "index", docs, *emb())


def settings(home, **kw):
    return ServeSettings(home=str(home), generator_options=(f"model={tiny_causal_lm()}",), **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    make_workspace(root / "home", root / "docs")
    with Serving(settings(root / "home")) as s:
        s.home = root / "home"
        s.client = httpx.Client(base_url=s.url, timeout=120)
        yield s
        s.client.close()


def counts(home) -> dict:
    db = sqlite3.connect(home / "ragloop.db")
    try:
        return {t: db.execute(f"select count(*) from {t}").fetchone()[0] for t in TABLES}
    finally:
        db.close()


def ask(server, question, **kw):
    r = server.client.post("/v1/ask", json={"question": question, "max_new_tokens": 8, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def feedback(server, **body):
    r = server.client.post("/v1/feedback", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True
    return r.json()["feedback_id"]


def export(home, kind):
    out = run("--home", home, "prefs", "export", "--kind", kind).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def sse(response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")
            and line != "data: [DONE]"]


# ---- answers ---------------------------------------------------------------------------

def test_ask_answers_with_sources_logs_it_and_caches_a_repeat(server):
    before = counts(server.home)
    body = ask(server, "where does zebrafish read its settings?", k=3)
    assert set(body) >= {"trace_id", "answer", "sources", "adapter", "cached"}
    assert body["cached"] is False and body["adapter"] is None and body["answer"]
    assert [s["n"] for s in body["sources"]] == [1, 2, 3]
    assert all({"chunk_id", "path", "text", "score"} <= set(s) for s in body["sources"])
    after = counts(server.home)
    assert (after["asks"], after["candidates"], after["serve_traces"]) == \
        (before["asks"] + 1, before["candidates"] + 1, before["serve_traces"] + 1)
    again = ask(server, "where does  zebrafish read its settings?", k=3)
    assert again["cached"] is True and again["answer"] == body["answer"]
    assert again["trace_id"] != body["trace_id"]
    assert counts(server.home)["candidates"] == after["candidates"]    # the same answer
    other = ask(server, "where does zebrafish read its settings?", k=2)   # other settings
    assert other["cached"] is False


def test_ask_streams_sources_then_pieces_then_done(server):
    with server.client.stream("POST", "/v1/ask", json={
            "question": "which part mentions gadget3?", "max_new_tokens": 12,
            "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse(r)
    first, deltas, done = events[0], events[1:-1], events[-1]
    assert first["trace_id"] and [s["n"] for s in first["sources"]] == [1, 2, 3, 4]
    assert deltas and all(set(e) == {"delta"} for e in deltas)
    assert done["done"] is True and done["cached"] is False
    assert "".join(e["delta"] for e in deltas) == done["answer"]
    feedback(server, trace_id=first["trace_id"], thumbs="up")     # the trace was stored


def test_search_gives_hits_and_a_trace_for_passage_feedback(server):
    r = server.client.get("/v1/search", params={"q": "zebrafish gadget2", "k": 3,
                                                "mode": "bm25"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [h["n"] for h in body["hits"]] == [1, 2, 3] and "gadget2" in body["hits"][0]["text"]
    before = counts(server.home)
    feedback(server, trace_id=body["trace_id"], passages={"1": True, "3": False},
             comment="first one is right")
    after = counts(server.home)
    assert after["passage_judgments"] == before["passage_judgments"] + 2
    assert after["serve_feedback"] == before["serve_feedback"] + 1
    db = sqlite3.connect(server.home / "ragloop.db")
    rows = db.execute("select chunk_id, relevant, rater, rater_id from passage_judgments "
                      "order by rowid desc limit 2").fetchall()
    assert {r[1] for r in rows} == {0, 1} and {r[2:] for r in rows} == {("serve", "anonymous")}
    assert body["hits"][0]["chunk_id"] in {r[0] for r in rows if r[1] == 1}


def test_chat_completions_is_openai_shaped_plain_and_streamed(server):
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "what is gadget1?"}]
    r = server.client.post("/v1/chat/completions",
                           json={"model": "x", "messages": messages, "max_tokens": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "x"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    assert body["ragloop"]["trace_id"] and body["ragloop"]["sources"]
    with server.client.stream("POST", "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": [{"type": "text", "text": "gadget4?"}]}],
            "max_tokens": 8, "stream": True, "temperature": 0.5}) as r:
        lines = [x for x in r.iter_lines() if x.startswith("data: ")]
        events = [json.loads(x[6:]) for x in lines[:-1]]
    assert lines[-1] == "data: [DONE]"
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert events[0]["ragloop"]["sources"] and events[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    feedback(server, trace_id=events[0]["ragloop"]["trace_id"], score=2)
    db = sqlite3.connect(server.home / "ragloop.db")
    stored = db.execute("select c.text from serve_traces t join candidates c on "
                        "c.id = t.candidate_id where t.id = ?",
                        [events[0]["ragloop"]["trace_id"]]).fetchone()[0]
    assert stored == text


# ---- feedback into the preference store ----------------------------------------------

def test_thumbs_become_kto_rows_and_a_correction_a_pair(server):
    up = ask(server, "what does part 0 mention?")
    down = ask(server, "what does part 1 mention?")
    fixed = ask(server, "what does part 2 mention?")
    feedback(server, trace_id=up["trace_id"], thumbs="up")
    feedback(server, trace_id=down["trace_id"], thumbs="down")
    feedback(server, trace_id=fixed["trace_id"], correction="Part 2 mentions gadget2 [1].",
             comment="the model rambled", passages={"1": True})
    kto = {r["question"]: r for r in export(server.home, "kto")}
    assert kto["what does part 0 mention?"]["label"] is True
    assert kto["what does part 0 mention?"]["completion"] == up["answer"]
    assert kto["what does part 1 mention?"]["label"] is False
    assert all(kto[q]["rater_id"] == "anonymous" for q in kto)
    stats = json.loads(run("--home", server.home, "prefs", "stats", "--json").stdout)
    served = {a["adapter"]: a for a in stats["served"]}[None]
    assert 1 <= served["up"] < served["thumbs"]
    low, high = served["interval"]
    assert low < served["up_rate"] < high
    assert "thumbs up (" in run("--home", server.home, "prefs", "stats").stdout
    pairs = [p for p in export(server.home, "pairs")
             if p["question"] == "what does part 2 mention?"]
    assert len(pairs) == 1
    assert pairs[0]["chosen"] == "Part 2 mentions gadget2 [1]."
    assert pairs[0]["rejected"] == fixed["answer"]
    # The prompt is the one the model saw, with the served answer's passages.
    assert fixed["sources"][0]["text"] in pairs[0]["prompt"]
    db = sqlite3.connect(server.home / "ragloop.db")
    comment = db.execute("select text from comments where comparison_id = ?",
                         [pairs[0]["comparison_id"]]).fetchone()
    assert comment == ("the model rambled",)


def test_compare_verdict_becomes_a_pair_oriented_as_shown(server):
    shown = server.client.post("/v1/compare", json={"question": "tell me about gadget3",
                                                    "max_new_tokens": 8})
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["a"]["answer"] != body["b"]["answer"] and body["sources"]
    # Without --ab both answers are samples of the one adapter served (here none).
    assert body["head_to_head"] is False and body["adapter"] is None
    db = sqlite3.connect(server.home / "ragloop.db")
    both = [db.execute("select t.adapter, c.adapter, c.model_id from serve_traces t join "
                       "candidates c on c.id = t.candidate_id where t.id = ?",
                       [body[x]["trace_id"]]).fetchone() for x in "ab"]
    assert both[0] == both[1] and both[0][:2] == (None, None)
    feedback(server, compare_id=body["compare_id"], verdict="b", comment="b cites")
    pairs = [p for p in export(server.home, "pairs") if p["question"] == "tell me about gadget3"]
    assert len(pairs) == 1
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == (body["b"]["answer"],
                                                         body["a"]["answer"])
    # Each shown answer has its own trace for thumbs too.
    feedback(server, trace_id=body["a"]["trace_id"], thumbs="down")
    # Two samples of one adapter are no head-to-head: no live win rate comes of them.
    stats = json.loads(run("--home", server.home, "prefs", "stats", "--json").stdout)
    assert "head_to_head" not in stats


def test_wilson_interval():
    from ragloop.core.pipeline.prefs_stats import wilson
    assert wilson(5, 10) == (0.2366, 0.7634)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


# ---- bad input: 4xx, one line, nothing written ---------------------------------------

@pytest.mark.parametrize("body,status,needle", [
    ({"trace_id": "NOPE", "thumbs": "up"}, 404, "unknown trace_id"),
    ({"compare_id": "NOPE", "verdict": "a"}, 404, "unknown compare_id"),
    ({"thumbs": "up"}, 400, "either trace_id"),
    ({"trace_id": "T", "thumbs": "sideways"}, 422, "thumbs"),
    ({"trace_id": "T", "score": 9}, 422, "score"),
    ({"trace_id": "T"}, 400, "the feedback is empty"),
    ({"trace_id": "T", "verdict": "a"}, 400, "a verdict goes with compare_id"),
    ({"trace_id": "T", "correction": "   "}, 400, "the correction is empty"),
    ({"trace_id": "T", "passages": {"9": True}}, 400, "passage '9' is not one of the sources"),
    ({"trace_id": "S", "thumbs": "up"}, 400, "this trace is a search"),
    ({"trace_id": "S", "correction": "x"}, 400, "this trace is a search"),
])
def test_bad_feedback_is_refused_and_nothing_is_written(server, body, status, needle):
    trace = ask(server, "what is gadget0?")["trace_id"]
    search = server.client.get("/v1/search", params={"q": "gadget0"}).json()["trace_id"]
    body = {k: {"T": trace, "S": search}.get(v, v) if isinstance(v, str) else v
            for k, v in body.items()}
    before = counts(server.home)
    r = server.client.post("/v1/feedback", json=body)
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"] and needle in r.json()["error"]
    assert "\n" not in r.json()["error"]
    assert counts(server.home) == before


def test_malformed_huge_and_wrong_requests(server):
    before = counts(server.home)
    c = server.client
    r = c.post("/v1/feedback", content=b"{not json", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()) == (400, {"error": "the body is not valid JSON"})
    r = c.post("/v1/feedback", content=b'{"comment": "' + b"x" * 70_000 + b'"}',
               headers={"content-type": "application/json"})
    assert r.status_code == 413 and "64 KiB" in r.json()["error"]
    r = c.post("/v1/ask", json={"question": ""})
    assert r.status_code == 422 and r.json()["error"].startswith("question")
    r = c.post("/v1/ask", json={"question": "   ", "max_new_tokens": 4})
    assert r.status_code == 400 and r.json() == {"error": "the question is empty"}
    r = c.post("/v1/ask", json={"question": "hi", "max_new_tokens": 4000})
    assert r.status_code == 400 and "max" in r.json()["error"].lower()
    r = c.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "x"}]})
    assert r.status_code == 400 and "no user message" in r.json()["error"]
    assert c.get("/v1/nothing").status_code == 404
    assert counts(server.home) == before


def test_metrics_count_requests_by_route_and_status(server):
    def count(text, route, status):
        for line in text.splitlines():
            if line.startswith(f'ragloop_requests_total{{method="GET",route="{route}",'
                               f'status="{status}"}}'):
                return int(line.split()[-1])
        return 0
    before = server.client.get("/metrics").text
    for _ in range(3):
        assert server.client.get("/healthz").json()["ok"] is True
    server.client.get("/v1/search", params={"q": "x", "k": 0})
    after = server.client.get("/metrics").text
    assert count(after, "/healthz", 200) == count(before, "/healthz", 200) + 3
    assert count(after, "/v1/search", 422) == count(before, "/v1/search", 422) + 1
    assert 'ragloop_request_seconds_bucket{method="GET",route="/healthz",le="+Inf"}' in after
    assert server.client.get("/openapi.json").json()["paths"]["/v1/feedback"]
