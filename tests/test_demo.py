"""`ragloop demo`: the whole loop end to end with tiny models, where it works, re-runs, and
(slow) once on the real packaged models."""

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_models import tiny_causal_lm, tiny_embedder

from ragloop.core.cli import cli
from ragloop.core.pipeline.demo import MARKER


def demo(home, *args, ok=True):
    result = CliRunner().invoke(cli, ["--home", str(home), "demo", *map(str, args)],
                                catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def tiny():
    return ["-o", f"embedder.model={tiny_embedder()}", "-o", f"generator.model={tiny_causal_lm()}"]


def longer_wins():
    """A one-off rater: the longer answer wins (the judge calls a tiny random model's
    answers ties, which leaves no pairs to train on)."""
    from ragloop.core.components import Rater, Verdict

    class Longer(Rater):
        name, description = "longer", "the longer answer wins"

        def compare(self, item):
            a, b = len(item.answer_a), len(item.answer_b)
            return Verdict("tie" if a == b else "a" if a > b else "b")

    return Longer


@pytest.fixture
def longer_rater():
    from ragloop.core.hookspecs import hookimpl
    from ragloop.core.plugins import load_plugins, pm

    class Plugin:
        @hookimpl
        def register_raters(self, register):
            register(longer_wins())

    load_plugins()
    pm.register(Plugin(), name="test-longer-rater")
    yield
    pm.unregister(name="test-longer-rater")


def test_demo_closes_the_loop_with_tiny_models(tmp_path, longer_rater, monkeypatch):
    monkeypatch.setenv("RAGLOOP_PROGRESS_SECONDS", "0")      # a line for every update
    home = tmp_path / "ws"
    result = demo(home, "--questions", 6, "--held-out", 2, "--max-steps", 2,
                  "--max-new-tokens", 12, "--rater", "longer", *tiny())
    out = result.output
    # stderr is not a terminal here: every phase still reports its progress, in lines.
    phases = re.split(r"^> ", result.stderr, flags=re.M)[1:]
    assert [p.split(" ", 1)[0] for p in phases] == ["Indexing", "Answering", "Training",
                                                   "Comparing", "Trying"]
    for phase, expected in zip(phases, (
            ["Embedding: ", "Indexing files: "],
            ["Loading the model: ", "Rating: 6/6 (100%)"],
            ["Training dpo"],
            ["Evaluating: ", "Win rate: 2/2 (100%)"],
            ["Evaluating: ", "Correctness: 2/2 (100%)", "Win rate: 2/2 (100%)"])):
        lines = phase.splitlines()[1:]
        assert all(any(line.startswith(e) for line in lines) for e in expected), (expected, lines)
    assert f"Workspace   {home}" in out
    rated = re.search(r"Rated       6 questions by longer: .* -> (\d+) pairs \((\d+) held out\)", out)
    pairs, held = map(int, rated.groups())
    assert pairs >= 4 and held == int(pairs * 0.25) >= 1
    # The pairs kept from training are the reward evaluator's held-out pairs.
    assert re.search(rf"Eval        reward accuracy \d\.\d\d over {held} held-out pairs", out)
    assert re.search(r"Trained     demo-dpo \(2 DPO steps, loss \d\.\d{4} -> \d\.\d{4}\)", out)
    assert "win rate vs base" in out and "retrieval: skipped" in out
    assert f"--adapter demo-dpo" in out and "adapters use demo-dpo" in out
    adapter = home / "adapters" / "demo-dpo"
    assert (adapter / "adapter_model.safetensors").exists()
    import sqlite3
    db = sqlite3.connect(home / "ragloop.db")
    raters = {r[0] for r in db.execute("select rater from comparisons")}
    # 6 judge ratings of sampled pairs, then 2 base-vs-adapter verdicts of the win rate and
    # 2 few-shot-vs-default-prompt verdicts.
    assert db.execute("select count(*) from comparisons").fetchone()[0] == 10
    assert raters == {"longer"}
    report = Path(re.search(r"Report      (\S+)", out).group(1))
    assert report.exists() and "winrate" in report.read_text()
    # Held-out correctness: the summary's numbers are the correctness evaluator's, which
    # checked both models' answers against the questions' reference answers.
    record = json.loads((report.parent / "metrics.json").read_text())
    m = record["evaluators"]["correctness"]["metrics"]
    assert m["questions"] == 2 and m["skipped_no_reference"] == 0
    assert (f"Eval        correctness: reference contained base {m['containment_base']:.2f} -> "
            f"adapter {m['containment_adapter']:.2f} ({m['containment_diff']:+.2f} "
            f"[{m['containment_diff_low']:+.2f}, {m['containment_diff_high']:+.2f}]), token F1 "
            f"{m['f1_base']:.2f} -> {m['f1_adapter']:.2f}, over 2 held-out questions") in out
    held = [json.loads(line) for line in (home / "held-out-questions.jsonl").read_text()
            .splitlines()]
    assert len(held) == 2 and all(q["answer"] and q["source"] for q in held)
    # The few-shot prompt against the default one, on the same questions: its own eval run.
    other = [f for f in (home / "runs").glob("eval-*/metrics.json") if f.parent != report.parent]
    assert len(other) == 1
    record = json.loads(other[0].read_text())
    m = record["evaluators"]["correctness"]["metrics"]
    w = record["evaluators"]["winrate"]["metrics"]
    assert (f"Few-shot    reference contained default prompt {m['containment_base']:.2f} -> "
            f"few-shot {m['containment_adapter']:.2f} ({m['containment_diff']:+.2f} ") in out
    assert (f"Few-shot    win rate vs the default prompt {w['win_rate']:.2f} "
            f"[{w['ci_low']:.2f}, {w['ci_high']:.2f}]") in out
    # A second run starts afresh in the same folder: one adapter, the same counts.
    out = demo(home, "--questions", 6, "--held-out", 2, "--max-steps", 1, "--max-new-tokens", 4,
               "--rater", "longer", *tiny()).output
    assert [p.name for p in (home / "adapters").iterdir()] == ["demo-dpo"]
    assert "Trained     demo-dpo (1 DPO steps" in out and (home / MARKER).exists()


def test_demo_keeps_out_of_a_real_workspace(tmp_path):
    home = tmp_path / "mine"
    (home / "adapters" / "precious").mkdir(parents=True)
    from ragloop.core.pipeline.demo import demo_home
    assert demo_home(home) == home / "demo"
    (home / "demo").mkdir()
    (home / "demo" / "notes.txt").write_text("mine")
    result = demo(home, "--questions", 1, *tiny(), ok=False)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("Error: ")
    assert "--home NEW_FOLDER" in result.output
    assert (home / "adapters" / "precious").exists() and (home / "demo" / "notes.txt").exists()


def test_demo_takes_home_after_the_command_too(tmp_path):
    home = tmp_path / "mine"
    (home / "demo").mkdir(parents=True)
    for folder in (home, home / "demo"):
        (folder / "notes.txt").write_text("mine")
    # The global --home names another (empty) folder: `demo --home` wins.
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "other"), "demo", "--home",
                                      str(home), "--questions", "1", *tiny()])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {home} and {home / 'demo'} both hold data that is not an earlier demo's; "
        f"run the demo with --home NEW_FOLDER")
    assert not (tmp_path / "other").exists()


def test_demo_options_must_name_their_part(tmp_path):
    result = demo(tmp_path / "ws", "-o", "model=x", ok=False)
    assert result.exit_code == 1 and "PART.key=value" in result.output
    assert not (tmp_path / "ws").exists()


@pytest.mark.slow
def test_demo_on_the_real_default_models(tmp_path, packaged_models):
    # The workspace an earlier demo leaves (the demo keeps its models/ folder), with the
    # models converted and exported once per session; the first run's conversion is
    # test_generator's to check.
    packaged_models.give(tmp_path / "ws")
    (tmp_path / "ws" / MARKER).write_text("made by `ragloop demo`\n")
    out = demo(tmp_path / "ws", "--questions", 4, "--held-out", 2, "--max-steps", 2,
               "--max-new-tokens", 24).output
    assert re.search(r"Trained     demo-dpo \(2 DPO steps", out)
    assert (tmp_path / "ws" / "adapters" / "demo-dpo" / "adapter_model.safetensors").exists()
