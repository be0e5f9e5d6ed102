"""`ragloop serve` on the command line and its tokens: where it may listen, a busy port, rater
tokens (stored as hashes, feedback attributed to the rater), a shared --token, and a real
`ragloop serve --workers 2` process."""

import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from cli_helpers import run
from test_serve_api import make_workspace, settings
from test_train import one_line_error
from tiny_models import tiny_causal_lm

from ragloop.core.serve.server import Serving


@pytest.fixture
def home(tmp_path, ragloop_home):
    make_workspace(ragloop_home, tmp_path / "docs")
    return ragloop_home


def test_a_busy_port_is_one_line_naming_it(ragloop_home):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line_error(run("serve", "--port", port, ok=False),
                       f"port {port} on 127.0.0.1 is in use", "--port")


def test_another_host_needs_a_token(ragloop_home):
    one_line_error(run("serve", "--host", "0.0.0.0", "--port", 0, ok=False),
                   "--host 0.0.0.0 would let other machines in without a token", "--token")
    one_line_error(run("serve", "--ab", "x:1", ok=False), "--ab needs two adapters")
    one_line_error(run("serve", "--ab", "x", "--ab", "y:1", ok=False), "--ab 'x' is not")


def test_rater_tokens_are_stored_as_hashes_and_listed(ragloop_home):
    token = run("serve", "token", "add", "alice").stdout.strip()
    assert len(token) >= 40
    db = sqlite3.connect(ragloop_home / "ragloop.db")
    stored = db.execute("select * from serve_tokens").fetchall()
    assert len(stored) == 1 and token not in repr(stored)
    assert run("serve", "token", "list").stdout.startswith("alice  ")
    one_line_error(run("serve", "token", "add", "alice", ok=False), "has a token already")
    one_line_error(run("serve", "token", "add", "bad name!", ok=False), "not allowed")
    run("serve", "token", "remove", "alice")
    one_line_error(run("serve", "token", "remove", "alice", ok=False), "no token for rater")
    assert "No rater tokens" in run("serve", "token", "list").stdout


def test_rater_tokens_are_required_and_name_the_rater(home):
    alice = run("serve", "token", "add", "alice").stdout.strip()
    bob = run("serve", "token", "add", "bob").stdout.strip()
    with Serving(settings(home)) as s:
        c = httpx.Client(base_url=s.url, timeout=120)
        body = {"question": "what is gadget1?", "max_new_tokens": 4}
        r = c.post("/v1/ask", json=body)
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]
        r = c.post("/v1/ask", json=body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and "not valid" in r.json()["error"]
        assert c.get("/healthz").status_code == 200           # operations need no token
        trace = c.post("/v1/ask", json=body,
                       headers={"Authorization": f"Bearer {alice}"}).json()["trace_id"]
        for token, thumbs in ((alice, "up"), (bob, "down")):
            r = c.post("/v1/feedback", json={"trace_id": trace, "thumbs": thumbs},
                       headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
        db = sqlite3.connect(home / "ragloop.db")
        assert sorted(db.execute("select rater_id, score, rater from scores")) == [
            ("alice", 5, "serve"), ("bob", 1, "serve")]
        # A removed token is refused within seconds, without a restart.
        run("serve", "token", "remove", "bob")
        time.sleep(2.5)
        r = c.post("/v1/feedback", json={"trace_id": trace, "thumbs": "up"},
                   headers={"Authorization": f"Bearer {bob}"})
        assert r.status_code == 401


@pytest.fixture(scope="module", autouse=True)
def workers(tmp_path_factory):
    """The real command: `ragloop serve --workers 2` with a shared token, over a workspace
    of its own, started with the module (autouse) so that its two processes load their
    models while the other tests run: (process, URL, workspace home)."""
    root = tmp_path_factory.mktemp("serve-workers")
    home = root / "home"
    make_workspace(home, root / "docs")
    env = {**os.environ, "RAGLOOP_HOME": str(home), "RAGLOOP_SERVE_TOKEN": "s3cret"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ragloop"), "serve", "--port", "0", "--workers", "2",
         "-o", f"model={tiny_causal_lm()}"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        url = re.search(r"Serving on (http://\S+)", line).group(1)
        # Keep reading its log: a full pipe would stop the server at its next log line.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield proc, url, home
    finally:
        proc.terminate()
        proc.wait(60)


def test_serve_command_with_workers_and_a_shared_token(workers):
    """Two worker processes on one port, each loading the models."""
    proc, url, home = workers
    deadline = time.time() + 420
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.time() < deadline and proc.poll() is None, "the server did not start"
        time.sleep(0.5)
    c = httpx.Client(base_url=url, timeout=240)
    assert c.get("/v1/search", params={"q": "gadget"}).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    for _ in range(4):
        r = c.post("/v1/ask", json={"question": "what is gadget2?", "max_new_tokens": 4},
                   headers=auth)
        assert r.status_code == 200, r.text
        r = c.post("/v1/feedback", json={"trace_id": r.json()["trace_id"], "score": 4},
                   headers=auth)
        assert r.status_code == 200, r.text
    db = sqlite3.connect(home / "ragloop.db")
    assert db.execute("select count(*), min(rater_id) from scores").fetchone() == (4, "token")
    # Each worker froze what it loaded, so full collections do not stall requests.
    text = c.get("/metrics", headers=auth).text
    frozen = re.search(r"^ragloop_gc_frozen_objects (\d+)$", text, re.M)
    assert frozen and int(frozen.group(1)) > 10_000
