"""Two `ragloop rate --rater judge` processes against one workspace at once, on the same 200
questions with different rater ids: every one of the 400 ratings is stored, none twice."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragloop.core.cli import cli
from ragloop.core.workspace import Workspace
from tiny_models import tiny_causal_lm, tiny_embedder

RAGLOOP = str(Path(sys.executable).parent / "ragloop")
N = 200


@pytest.mark.slow
def test_two_sessions_at_once_lose_nothing(tmp_path, ragloop_home):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"doc{i}.md").write_text(f"# Part {i}\n\nWidget {i} lives in zebra.toml.\n")
    result = CliRunner().invoke(cli, ["index", str(docs), "-o",
                                      f"embedder.model={tiny_embedder()}"])
    assert result.exit_code == 0, result.output
    questions = tmp_path / "questions.txt"
    questions.write_text("".join(f"Where does widget {n} live?\n" for n in range(N)))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    started = time.perf_counter()
    sessions = [subprocess.Popen(
        [RAGLOOP, "rate", "--rater", "judge", "--rater-id", who, "--questions", str(questions),
         "-o", f"model={tiny_causal_lm()}", "--max-new-tokens", "4", "-k", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for who in ("judge-1", "judge-2")]
    outputs = [s.communicate(timeout=300) for s in sessions]
    seconds = time.perf_counter() - started
    for s, (out, err) in zip(sessions, outputs):
        assert s.returncode == 0, err
        assert out.count("\nSaved ") + out.startswith("Saved ") == N
    d = Workspace(ragloop_home).db
    assert d["comparisons"].count == 2 * N
    per_rater = dict(d.execute("select rater_id, count(distinct question_id) from comparisons "
                               "group by rater_id").fetchall())
    assert per_rater == {"judge-1": N, "judge-2": N}
    assert d["questions"].count == N
    assert d.execute("pragma foreign_key_check").fetchall() == []
    spans = d.execute("select min(created_at), max(created_at) from comparisons "
                      "group by rater_id").fetchall()
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]     # they did overlap
    print(f"\n{2 * N} ratings from two sessions in {seconds:.1f} s")
