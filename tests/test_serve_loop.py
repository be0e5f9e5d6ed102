"""The deployment loop end to end on a tiny model: feedback given to a running server ->
`prefs export` -> `train` -> `adapters use` -> the same server, not restarted, answers with
the new adapter; then `--ab` splits users between the base model and it, sticky per user."""

import sqlite3

import httpx
from cli_helpers import run
from test_serve_api import make_workspace, settings
from test_train import tiny

from ragloop.core.serve.server import Serving

QUESTIONS = [f"what does part {i} mention?" for i in range(5)]


def test_feedback_trains_an_adapter_that_the_running_server_then_uses(tmp_path, ragloop_home):
    make_workspace(ragloop_home, tmp_path / "docs")
    with Serving(settings(ragloop_home)) as s:
        c = httpx.Client(base_url=s.url, timeout=300)
        for i, question in enumerate(QUESTIONS):
            served = c.post("/v1/ask", json={"question": question, "max_new_tokens": 6,
                                             "k": 1}).json()
            assert served["adapter"] is None
            r = c.post("/v1/feedback", json={"trace_id": served["trace_id"],
                                             "correction": f"Part {i} mentions gadget{i} [1]."})
            assert r.status_code == 200, r.text
        data = tmp_path / "pairs.jsonl"
        run("prefs", "export", "--kind", "pairs", "--out", data)
        assert len(data.read_text().splitlines()) == len(QUESTIONS)
        run("train", "--method", "dpo", "--data", data, "--max-steps", "2", "--lr", "1e-3",
            "-o", "max_length=1024", *tiny(), "--name", "served")
        run("adapters", "use", "served", *tiny())
        # No restart: the next request reads the workspace's choice and loads the adapter.
        after = c.post("/v1/ask", json={"question": QUESTIONS[0], "max_new_tokens": 6}).json()
        assert after["adapter"] == "served" and after["cached"] is False
        db = sqlite3.connect(ragloop_home / "ragloop.db")
        adapter, trace_adapter = db.execute(
            "select c.adapter, t.adapter from serve_traces t join candidates c "
            "on c.id = t.candidate_id where t.id = ?", [after["trace_id"]]).fetchone()
        assert trace_adapter == "served" and "served" in adapter
        run("adapters", "use", "--none")
        back = c.post("/v1/ask", json={"question": QUESTIONS[1], "max_new_tokens": 6}).json()
        assert back["adapter"] is None

    ab = (("base", 0.5), ("served", 0.5))
    with Serving(settings(ragloop_home, ab=ab)) as s:
        c = httpx.Client(base_url=s.url, timeout=300)
        seen = {}
        for user in [f"user{i}" for i in range(12)]:
            got = {c.post("/v1/ask", json={"question": QUESTIONS[2], "max_new_tokens": 4},
                          headers={"X-User": user}).json()["adapter"] for _ in range(2)}
            assert len(got) == 1                 # sticky: a user always gets the same one
            seen[user] = got.pop()
        assert set(seen.values()) == {"base", "served"}
