"""`ragloop rate` in-process with the judge (the human rater is driven in a real terminal
in test_rate_tty.py): what is stored, resume, candidates reuse, questions sources, bad input."""

import json
import re
from contextlib import contextmanager

import pytest
from cli_helpers import run
from tiny_models import tiny_causal_lm, tiny_embedder

from ragloop.core.components import Rater, StopRating
from ragloop.core.hookspecs import hookimpl
from ragloop.core.plugins import load_plugins, pm
from ragloop.core.workspace import Workspace
from ragloop.plugins.generators.transformers import model_identity

PASSAGE = ("The zebrafish tool reads its settings from zebra.toml in the project folder. "
           "Set max_widgets to limit how many widgets each flurble may hold. ")
QUESTIONS = ["Where are zebrafish settings?", "How many widgets may a flurble hold?",
             "What file holds the settings?"]
RATE_TABLES = ("questions", "candidates", "comparisons", "scores", "passage_judgments",
               "comments")



def gen(tokens="6"):
    return ["-o", f"model={tiny_causal_lm()}", "--max-new-tokens", tokens]


def judge(*args, **kw):
    return run("rate", "--rater", "judge", *gen(), *args, **kw)


@pytest.fixture
def indexed(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(4):
        (docs / f"doc{i}.md").write_text(f"# Part {i}\n\n" + PASSAGE)
    run("index", str(docs), "-o", f"embedder.model={tiny_embedder()}")
    return docs


@pytest.fixture
def qfile(tmp_path):
    path = tmp_path / "questions.txt"
    path.write_text("\n".join([QUESTIONS[0], "", "   ", *QUESTIONS[1:], QUESTIONS[0]]) + "\n")
    return path


def db(home):
    return Workspace(home).db


def counts(home):
    return {t: db(home)[t].count for t in RATE_TABLES}


@contextmanager
def rater_plugin(cls):
    class Plugin:
        @hookimpl
        def register_raters(self, register):
            register(cls)
    load_plugins()
    pm.register(Plugin(), name="test-rater")
    try:
        yield
    finally:
        pm.unregister(name="test-rater")


def test_judge_session_stores_questions_candidates_and_comparisons(indexed, qfile, ragloop_home):
    result = judge("--questions", str(qfile), "-k", "2", "--scores", "--passages")
    saved = re.findall(r"^Saved (\d)/3: (\S+)  (.+)$", result.stdout, re.M)
    assert [(n, q) for n, _, q in saved] == [("1", QUESTIONS[0]), ("2", QUESTIONS[1]),
                                             ("3", QUESTIONS[2])]
    assert {c for _, c, _ in saved} <= {"a", "b", "tie", "both-bad"}
    assert "Rating 3 of 3 questions as judge@3." in result.stderr
    d = db(ragloop_home)
    questions = {r["id"]: r for r in d["questions"].rows}
    assert sorted(q["text"] for q in questions.values()) == sorted(QUESTIONS)
    assert {q["origin"] for q in questions.values()} == {"file"}
    version = d["index_state"].get("default")["version"]
    chunk_ids = {r[0] for r in d.execute("select id from chunks")}
    comparisons = list(d["comparisons"].rows)
    assert len(comparisons) == 3 and len({c["session"] for c in comparisons}) == 1
    for c in comparisons:
        assert (c["rater"], c["rater_id"]) == ("judge", "judge@3")
        assert c["left_candidate"] in (c["candidate_a"], c["candidate_b"])
        a, b = d["candidates"].get(c["candidate_a"]), d["candidates"].get(c["candidate_b"])
        question = questions[c["question_id"]]["text"]
        for cand in (a, b):
            assert cand["question_id"] == c["question_id"]
            assert f"Question: {question}" in cand["prompt"]
            messages = json.loads(cand["messages_json"])
            assert messages[-1]["content"] in cand["prompt"]
            assert set(json.loads(cand["chunk_ids_json"])) <= chunk_ids
            assert len(json.loads(cand["scores_json"])) == len(json.loads(cand["chunk_ids_json"]))
            assert cand["index_version"] == version
            assert cand["model_id"] == model_identity(tiny_causal_lm())
            params = json.loads(cand["params_json"])
            assert params["temperature"] == 0.8 and params["seed"] == cand["seed"]
            assert params["k"] == 2 and params["max_new_tokens"] == 6
            assert params["batched"] == 3 and params["batch"] == 3   # all 3 questions at once
        assert a["seed"] != b["seed"] and a["messages_json"] == b["messages_json"]
        assert d["scores"].count_where("comparison_id = ?", [c["id"]]) == 2
        judged = d["passage_judgments"].count_where("comparison_id = ?", [c["id"]])
        assert judged == len(json.loads(a["chunk_ids_json"]))


def test_loading_and_generating_are_told_on_stderr_when_it_is_not_a_terminal(
        indexed, qfile, monkeypatch):
    monkeypatch.setenv("RAGLOOP_PROGRESS_SECONDS", "0")
    result = judge("--questions", str(qfile), "-k", "1")
    told = [line.split(": ")[0] for line in result.stderr.splitlines()
            if line.endswith(" elapsed")]
    # An automatic rater's answers come a batch at a time: the 3 questions' together.
    assert told == ["Loading the model", "Generating the answers to 3 questions together"]
    assert len(re.findall(r"^Saved \d/3: ", result.stdout, re.M)) == 3


def test_resume_rates_only_what_is_left_and_shares_candidates_between_raters(
        indexed, qfile, ragloop_home):
    first = judge("--questions", str(qfile), "-n", "1")
    assert "1 rated this session as judge@3" in first.stderr
    assert "Run the same command to continue." in first.stderr
    again = judge("--questions", str(qfile))
    assert "Rating 2 of 3 questions as judge@3 (1 already rated)." in again.stderr
    assert [line.split("  ", 1)[1] for line in again.stdout.splitlines()] == QUESTIONS[1:]
    assert counts(ragloop_home)["comparisons"] == 3
    done = judge("--questions", str(qfile))
    assert done.stdout == "All 3 questions are already rated by judge@3; nothing to do.\n"
    # Another rater id rates the same pairs: no new candidates, three shared items.
    judge("--questions", str(qfile), "--rater-id", "judge-b")
    assert counts(ragloop_home)["candidates"] == 6
    shared = db(ragloop_home).execute(
        "select count(*) from comparisons x join comparisons y on x.candidate_a = y.candidate_a "
        "and x.candidate_b = y.candidate_b where x.rater_id = 'judge@3' and "
        "y.rater_id = 'judge-b'").fetchone()[0]
    assert shared == 3


class Quitter(Rater):
    name = "test-quitter"

    def compare(self, item):
        raise StopRating("quit")


class Blunt(Rater):
    """A plugin may return a bare choice, like the example in docs/plugins.md."""
    name = "test-blunt"

    def compare(self, item):
        return "a" if len(item.answer_a) <= len(item.answer_b) else "b"


class Broken(Rater):
    name = "test-broken"

    def compare(self, item):
        return "left"


def test_quit_stores_no_rating_and_the_generated_pair_is_reused(indexed, qfile, ragloop_home):
    with rater_plugin(Quitter):
        result = run("rate", "--rater", "test-quitter", "--questions", str(qfile), *gen())
    assert "Stopped (quit): 0 rated this session as test-quitter" in result.stderr
    assert counts(ragloop_home)["comparisons"] == 0
    # The 3 questions' pairs were generated together, before the first verdict.
    assert counts(ragloop_home)["candidates"] == 6
    with rater_plugin(Blunt):
        run("rate", "--rater", "test-blunt", "--questions", str(qfile), *gen(), "-n", "1")
    d = db(ragloop_home)
    (comparison,) = d["comparisons"].rows
    assert d["candidates"].count == 6 and comparison["rater_id"] == "test-blunt"
    shown_left = d["candidates"].get(comparison["left_candidate"])
    other = comparison["candidate_b" if comparison["left_candidate"] == comparison["candidate_a"]
                       else "candidate_a"]
    right = d["candidates"].get(other)
    # The rater's "a" means the left answer; the stored choice names the candidate.
    winner = shown_left if len(shown_left["text"]) <= len(right["text"]) else right
    assert comparison[f"candidate_{comparison['choice']}"] == winner["id"]


def test_a_rater_returning_nonsense_is_a_one_line_error(indexed, qfile, ragloop_home):
    with rater_plugin(Broken):
        result = run("rate", "--rater", "test-broken", "--questions", str(qfile), *gen(), ok=False)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == ("Error: rater 'test-broken' returned 'left'; "
                                              "expected one of a, b, tie, both-bad or None to skip")
    assert counts(ragloop_home)["comparisons"] == 0


def test_jsonl_questions_and_questions_from_logs(indexed, tmp_path, ragloop_home):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": "x"}) + "\n"
                            for q in QUESTIONS[:2]))
    judge("--questions", str(path))
    origins = {r["text"]: r["origin_ref"] for r in db(ragloop_home)["questions"].rows}
    assert origins == {QUESTIONS[0]: f"{path}:1", QUESTIONS[1]: f"{path}:2"}
    asked = json.loads(run("ask", QUESTIONS[2], *gen(), "--json").stdout)["id"]
    run("ask", QUESTIONS[2], *gen())
    result = judge("--from-logs")
    assert "Rating 1 of 1 questions" in result.stderr
    row = db(ragloop_home)["questions"].get(
        db(ragloop_home).execute("select id from questions where origin = 'logs'").fetchone()[0])
    assert (row["text"], row["origin_ref"]) == (QUESTIONS[2], asked)


def test_base_vs_adapter_compares_greedy_answers_with_adapter_ids(indexed, qfile, ragloop_home):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm())
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(ragloop_home / "adapters" / "mini")
    judge("--questions", str(qfile), "-n", "1", "--candidates", "base-vs-adapter:mini")
    d = db(ragloop_home)
    (c,) = d["comparisons"].rows
    base, adapted = d["candidates"].get(c["candidate_a"]), d["candidates"].get(c["candidate_b"])
    assert base["adapter"] is None and re.fullmatch(r"mini@[0-9a-f]{12}", adapted["adapter"])
    for cand in (base, adapted):
        assert json.loads(cand["params_json"])["temperature"] == 0.0 and cand["seed"] is None


@pytest.mark.parametrize("content, message", [
    ("\n  \n\n", "holds no questions; write one per line, or JSONL with a \"question\" field"),
    ("ok?\n\n" + "why " * 600 + "\n", "line 3 is a question of 2399 characters; the limit is 2000"),
    ('{"question": "a?"}\n{"q": "b?"}\n', 'line 2 has no "question" text'),
    ('{"question": "a?"}\nnot json\n', "line 2 is not JSON (Expecting value)"),
])
def test_bad_questions_files(indexed, tmp_path, ragloop_home, content, message):
    path = tmp_path / "q.txt"
    path.write_text(content)
    result = judge("--questions", str(path), ok=False)
    assert result.exit_code == 1 and result.output.startswith(f"Error: {path} ")
    assert message in result.output and result.output.count("\n") == 1
    assert set(counts(ragloop_home).values()) == {0}


def test_nothing_indexed_yet(qfile, ragloop_home):
    result = judge("--questions", str(qfile), ok=False)
    assert result.output == "Error: nothing is indexed yet; run `ragloop index PATH` first\n"
    assert set(counts(ragloop_home).values()) == {0}


Q = ["--questions", "QFILE"]


@pytest.mark.parametrize("args, message", [
    (["--rater", "human", *Q], "Error: the human rater needs an interactive terminal and stdin "
                               "is not one; use `--rater judge` for automatic ratings"),
    (["--rater", "judge"], "Error: no questions: give --questions FILE or --from-logs (stdin "
                           "is not a terminal to type them in)"),
    (["--rater", "judge", "--from-logs"], "Error: no asks are logged yet"),
    (["--rater", "judge", "--from-logs", *Q], "Error: give --questions FILE or --from-logs, "
                                              "not both"),
    (["--rater", "nobody", *Q], "Error: unknown rater 'nobody'; available: human, judge"),
    (["--rater", "judge", *Q, "-o", "model=/no/such/model"],
     "Error: model folder '/no/such/model' does not exist"),
    (["--rater", "judge", *Q, "--candidates", "both"],
     "Error: --candidates 'both' is not understood"),
    (["--rater", "judge", *Q, "--temperature", "0"], "Error: --temperature must be above 0"),
    (["--rater", "judge", *Q, "--candidates", "base-vs-adapter:nope"],
     "Error: no adapter named 'nope'"),
    (["--rater", "judge", *Q, "--rater-id", " "], "Error: --rater-id is empty"),
])
def test_bad_invocations_write_nothing(indexed, qfile, ragloop_home, args, message):
    args = [str(qfile) if a == "QFILE" else a for a in args]
    result = run("rate", *args, ok=False)
    assert result.exit_code == 1 and result.output.startswith(message)
    assert result.output.count("\n") == 1
    assert set(counts(ragloop_home).values()) == {0}


@pytest.mark.slow
def test_two_questions_with_the_real_default_model_and_the_judge(ragloop_home,
                                                                packaged_models):
    from pathlib import Path
    packaged_models.give(ragloop_home)         # converted and exported once per session
    root = Path(__file__).parent.parent / "examples"
    run("index", str(root / "corpus"))
    result = run("rate", "--rater", "judge", "--questions", str(root / "questions.jsonl"),
                 "-n", "2", "--max-new-tokens", "48")
    assert len(re.findall(r"^Saved [12]/2: ", result.stdout, re.M)) == 2
    d = db(ragloop_home)
    assert d["comparisons"].count == 2
    texts = [r[0] for r in d.execute("select text from candidates")]
    assert len(texts) == 4 and all(t.strip() for t in texts)
    assert {r[0].split("@")[0] for r in d.execute("select model_id from candidates")} == {
        "SmolLM2-135M-Instruct"}
