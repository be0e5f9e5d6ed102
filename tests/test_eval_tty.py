"""`ragloop eval --rater human` in a pseudo-terminal (pexpect): the rating screen of `rate`,
quitting stops without a report and keeps the verdicts given, and the next run reuses them."""

import json
import re
from pathlib import Path

import pexpect
from test_eval import indexed, rated  # noqa: F401  (fixtures)
from test_rate_tty import spawn
from tiny_models import tiny_causal_lm

from ragloop.core.workspace import Workspace

NEW = ["A first new question about zebra.toml?", "A second new question about widgets?"]


def test_human_win_rate_quit_then_resume(rated, tmp_path, ragloop_home):  # noqa: F811
    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join(NEW) + "\n")
    args = ["eval", "--adapter", "a", "--rater", "human", "--rater-id", "tester",
            "--evaluators", "winrate", "--questions", str(qfile), "-o",
            f"model={tiny_causal_lm()}", "--max-new-tokens", "4", "-k", "2"]
    child = spawn(args)
    child.expect_exact(NEW[0])
    child.expect_exact("Which is better? ")
    child.send("a")                        # one key records it: no comment prompt
    child.expect_exact(NEW[1])
    child.expect_exact("Which is better? ")
    child.send("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert "Error: stopped (quit) after 1 of 2 questions" in child.before
    assert not list((ragloop_home / "runs").glob("eval-*"))
    db = Workspace(ragloop_home).db
    assert db.execute("select count(*) from comparisons where rater = 'human' and "
                      "rater_id = 'tester'").fetchone()[0] == 1

    child = spawn(args)
    child.expect_exact(NEW[1])             # the first one is not asked again
    child.expect_exact("Which is better? ")
    child.send("t")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    folder = Path(re.search(r"Report: (\S+)report\.md", child.before).group(1))
    details = json.loads((folder / "metrics.json").read_text())["evaluators"]["winrate"]["details"]
    assert [(d["question"], d["reused"]) for d in details] == [(NEW[0], True), (NEW[1], False)]
    assert details[1]["outcome"] == "tie"
