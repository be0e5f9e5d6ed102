"""The human rater driven through the real `ragloop rate` in a pseudo-terminal (pexpect):
kill -9 loses nothing already rated and the next run resumes; keys, scores, passage marks
and comments are stored; end of input and Ctrl-C stop cleanly."""

import json
import os
import shlex
import signal
import sys
from pathlib import Path

import pexpect
import pytest
from click.testing import CliRunner
from tiny_models import tiny_causal_lm, tiny_embedder

from ragloop.core.cli import cli
from ragloop.core.workspace import Workspace

RAGLOOP = str(Path(sys.executable).parent / "ragloop")
PASSAGE = ("The zebrafish tool reads its settings from zebra.toml in the project folder. "
           "Set max_widgets to limit how many widgets each flurble may hold. ")
QUESTIONS = [f"Question number {n}: where do zebrafish settings live?" for n in range(1, 6)]
PROMPT = "Which is better? "


@pytest.fixture
def workspace(tmp_path, ragloop_home):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"doc{i}.md").write_text(f"# Part {i}\n\n" + PASSAGE)
    result = CliRunner().invoke(cli, ["index", str(docs), "-o",
                                      f"embedder.model={tiny_embedder()}"])
    assert result.exit_code == 0, result.output
    (tmp_path / "questions.txt").write_text("\n".join(QUESTIONS) + "\n")
    return ragloop_home


def rate_args(tmp_path, *extra):
    return ["rate", "--questions", str(tmp_path / "questions.txt"), "--rater-id", "tester",
            "-o", f"model={tiny_causal_lm()}", "--max-new-tokens", "4", "-k", "2", *extra]


def spawn(args, command=RAGLOOP):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return pexpect.spawn(command, args, env=env, dimensions=(50, 80), encoding="utf-8",
                         timeout=90)


def db(home):
    return Workspace(home).db


def test_kill_9_loses_nothing_and_the_next_run_resumes_at_the_fourth(tmp_path, workspace):
    child = spawn(rate_args(tmp_path))
    child.expect_exact("Rating 5 of 5 questions as tester.")
    for n, key in enumerate("abt", 1):
        child.expect_exact(QUESTIONS[n - 1])
        child.expect_exact(PROMPT)
        child.send(key)                    # one key records the verdict
        child.expect_exact(f"Saved {n}/5: ")
    child.expect_exact(QUESTIONS[3])
    child.expect_exact(PROMPT)
    child.kill(signal.SIGKILL)
    child.wait()
    d = db(workspace)
    assert d["comparisons"].count == 3
    rated = [r[0] for r in d.execute("select q.text from comparisons c join questions q on "
                                     "q.id = c.question_id order by c.created_at")]
    assert rated == QUESTIONS[:3]
    fourth = "select count(*) from candidates c join questions q on q.id = c.question_id " \
             "where q.text = ?"
    assert d.execute(fourth, [QUESTIONS[3]]).fetchone()[0] == 2

    child = spawn(rate_args(tmp_path))
    child.expect_exact("Rating 2 of 5 questions as tester (3 already rated).")
    child.expect_exact("1/2")
    child.expect_exact(QUESTIONS[3])
    child.expect_exact(PROMPT)
    child.send("n")
    child.expect_exact("Saved 1/2: both-bad")
    child.expect_exact(QUESTIONS[4])
    child.expect_exact(PROMPT)
    child.sendcontrol("c")
    child.expect_exact("Interrupted: 1 rated this session as tester (both-bad 1); all saved.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    d = db(workspace)
    assert d["comparisons"].count == 4
    # The fourth question's candidates from before the kill were shown, not regenerated.
    assert d.execute(fourth, [QUESTIONS[3]]).fetchone()[0] == 2
    assert [r[0] for r in d.execute("select choice from comparisons order by created_at")][2:] \
        == ["tie", "both-bad"]


def test_unknown_key_reprompts_and_scores_passages_comment_are_stored(tmp_path, workspace):
    child = spawn(rate_args(tmp_path, "--scores", "--passages", "-n", "1"))
    child.expect_exact("Passages (e: expand)")
    child.expect_exact(PROMPT)
    child.send("x")
    child.expect_exact("'x' is not a key here; press one of: a, b, t, n, s, c, e, q, ?")
    child.expect_exact(PROMPT)
    child.send("?")
    child.expect_exact("t  tie: equally good")
    child.send("e")
    child.expect_exact("1/1")
    child.expect_exact(PROMPT)
    child.send("c")                        # a comment only when asked for, before the verdict
    child.expect_exact("Comment (Enter when done): ")
    child.send("too vague\r")
    child.expect_exact(PROMPT)
    child.send("b")
    child.expect_exact("Score for A (1-5): ")
    child.send("9")
    child.expect_exact("press one of: 1, 2, 3, 4, 5, q")
    child.send("4")
    child.expect_exact("Score for B (1-5): ")
    child.send("2")
    marks = []
    for n in range(1, 3):
        child.expect_exact(f"Is passage [{n}] relevant? (y/n): ")
        marks.append("yn"[n - 1])
        child.send(marks[-1])
    child.expect_exact("Saved 1/1: b")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    d = db(workspace)
    (c,) = d["comparisons"].rows
    left = c["left_candidate"]
    right = c["candidate_b"] if left == c["candidate_a"] else c["candidate_a"]
    assert c[f"candidate_{c['choice']}"] == right         # "b" is the answer on the right
    assert {r["candidate_id"]: r["score"] for r in d["scores"].rows} == {left: 4, right: 2}
    chunk_ids = json.loads(d["candidates"].get(left)["chunk_ids_json"])
    judged = [(r["chunk_id"], r["relevant"]) for r in
              d.query("select * from passage_judgments order by rowid")]
    assert judged == list(zip(chunk_ids, [1, 0]))
    assert [r["text"] for r in d["comments"].rows] == ["too vague"]
    assert c["seconds"] > 0


def test_end_of_input_stops_cleanly_and_plain_text_when_stdout_is_a_pipe(tmp_path, workspace):
    command = " ".join(shlex.quote(a) for a in [RAGLOOP, *rate_args(tmp_path)])
    child = spawn(["-c", f"set -o pipefail; {command} | cat"], command="/bin/bash")
    # No line ends in the pattern: while a key is read the terminal is raw, so the newlines
    # that `cat` copies arrive without their carriage returns.
    child.expect_exact("=== Question 1/5 ===")
    child.expect_exact(QUESTIONS[0])
    child.expect_exact("--- Answer A ---")
    child.expect_exact(PROMPT)
    child.sendeof()
    child.expect_exact("Stopped (end of input): 0 rated this session as tester; all saved.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert db(workspace)["comparisons"].count == 0


def test_questions_typed_at_the_prompt(tmp_path, workspace):
    child = spawn(["rate", "--rater", "judge", "-o", f"model={tiny_causal_lm()}",
                   "--max-new-tokens", "4", "-k", "2"])
    child.expect_exact("Question (Enter to stop): ")
    child.send(QUESTIONS[0] + "\r")
    child.expect_exact("Saved 1: ")
    child.expect_exact("Question (Enter to stop): ")
    child.send(QUESTIONS[0] + "\r")
    child.expect_exact("Already rated by judge@3.")
    child.expect_exact("Question (Enter to stop): ")
    child.send("\r")
    child.expect_exact("1 rated this session as judge@3")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    rows = [(r["text"], r["origin"]) for r in db(workspace)["questions"].rows]
    assert rows == [(QUESTIONS[0], "typed")]


def test_keys_typed_ahead_with_enter_are_taken(tmp_path, workspace):
    child = spawn(rate_args(tmp_path))
    child.expect_exact("Rating 5 of 5 questions as tester.")
    # Typed while the first answers are generated: the terminal holds "a" and Enter until
    # the rater reads, and then hands both over in one read.
    child.send("a\r")
    child.expect_exact(PROMPT)
    refused = "is not a key here"
    assert child.expect_exact(["Saved 1/5: ", refused]) == 0, child.before
    child.expect_exact(QUESTIONS[1])
    child.expect_exact(PROMPT)
    child.send("c")
    child.expect_exact("Comment (Enter when done): ")
    child.send("fine\r")
    child.expect_exact(PROMPT)
    child.send("b\r")                      # at the prompt, one write: one read
    assert child.expect_exact(["Saved 2/5: ", refused]) == 0, child.before
    # Ctrl-D typed while the third answers are generated reaches the rater as a NUL.
    child.sendeof()
    assert child.expect_exact(["Stopped (end of input): 2 rated this session as tester",
                               refused]) == 0, child.before
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    d = db(workspace)
    rows = list(d.query("select * from comparisons order by created_at"))
    shown = [c["left_candidate"] if key == "a" else
             (c["candidate_b"] if c["left_candidate"] == c["candidate_a"] else c["candidate_a"])
             for c, key in zip(rows, "ab")]
    assert [c[f"candidate_{c['choice']}"] for c in rows] == shown
    assert [r["text"] for r in d["comments"].rows] == ["fine"]
