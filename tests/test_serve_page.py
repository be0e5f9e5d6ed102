"""The web page of `ragloop serve`, in real headless Chromium (Debian's `chromium`, driven by
Playwright) against a real `ragloop serve` process over a tiny-model workspace: ask and watch
the answer stream in with its sources, rate with keys, send a correction and passage marks,
rate two blind answers from the keyboard, and find every rating in the database."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cli_helpers import emb, run
from tiny_models import tiny_causal_lm

from ragloop.core.workspace import Workspace

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps calling home on a closed network.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Three tests ask this one: the first (the streaming test) generates the answer; the others
# get it from the server's cache, which is all they need (feedback on a cached answer rates
# that same stored answer), and a 256-token answer is not generated again.
WIDGETS = "How do I limit widgets?"
PASSAGE = ("The zebrafish tool reads its settings from zebra.toml in the project folder. "
           "Set max_widgets to limit how many widgets each flurble may hold. ")

try:
    from playwright import sync_api
    expect = sync_api.expect
except ImportError:
    sync_api = expect = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def booting(tmp_path_factory):
    """A `ragloop serve` process with a tiny generator that takes only rater tokens (the
    page passes its `?token=` on), started and left to load its models while Chromium
    launches: (process, base URL, workspace home, token)."""
    home = tmp_path_factory.mktemp("serve-page-home")
    docs = tmp_path_factory.mktemp("serve-page-docs")
    for i in range(4):
        (docs / f"doc{i}.md").write_text(f"# Part {i}\n\n" + PASSAGE * 3)
    run("--home", home, "index", docs, *emb())
    token = run("--home", home, "serve", "token", "add", "alice").stdout.strip()
    port = free_port()
    log = open(home / "serve.log", "wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("ragloop")), "--home", str(home), "serve",
         "--port", str(port), "-o", f"model={tiny_causal_lm()}"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RAGLOOP_HOME": str(home)})
    try:
        yield server, f"http://127.0.0.1:{port}", home, token
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def served(booting):
    """(base URL, workspace home, token) of the server, once it answers."""
    server, base, home, token = booting
    # The port is bound before the models load: a request waits there until they have.
    deadline = time.monotonic() + 300
    while True:
        assert server.poll() is None, (home / "serve.log").read_text()
        try:
            urllib.request.urlopen(base + "/healthz", timeout=30)
            break
        except OSError:
            assert time.monotonic() < deadline, "serve did not start in 300 s"
            time.sleep(0.5)
    return base, home, token


@pytest.fixture(scope="module")
def browser(booting):
    """Chromium, launched once for the module while the server loads (hence `booting`)."""
    if sync_api is None:
        pytest.skip('needs Playwright: pip install -e ".[web-test]"')
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("needs Debian's chromium: apt-get install chromium")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, served):
    """The page, loaded; a script error on it, or a request to anywhere but the server,
    fails the test."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors, elsewhere = [], []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    context.on("request", lambda r: None if r.url.startswith((served[0] + "/", "data:"))
               else elsewhere.append(r.url))
    page.goto(f"{served[0]}/?token={served[2]}")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    context.close()
    assert errors == [] and elsewhere == []


def test_the_page_is_served_from_the_package_under_a_strict_policy():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from ragloop.core.serve.page import mount

    app = FastAPI()
    mount(app)
    client = TestClient(app)
    html = client.get("/?body=x&media_type=text/plain")
    assert html.status_code == 200 and html.headers["content-type"] == "text/html; charset=utf-8"
    policy = html.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy
    assert '<script src="/static/page.js" defer></script>' in html.text
    for url, kind in (("/static/page.js", "text/javascript"), ("/static/page.css", "text/css")):
        asset = client.get(url)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    assert client.get("/openapi.json").json()["paths"] == {}
    # The policy allows no inline script or style, so the page must hold none; and model
    # text reaches the page only as text, never through an HTML-parsing API.
    assert not re.search(r"<script>|<style|\sstyle=|\son[a-z]+=", html.text)
    script = client.get("/static/page.js").text
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script)


def rows(home, sql, params=()):
    ws = Workspace(home)
    try:
        return list(ws.db.query(sql, params))
    finally:
        ws.close()


def ask(page, question):
    """Type `question` and press Enter; the trace id once the answer is complete."""
    page.locator("#question").fill("")
    page.keyboard.type(question)
    page.keyboard.press("Enter")
    expect(page.locator("#ask-status")).to_contain_text("Trace", timeout=120_000)
    return re.search(r"Trace (\w+)\.", page.locator("#ask-status").inner_text())[1]


def test_ask_streams_the_answer_with_sources_and_keys_rate_it(page, served, tmp_path_factory):
    base, home, _ = served
    expect(page.locator("#question")).to_be_focused()
    # Record what the answer box held each time it changed: the sources must be there
    # while the answer is still coming, and the answer must arrive in more than one piece.
    page.evaluate("""() => {
        window.seen = [];
        new MutationObserver(() => window.seen.push({
            answer: document.getElementById("answer").textContent,
            busy: document.getElementById("answer").getAttribute("aria-busy"),
            sources: document.querySelectorAll("#sources li").length,
        })).observe(document.getElementById("result"),
                    {subtree: true, childList: true, characterData: true, attributes: true});
    }""")
    trace = ask(page, WIDGETS)
    (row,) = rows(home, "select t.hits_json, c.text from serve_traces t "
                        "join candidates c on c.id = t.candidate_id where t.id = ?", [trace])
    answer = page.evaluate("document.getElementById('answer').textContent")
    assert answer == row["text"] and answer
    hits = json.loads(row["hits_json"])
    sources = page.locator("#sources li")
    expect(sources).to_have_count(len(hits))
    for i, (_, text) in enumerate(hits):
        expect(sources.nth(i).locator(".passage")).to_have_text(text)
        expect(sources.nth(i).locator(".path")).to_have_text(re.compile(r".*doc\d\.md.*"))
    seen = page.evaluate("window.seen")
    streaming = [s for s in seen if s["busy"] == "true" and s["sources"] == len(hits)]
    assert streaming, seen
    partial = {s["answer"] for s in streaming if s["answer"]} - {answer}
    assert partial and all(answer.startswith(p) for p in partial), (partial, answer)

    # Keys: Esc leaves the question box; then d, u and 4 rate the answer.
    page.keyboard.press("Escape")
    expect(page.locator("#question")).not_to_be_focused()
    for key, saved in (("d", "thumbs down"), ("u", "thumbs up"), ("4", "score 4")):
        page.keyboard.press(key)
        expect(page.locator("#feedback-status")).to_have_text(f"Saved: {saved}.")
    expect(page.locator("#thumbs-up")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#thumbs-down")).to_have_attribute("aria-pressed", "false")
    expect(page.locator('input[name="score"][value="4"]')).to_be_checked()
    scores = rows(home, "select s.score, s.rater_id from scores s join serve_traces t "
                        "on t.candidate_id = s.candidate_id where t.id = ? "
                        "order by s.created_at, s.rowid", [trace])
    assert [(s["score"], s["rater_id"]) for s in scores] == [(1, "alice"), (5, "alice"),
                                                             (4, "alice")]
    kinds = [json.loads(f["value_json"]) for f in rows(
        home, "select value_json from serve_feedback where trace_id = ? order by rowid",
        [trace])]
    assert [{k: v for k, v in f.items() if v is not None and k != "trace_id"}
            for f in kinds] == [{"thumbs": "down"}, {"thumbs": "up"}, {"score": 4}]

    shot = tmp_path_factory.getbasetemp() / "serve-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_a_correction_passage_marks_and_a_comment_land(page, served):
    base, home, _ = served
    trace = ask(page, WIDGETS)
    page.get_by_role("button", name="Source 1: relevant").click()
    page.get_by_role("button", name="Source 2: not relevant").click()
    # Pressing a pressed mark again takes it back; the last press counts.
    page.get_by_role("button", name="Source 2: not relevant").click()
    page.get_by_role("button", name="Source 2: relevant").click()
    page.get_by_role("button", name="Source 2: relevant").click()
    page.get_by_role("button", name="Source 2: not relevant").click()
    correction = "Set max_widgets in zebra.toml [1]. <b>not markup</b>"
    page.locator("#correction").fill(correction)
    page.locator("#comment").fill("The answer rambles.")
    page.locator("#send-details").click()
    expect(page.locator("#feedback-status")).to_have_text(
        "Saved: correction, comment, passage marks.")
    expect(page.locator("#error")).to_be_hidden()

    (trace_row,) = rows(home, "select * from serve_traces where id = ?", [trace])
    (fixed,) = rows(home, "select * from candidates where question_id = ? and text = ?",
                    [trace_row["question_id"], correction])
    assert fixed["generator"] == "human"
    (pair,) = rows(home, "select * from comparisons where ? in (candidate_a, candidate_b)",
                   [fixed["id"]])
    served_answer = trace_row["candidate_id"]
    assert {pair["candidate_a"], pair["candidate_b"]} == {fixed["id"], served_answer}
    winner = pair["candidate_a"] if pair["choice"] == "a" else pair["candidate_b"]
    assert pair["choice"] in ("a", "b") and winner == fixed["id"]
    hits = json.loads(trace_row["hits_json"])
    marks = rows(home, "select chunk_id, relevant from passage_judgments "
                       "where question_id = ? order by chunk_id", [trace_row["question_id"]])
    assert sorted((m["chunk_id"], m["relevant"]) for m in marks) == sorted(
        [(hits[0][0], 1), (hits[1][0], 0)])
    (comment,) = rows(home, "select text from comments where comparison_id = ?", [pair["id"]])
    assert comment["text"] == "The answer rambles."


def test_errors_show_in_one_line_and_model_text_is_never_markup(page, served):
    base, home, _ = served
    # Without the token the server refuses, and the page says why in one line.
    bare = page.context.new_page()
    bare.goto(base + "/")
    bare.wait_for_selector("body[data-ready=true]")
    bare.keyboard.type(WIDGETS)
    bare.keyboard.press("Enter")
    expect(bare.locator("#error")).to_have_text(
        "Error: this server needs a token: send Authorization: Bearer TOKEN")
    expect(bare.locator("#result")).to_be_hidden()
    expect(bare.locator("#ask-button")).to_be_enabled()
    bare.close()

    ask(page, WIDGETS)
    # Nothing to send: said on the page, nothing sent.
    before = len(rows(home, "select id from serve_feedback"))
    page.locator("#send-details").click()
    expect(page.locator("#error")).to_have_text(
        "Error: nothing to send: write a correction or a comment, or mark a passage")
    # The server's own one-line error, for a trace it does not know.
    page.evaluate("ask.trace = 'no-such-trace'")
    page.locator("#thumbs-up").press("Enter")
    expect(page.locator("#error")).to_have_text(
        "Error: unknown trace_id 'no-such-trace'; use one this server returned")
    assert len(rows(home, "select id from serve_feedback")) == before

    # An answer holding markup and citations: text, with [n] a button that shows source n.
    page.evaluate("""renderAnswer(document.getElementById("answer"),
        'See [2] <img src=x onerror="window.hacked=1"> and [9].', ask.sources.length, "ask")""")
    expect(page.locator("#answer")).to_have_text(
        'See [2] <img src=x onerror="window.hacked=1"> and [9].')
    assert page.locator("#answer img").count() == 0 and page.evaluate("window.hacked") is None
    assert page.locator("#answer .cite").count() == 1      # [9] names no shown source
    page.locator("#answer .cite").click()
    expect(page.locator("#ask-source-2")).to_have_class(re.compile(r"\bhighlight\b"))
    expect(page.locator("#ask-source-2")).to_be_focused()
    expect(page.locator("#sources li.highlight")).to_have_count(1)


def test_rating_two_answers_from_the_keyboard_lands_a_verdict(page, served):
    base, home, _ = served
    before = {r["id"] for r in rows(home, "select id from comparisons")}
    page.locator("#tab-ask").focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tab-rate")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#panel-rate")).to_be_visible()
    expect(page.locator("#panel-ask")).to_be_hidden()
    page.keyboard.press("/")
    expect(page.locator("#compare-question")).to_be_focused()
    page.keyboard.type("Which file holds the zebrafish settings?")
    page.keyboard.press("Enter")
    expect(page.locator("#compare-status")).to_contain_text("Which answer is better",
                                                            timeout=120_000)
    verdict_a = page.get_by_role("button", name=re.compile("A is better"))
    expect(verdict_a).to_be_focused()
    # The focus is visible: the ring is drawn on the focused button.
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    shown = [page.locator(f"#answer-{x}").text_content() for x in "ab"]
    page.keyboard.press("b")
    expect(page.locator("#compare-status")).to_have_text(
        "Saved: B is better. Type the next question.")
    expect(page.locator("#compare-question")).to_be_focused()
    # A second key on the same pair sends nothing more.
    page.locator("#compare-button").focus()
    page.keyboard.press("a")
    new = [r for r in rows(home, "select * from comparisons") if r["id"] not in before]
    assert len(new) == 1 and (new[0]["rater"], new[0]["rater_id"]) == ("serve", "alice")
    (row,) = new
    texts = {r["id"]: r["text"] for r in rows(
        home, "select id, text from candidates where id in (?, ?)",
        [row["candidate_a"], row["candidate_b"]])}
    # Stored as `ragloop rate` stores a verdict: the left answer is the one shown as A, and
    # the choice names candidate_a or candidate_b, here the answer shown as B.
    left = row["left_candidate"]
    right = ({row["candidate_a"], row["candidate_b"]} - {left}).pop()
    assert [texts[left], texts[right]] == shown
    assert row[f"candidate_{row['choice']}"] == right
