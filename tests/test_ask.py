"""`ragloop ask` and `logs` with a tiny random generator and embedder."""

import json
import re

import pytest
from cli_helpers import run
from tiny_models import tiny_causal_lm, tiny_embedder

from ragloop.core.workspace import Workspace

# What `ask` says on stderr when it is not a terminal (a spinner on one).
STATUS = re.compile(r"(Loading the model|Retrieving passages):? [\d:]+ elapsed")
PASSAGE = ("The zebrafish tool reads its settings from zebra.toml in the project folder. "
           "Set max_widgets to limit how many widgets each flurble may hold. ")



@pytest.fixture
def indexed(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"doc{i}.md").write_text(f"# Part {i}\n\n" + PASSAGE * 4)
    run("index", str(docs), "-o", f"embedder.model={tiny_embedder()}")
    return docs


def gen():
    return ["-o", f"model={tiny_causal_lm()}"]


def test_ask_prints_answer_and_sources_and_logs_the_row(indexed, ragloop_home):
    out = run("ask", "Where are zebrafish settings?", *gen(), "--max-new-tokens", "8",
              "-k", "2").stdout
    assert re.search(r"\n\nSources:\n\[1\] .*doc\d\.md:\d+-\d+ \(Part \d\)\n\[2\] ", out)
    rows = list(Workspace(ragloop_home).db.query("select * from asks"))
    assert len(rows) == 1
    row = rows[0]
    assert row["question"] == "Where are zebrafish settings?"
    assert len(json.loads(row["chunk_ids_json"])) == 2
    assert "Question: Where are zebrafish settings?" in row["prompt"]
    assert "\nSources:\n[1] " in row["prompt"] and row["answer"] == out.split("\n\nSources:")[0]
    params = json.loads(row["params_json"])
    assert params["max_new_tokens"] == 8 and params["temperature"] == 0.0
    assert json.loads(row["timings_json"])["generate_s"] > 0


def test_ask_json_and_logs_list(indexed):
    data = json.loads(run("ask", "max widgets?", *gen(), "--max-new-tokens", "5", "--json",
                          "--temperature", "0.8", "--seed", "3").stdout)
    assert data["answer"] and data["params"]["seed"] == 3
    # The tiny tokenizer spends many tokens per word: passages that do not fit are announced.
    left_out = sum(int(n.split()[0]) for n in data["notes"] if "left out" in n)
    assert len(data["sources"]) + left_out == 4
    logs = run("logs").output
    assert re.match(rf"{data['id']}  \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d  ", logs)
    assert "  Q: max widgets?" in logs
    listed = json.loads(run("logs", "--json", "-n", "1").stdout)
    assert listed[0]["id"] == data["id"] and listed[0]["params"]["seed"] == 3


def test_passages_are_dropped_to_fit_the_context_and_the_user_is_told(indexed):
    result = run("ask", "zebrafish?", *gen(), "--max-new-tokens", "700", "-k", "6", "--json")
    data = json.loads(result.stdout)
    assert 0 < len(data["sources"]) < 6
    assert any("left out to fit the model's context" in n for n in data["notes"])


def test_a_question_too_long_for_the_context_is_a_one_line_error(indexed):
    result = run("ask", "zebrafish " * 900, *gen(), "--max-new-tokens", "64", ok=False)
    assert result.exit_code == 1 and result.stdout == ""
    # Only the model can count the tokens: the error comes after loading, so a slow load
    # may have printed its status lines first.
    *before, error = result.stderr.splitlines()
    assert all(STATUS.fullmatch(line) for line in before), before
    assert re.fullmatch(r"Error: the question is \d+ tokens, too long for the model's context "
                        r"of \d+ tokens with 64 new tokens; shorten it or lower "
                        r"--max-new-tokens", error)


def test_loading_and_retrieving_are_told_on_stderr_and_stdout_is_only_the_answer(
        indexed, ragloop_home, monkeypatch):
    monkeypatch.setenv("RAGLOOP_PROGRESS_SECONDS", "0")
    result = run("ask", "Where are zebrafish settings?", *gen(), "--max-new-tokens", "8")
    lines = result.stderr.splitlines()
    assert all(STATUS.fullmatch(line) for line in lines), lines
    assert [STATUS.fullmatch(line)[1] for line in lines] == ["Loading the model",
                                                             "Retrieving passages"]
    (row,) = Workspace(ragloop_home).db.query("select answer from asks")
    assert result.stdout.startswith(row["answer"] + "\n\nSources:\n[1] ")


def test_ask_before_index_and_unknown_adapter():
    result = run("ask", "hello", ok=False)
    assert "run `ragloop index PATH` first" in result.output


def test_unknown_adapter_lists_what_exists(indexed, ragloop_home):
    (ragloop_home / "adapters" / "mine").mkdir(parents=True)
    result = run("ask", "hello", "--adapter", "nope", ok=False)
    assert result.output.strip() == "Error: no adapter named 'nope'; adapters: mine"
