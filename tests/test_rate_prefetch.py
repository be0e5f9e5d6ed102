"""`ragloop rate` with a person generates the next item's answers while the current one is
on screen (core/pipeline/rating_prefetch.py), driven in a real terminal (pexpect): the second
item comes without a generation wait, by the session's own records, and a kill -9 while
prefetching loses no committed rating."""

import json
import os
import signal
import time

import pexpect
from test_rate_tty import PROMPT, QUESTIONS, db, rate_args, spawn, workspace  # noqa: F401

from ragloop.core.pipeline.rating_prefetch import PAUSE_ENV
from ragloop.core.pipeline.rating_questions import question_hash


def candidates_of(home, question):
    return list(db(home).query(
        "select c.* from candidates c join questions q on q.id = c.question_id "
        "where q.text = ? order by c.rowid", [question]))


def wait_until(condition, seconds=120):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def spawn_held(tmp_path):
    """(child, pause file): `rate` on its first item, its background generation of each next
    item held, as PAUSE_ENV asks: it makes the pause file and waits until the test removes
    it."""
    pause = tmp_path / "pause"
    os.environ[PAUSE_ENV] = str(pause)      # spawn passes os.environ on
    try:
        child = spawn(rate_args(tmp_path))
    finally:
        del os.environ[PAUSE_ENV]           # later sessions of the test are not held
    child.expect_exact(QUESTIONS[0])
    child.expect_exact(PROMPT)
    wait_until(pause.exists)                 # the second pair's generation is held here
    return child, pause


def test_the_second_item_comes_without_a_generation_wait(tmp_path, workspace):  # noqa: F811
    child = spawn(rate_args(tmp_path, "--max-new-tokens", "48", "-n", "2"))
    child.expect_exact(QUESTIONS[0])
    child.expect_exact(PROMPT)
    # The person reads until the second pair is in (the test's stand-in for reading time).
    wait_until(lambda: len(candidates_of(workspace, QUESTIONS[1])) == 2)
    child.send("a")
    child.expect_exact("Saved 1/2: ")
    child.expect_exact(QUESTIONS[1])
    child.expect_exact(PROMPT)
    child.send("b")
    child.expect_exact("Saved 2/2: ")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before

    d = db(workspace)
    first, second = d.query("select * from comparisons order by created_at")
    ahead = candidates_of(workspace, QUESTIONS[1])
    # Generated in the background, stored before the first verdict was given.
    assert all(json.loads(c["params_json"]).get("prefetched") for c in ahead)
    assert all(c["created_at"] < first["created_at"] for c in ahead)
    assert not any(json.loads(c["params_json"]).get("prefetched")
                   for c in candidates_of(workspace, QUESTIONS[0]))
    generating = sum(json.loads(c["params_json"])["timings"]["generate_s"] for c in ahead)
    # The first item waited for its answers; the second waited less than generating them.
    assert first["wait_seconds"] >= sum(
        json.loads(c["params_json"])["timings"]["generate_s"]
        for c in candidates_of(workspace, QUESTIONS[0]))
    assert second["wait_seconds"] < generating, (second["wait_seconds"], generating)
    # -n 2: nothing was generated for a third item.
    assert candidates_of(workspace, QUESTIONS[2]) == []


def test_kill_9_while_prefetching_loses_no_rating(tmp_path, workspace):  # noqa: F811
    child, _ = spawn_held(tmp_path)
    held = db(workspace).execute(
        "select session from rating_claims where question_hash = ? and kind = 'pair'",
        [question_hash(QUESTIONS[1])]).fetchall()
    assert len(held) == 1                    # claimed as a foreground generation would be
    child.send("t")
    child.expect_exact("Saved 1/5: tie")
    child.expect_exact("Generating two answers (2/5)")
    child.kill(signal.SIGKILL)
    child.wait()
    d = db(workspace)
    assert [r[0] for r in d.execute("select choice from comparisons")] == ["tie"]
    assert candidates_of(workspace, QUESTIONS[1]) == []

    child = spawn(rate_args(tmp_path, "-n", "1"))
    child.expect_exact("Rating 1 of 5 questions as tester (1 already rated).")
    child.expect_exact(QUESTIONS[1])          # the dead session's claim blocks nobody
    child.expect_exact(PROMPT)
    child.send("n")
    child.expect_exact("Saved 1/1: both-bad")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert len(candidates_of(workspace, QUESTIONS[1])) == 2
    assert [r[0] for r in db(workspace).execute(
        "select choice from comparisons order by created_at")] == ["tie", "both-bad"]


def test_ctrl_c_while_prefetching_stops_cleanly(tmp_path, workspace):  # noqa: F811
    child, pause = spawn_held(tmp_path)
    pause.unlink()                           # the second item's prefetch goes on
    child.send("a")
    child.expect_exact("Saved 1/5: ")
    child.expect_exact(QUESTIONS[1])
    child.expect_exact(PROMPT)
    wait_until(pause.exists)                 # the third one's is held, in the background
    child.sendcontrol("c")
    child.expect_exact("Interrupted: 1 rated this session as tester (a 1); all saved.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert candidates_of(workspace, QUESTIONS[2]) == []
    assert db(workspace)["comparisons"].count == 1
