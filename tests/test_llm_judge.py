"""The llm-judge rater against a real OpenAI-compatible HTTP server on 127.0.0.1 (a
http.server in a thread, answering fixed JSON) and a tiny random local model: both orders
asked, disagreement a tie, garbage or a failing endpoint a skipped item with a note, an
endpoint down at the start a one-line error."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from tiny_models import tiny_causal_lm

from ragloop.core import RagloopError, registry
from ragloop.core.cli import cli
from ragloop.core.components import Comparison
from ragloop.core.config import build_config
from ragloop.plugins.raters.llm_judge import (
    MIRROR,
    LlmJudgeOptions,
    LlmJudgeRater,
    messages,
    parse_verdict,
)

ITEM = Comparison("What license is Ferrule released under?",
                  ["Ferrule is released under the Mozilla Public License 2.0."],
                  "The Mozilla Public License 2.0 [1].", "The GPL, version 3.")


class Endpoint:
    """A chat-completions server whose replies come from `self.replies` in turn (a str is
    the message content; a dict is sent as the whole JSON body; an int is an HTTP status)."""

    def __init__(self):
        self.replies, self.requests = [], []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"data": [{"id": "judge-model"}]})

            def do_POST(self):
                length = int(self.headers["Content-Length"])
                endpoint.requests.append((dict(self.headers), json.loads(self.rfile.read(length))))
                reply = endpoint.replies.pop(0)
                if isinstance(reply, int):
                    return self._send(reply, {"error": "boom"})
                if isinstance(reply, bytes):
                    return self._send(200, reply)
                body = reply if isinstance(reply, dict) else {
                    "choices": [{"message": {"role": "assistant", "content": reply}}]}
                self._send(200, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    server = Endpoint()
    yield server
    server.close()


def rater(url, **options):
    return LlmJudgeRater(LlmJudgeOptions(url=url, model="judge-model", **options))


def free_port_url():
    # A port that was just free: nothing listens there.
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("reply, choice", [
    ("A", "a"), ("b", "b"), ("B.", "b"), ("**A**", "a"), ("Tie", "tie"), ("neither", "both-bad"),
    ("A is better: it cites the source.", "a"), ("Verdict: B", "b"),
    ("The better answer is A.", "a"),
    ("", None), ("I cannot decide", None), ("A better answer would cite sources", None),
    ("Answers", None), ("banana", None)])
def test_parse_verdict(reply, choice):
    assert parse_verdict(reply) == choice


def test_both_orders_are_asked_and_agreement_is_kept(endpoint):
    endpoint.replies = ["A", "B"]          # A first; swapped, the same answer is now B
    judge = rater(endpoint.url)
    judge.check()
    assert judge.compare(ITEM).choice == "a"
    first, second = (body["messages"][0]["content"] for _, body in endpoint.requests)
    assert first.index(ITEM.answer_a) < first.index(ITEM.answer_b)
    assert second.index(ITEM.answer_b) < second.index(ITEM.answer_a)
    assert endpoint.requests[0][1]["model"] == "judge-model"
    assert endpoint.requests[0][1]["temperature"] == 0


def test_a_position_preference_is_a_tie(endpoint):
    endpoint.replies = ["A", "A"]          # the first answer shown, whichever it is
    assert rater(endpoint.url).compare(ITEM).choice == "tie"
    endpoint.replies = ["neither", "neither"]
    assert rater(endpoint.url).compare(ITEM).choice == "both-bad"


@pytest.mark.parametrize("reply", ["Hmm, hard to say.", {"unexpected": True}, 500,
                                   b"<html>not json</html>"])
def test_garbage_is_a_skipped_item_with_a_note(endpoint, capsys, reply):
    endpoint.replies = [reply, "A"]
    judge = rater(endpoint.url)
    verdict = judge.compare(ITEM)
    assert verdict.choice is None and judge.skipped == 1
    note = capsys.readouterr().err.strip()
    assert note.startswith("llm-judge: ") and note.endswith("item skipped")
    assert "\n" not in note and "Traceback" not in note


def test_an_endpoint_that_stops_mid_session_skips_the_item(endpoint, capsys):
    judge = rater(endpoint.url)
    judge.check()
    endpoint.close()
    assert judge.compare(ITEM).choice is None
    assert "endpoint failed" in capsys.readouterr().err


def test_the_key_is_sent_from_the_named_variable(endpoint, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sekrit")
    endpoint.replies = ["B", "A"]
    judge = rater(endpoint.url, key_env="JUDGE_KEY")
    judge.check()
    assert judge.compare(ITEM).choice == "b"
    assert endpoint.requests[0][0]["Authorization"] == "Bearer sekrit"
    monkeypatch.delenv("JUDGE_KEY")
    with pytest.raises(RagloopError, match="JUDGE_KEY .*is not set"):
        judge.check()


def test_an_endpoint_down_at_the_start_is_a_one_line_error():
    with pytest.raises(RagloopError, match="does not answer") as caught:
        rater(free_port_url()).check()
    assert "\n" not in str(caught.value)
    with pytest.raises(RagloopError, match="needs a model"):
        LlmJudgeRater().check()
    with pytest.raises(RagloopError, match="url must start with http"):
        build_config(LlmJudgeOptions, ["url=127.0.0.1:8000"], "llm-judge")


def test_rate_with_the_endpoint_down_fails_before_anything(tmp_path):
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "ws"), "rate", "--rater",
                                      "llm-judge", "-o", f"rater.url={free_port_url()}",
                                      "--questions", __file__])
    assert result.exit_code != 0
    assert "does not answer" in result.output and "Traceback" not in result.output


def test_a_tiny_random_model_never_gives_a_fake_verdict(capsys):
    """The parser on a real (random, tiny) model's greedy replies: the verdict is what the
    two replies say under the rules, and a reply that says nothing is a skip with a note."""
    judge = LlmJudgeRater(LlmJudgeOptions(model=str(tiny_causal_lm()), max_tokens=4))
    judge.check()
    replies = [judge.ask(messages(ITEM, x, y)) for x, y in (
        (ITEM.answer_a, ITEM.answer_b), (ITEM.answer_b, ITEM.answer_a))]
    parsed = [parse_verdict(r) for r in replies]
    verdict = judge.compare(ITEM)
    if None in parsed:
        assert verdict.choice is None and judge.skipped == 1
        assert "is not A, B, tie or neither" in capsys.readouterr().err
    else:
        agreed = parsed[0] == MIRROR[parsed[1]]
        assert verdict.choice == (parsed[0] if agreed else "tie")


def test_registered():
    assert registry.get_rater("llm-judge") is LlmJudgeRater
    assert LlmJudgeRater(LlmJudgeOptions(model="/models/Qwen2.5-7B")).default_rater_id() == \
        "llm-judge@1:Qwen2.5-7B"
