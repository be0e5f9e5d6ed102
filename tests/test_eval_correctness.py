"""The `correctness` evaluator: its metrics on hand-built answers, the paired bootstrap on
hand-built numbers, questions files and imports that carry references, and `ragloop eval
--evaluators winrate,correctness` end to end with a tiny model, sharing one pair of answers
per question."""

import json

import pytest
from cli_helpers import run
from test_eval import QUESTIONS, TRAINED, gen, one_line_error, report_folder
from test_eval import indexed, rated  # noqa: F401  (fixtures)
from tiny_models import tiny_causal_lm

from ragloop.core import paired_bootstrap
from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.rating_questions import from_file
from ragloop.core.pipeline.search import Hit
from ragloop.core.workspace import Workspace
from ragloop.plugins.generators.transformers import TransformersConfig, TransformersGenerator
from ragloop.plugins.evaluators.correctness import (
    cited,
    cites_source,
    compare,
    contains,
    normalize,
    same_document,
    score,
    token_f1,
)


def hit(path: str) -> Hit:
    return Hit(1, path, "", 1, 2, "text", 0.5)


# ---- the metrics ------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("The  Mozilla Public License, 2.0!", "mozilla public license 20"),
    ("An apple and a pear — the end.", "apple and pear end"),
    ("“Quoted” «text»", "quoted text"),
    ("Theory of atheism", "theory of atheism"),       # articles only as whole words
    ("the a an", ""),
])
def test_normalize_is_squad_style(text, expected):
    assert normalize(text) == expected


def test_containment_on_normalized_whole_words():
    assert contains("It is released under the Mozilla Public License 2.0 [1].",
                    "Mozilla Public License 2.0 (MPL-2.0)") is False   # the answer lacks MPL
    assert contains("Licensed: mozilla public license, 2.0 (MPL 2.0)", "Mozilla Public License "
                    "2.0 (MPL-2.0)") is False                          # MPL-2.0 -> mpl20
    assert contains("Licensed: Mozilla Public License 2.0 (MPL-2.0)!",
                    "the Mozilla Public License 2.0 (MPL-2.0)") is True
    assert contains("It was Ines Varga — in 2019 [2].", "Ines Varga, in 2019") is True
    assert contains("Ines Varga started it, in 2019 [2].", "Ines Varga, in 2019") is False
    assert contains("Started in 2019.", "2") is False                 # not inside a word
    assert contains("Answer [2] here.", "2") is False                 # citations are not content
    assert contains("anything", "The") is False                       # nothing left to find


def test_token_f1():
    assert token_f1("Ines Varga in 2019", "Ines Varga, in 2019") == 1.0
    # answer tokens: ines, varga, started, it; reference: ines, varga, in, 2019
    assert token_f1("Ines Varga started it [1]", "Ines Varga, in 2019") == pytest.approx(0.5)
    assert token_f1("the the", "the") == 1.0                          # both empty after articles
    assert token_f1("nothing shared", "Ines Varga") == 0.0
    assert token_f1("", "Ines") == 0.0
    # counted with multiplicity: one "b" of the answer's two matches
    assert token_f1("b b", "b c") == pytest.approx(0.5)


def test_citations_and_the_source_document():
    assert cited("See [2] and [1, 3], again [2]; not [9] or [0].", 3) == [2, 1, 3]
    assert same_document("/home/me/examples/corpus/ferrule/README.md", "ferrule/README.md")
    assert same_document("examples/corpus/x.md", "/srv/data/examples/corpus/x.md")
    assert same_document("C:\\data\\corpus\\x.md", "corpus/x.md")
    assert same_document("/a/docs/x.md", "x.md")
    assert not same_document("/a/ferrule/README.md", "loom/README.md")
    assert not same_document("/a/other.md", "x.md")
    passages = [hit("/w/corpus/loom/README.md"), hit("/w/corpus/ferrule/README.md")]
    assert cites_source("It is MPL [2].", passages, "ferrule/README.md")
    assert not cites_source("It is MPL [1].", passages, "ferrule/README.md")
    assert not cites_source("It is MPL.", passages, "ferrule/README.md")
    assert not cites_source("It is MPL [3].", passages, "ferrule/README.md")   # no passage 3
    assert score("MPL [2]", "MPL", None, passages) == {"containment": 1.0, "f1": 1.0}
    assert score("MPL [1]", "MPL", "ferrule/README.md", passages)["cites_source"] == 0.0


# ---- the interval -----------------------------------------------------------------------

def test_paired_bootstrap_on_hand_built_numbers():
    # Two items with differences 0 and 1: a resample's mean is 0, 0.5 or 1 (1/4, 1/2, 1/4),
    # so the 95% interval runs from 0 to 1.
    assert paired_bootstrap([0, 1], [0, 0]) == {"difference": 0.5, "low": 0.0, "high": 1.0}
    # No variation in the differences: no width.
    assert paired_bootstrap([0.7] * 5, [0.2] * 5) == pytest.approx(
        {"difference": 0.5, "low": 0.5, "high": 0.5})
    adapter, base = [1, 1, 1, 0, 1, 1, 0, 1, 1, 1], [0, 1, 0, 0, 1, 0, 0, 1, 0, 0]
    first = paired_bootstrap(adapter, base, seed=3)
    assert first == paired_bootstrap(adapter, base, seed=3)
    assert first["difference"] == pytest.approx(0.5)
    assert 0 < first["low"] < 0.5 < first["high"] <= 1
    narrow = paired_bootstrap(adapter, base, confidence=0.5, seed=3)
    assert first["low"] < narrow["low"] < narrow["high"] < first["high"]
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1], [1, 0])


def test_compare_reports_each_metric_over_the_questions_scored_on_it():
    details = [{"base": {"containment": 0.0, "f1": 0.2, "cites_source": 0.0},
                "adapter": {"containment": 1.0, "f1": 0.8, "cites_source": 1.0}},
               {"base": {"containment": 0.0, "f1": 0.4},
                "adapter": {"containment": 0.0, "f1": 0.4}}]
    m = compare(details, samples=200)
    assert m["containment_base"] == 0.0 and m["containment_adapter"] == 0.5
    assert m["containment_diff"] == 0.5 and m["f1_diff"] == pytest.approx(0.3)
    assert m["cites_source_base"] == 0.0 and m["cites_source_adapter"] == 1.0   # 1 question
    assert m["cites_source_diff_low"] == m["cites_source_diff_high"] == 1.0


# ---- questions files and imports ----------------------------------------------------------

def test_questions_files_carry_answer_and_source(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "a?", "answer": " MPL ", "source": "x/README.md"}\n'
                    '{"question": "b?"}\n{"question": "c?", "source": "y.md"}\n')
    a, b, c = from_file(path)
    assert (a.answer, a.source) == ("MPL", "x/README.md")
    assert (b.answer, b.source) == (None, None)
    assert (c.answer, c.source) == (None, "y.md")
    assert a.hash == from_file(_write(tmp_path / "plain.txt", "a?\n"))[0].hash


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("second, message", [
    ('{"question": "b?", "answr": "x"}', "line 2 has unknown field 'answr'; a line may hold "
                                         "question, answer, source"),
    ('{"question": "b?", "answer": 3}', "line 2: field 'answer' must be non-empty text"),
    ('{"question": "b?", "source": " "}', "line 2: field 'source' must be non-empty text"),
])
def test_malformed_reference_fields_name_the_line(tmp_path, second, message):
    path = _write(tmp_path / "q.jsonl", '{"question": "a?", "answer": "x"}\n' + second + "\n")
    with pytest.raises(RagloopError, match=message):
        from_file(path)
    result = run("rate", "--rater", "judge", "--questions", path, ok=False)
    one_line_error(result, message)


def test_prefs_import_accepts_a_reference_answer_and_refuses_a_bad_one(tmp_path):
    row = {"prompt": "p", "chosen": "yes", "rejected": "no", "question": "q?",
           "answer": "yes", "source": "docs/x.md"}
    good = _write(tmp_path / "good.jsonl", json.dumps(row) + "\n")
    assert "Imported" in run("prefs", "import", good).output
    bad = _write(tmp_path / "bad.jsonl", json.dumps(row) + "\n"
                 + json.dumps({**row, "answer": ["yes"]}) + "\n")
    one_line_error(run("prefs", "import", bad, ok=False),
                   "line 2: field 'answer' (a reference answer) must be non-empty text")


# ---- ragloop eval ---------------------------------------------------------------------------

def questions_file(tmp_path):
    """A trained-on question (left out), two with references (one with its source), one
    without a reference (skipped)."""
    lines = [{"question": QUESTIONS[0], "answer": "zebra.toml"},
             {"question": QUESTIONS[TRAINED], "answer": "zebra.toml", "source": "docs/doc1.md"},
             {"question": QUESTIONS[TRAINED + 1], "answer": "In the project folder"},
             {"question": QUESTIONS[TRAINED + 2]}]
    return _write(tmp_path / "held.jsonl", "".join(json.dumps(q) + "\n" for q in lines))


def stored_answers(home, question):
    """The base and adapter answers stored for `question`, every one (slot a is the base)."""
    return Workspace(home).db.execute(
        "select json_extract(c.params_json, '$.slot'), c.text from candidates c "
        "join questions q on q.id = c.question_id where q.text = ? and "
        "json_extract(c.params_json, '$.candidates') like 'base-vs-adapter:%' "
        "order by 1", [question]).fetchall()


def test_eval_scores_the_win_rates_answers_against_the_references(rated, tmp_path,
                                                                  ragloop_home):
    qfile = questions_file(tmp_path)
    result = run("eval", "--adapter", "a", *gen(), "--questions", qfile,
                 "--evaluators", "winrate,correctness", "--json")
    record = json.loads(result.stdout)
    c = record["evaluators"]["correctness"]
    m = c["metrics"]
    assert (m["questions"], m["with_source"], m["skipped_no_reference"]) == (2, 1, 1)
    assert "1 of 3 questions have no reference answer and were skipped" in c["notes"]
    for name in ("containment", "f1", "cites_source"):
        assert m[f"{name}_diff"] == pytest.approx(m[f"{name}_adapter"] - m[f"{name}_base"])
        assert m[f"{name}_diff_low"] <= m[f"{name}_diff"] <= m[f"{name}_diff_high"]
    # The very answers the win rate judged, generated once: one pair per question.
    winrate = {d["question"] for d in record["evaluators"]["winrate"]["details"]}
    assert winrate == set(QUESTIONS[TRAINED:])
    for d in c["details"]:
        (slot_a, base), (slot_b, adapter) = stored_answers(ragloop_home, d["question"])
        assert (slot_a, slot_b) == ("a", "b")
        assert d["base"]["f1"] == token_f1(base, d["reference"])
        assert d["adapter"]["containment"] == float(contains(adapter, d["reference"]))
    assert c["options"] == {"confidence": 0.95, "samples": 10000, "seed": 0}
    # The win rate, first, had each model answer its 3 questions as one batch
    # (rating_batches.py); greedy, so the answers are those of one by one.
    batched = Workspace(ragloop_home).db.execute(
        "select json_extract(c.params_json, '$.slot'), c.messages_json, c.text, "
        "json_extract(c.params_json, '$.batched') from candidates c "
        "where json_extract(c.params_json, '$.candidates') like 'base-vs-adapter:%'").fetchall()
    assert len(batched) == 6 and {row[3] for row in batched} == {3}
    base = TransformersGenerator(TransformersConfig(model=str(tiny_causal_lm())))
    for slot, messages, text, _ in batched:
        if slot == "a":
            assert text == "".join(base.generate(json.loads(messages), max_new_tokens=6))

    # Alone, on a second run: the stored pairs are read back, nothing is generated again.
    again = run("eval", "--adapter", "a", *gen(), "--questions", qfile,
                "--evaluators", "correctness")
    line = again.stdout.splitlines()[0]
    assert line.startswith("correctness: containment ") and "cites_source" in line
    assert line.endswith("(2 questions, 1 without a reference skipped)")
    assert len(stored_answers(ragloop_home, QUESTIONS[TRAINED])) == 2
    report = (report_folder(again.stdout) / "report.md").read_text()
    assert "| skipped_no_reference | 1 |" in report and "| containment_diff_low |" in report


def test_eval_without_references(rated, tmp_path, ragloop_home):
    one_line_error(run("eval", "--adapter", "a", *gen(), "--evaluators", "correctness",
                       ok=False), 'correctness needs questions with a reference answer',
                   '"question" and "answer"')
    plain = _write(tmp_path / "plain.txt", QUESTIONS[TRAINED] + "\n")
    one_line_error(run("eval", "--adapter", "a", *gen(), "--evaluators", "correctness",
                       "--questions", plain, ok=False), '"answer"')
    # Run among all evaluators (the default), it is skipped, saying why, and the others run.
    result = run("eval", "--adapter", "a", *gen(), "--questions", plain)
    assert "correctness: skipped: none of the 1 held-out questions from" in result.stdout

