"""The `reference` rater: verdicts on hand-built answers (containment first, a clear token F1
difference next, a tie otherwise), questions without a reference left out and counted, and
`rate --rater reference --candidates best-of-3` with a tiny model end to end, its
comparisons exported as DPO pairs whose chosen answer contains the reference."""

import json

import pytest
from cli_helpers import run
from test_rate import QUESTIONS, counts, db, gen, indexed  # noqa: F401  (fixtures)

from ragloop.core import Comparison, Verdict, contains_reference, normalize_answer, registry
from ragloop.core.plugins import load_plugins
from ragloop.plugins.evaluators import correctness
from ragloop.plugins.raters.reference import ReferenceOptions, ReferenceRater, decide

MPL = "Mozilla Public License 2.0"


# ---- verdicts on hand-built answers ------------------------------------------------------

@pytest.mark.parametrize("a, b, expected", [
    # exactly one contains the reference: it wins, whatever its F1
    ("Ferrule is released under the Mozilla Public License 2.0 [1], a weak copyleft licence "
     "that lets you combine it with code under other terms.", "The MIT License.", "a"),
    ("It uses the Mozilla Public License.", "Licensed as Mozilla Public License, 2.0 [2].",
     "b"),                                     # punctuation and citations are normalized away
    # both contain it: the clearly higher F1 (the one that says little else) wins
    ("Mozilla Public License 2.0 [1].",
     "Ferrule, like many tools of its kind, is released under the Mozilla Public License 2.0, "
     "which you can read in the LICENSE file at the top of the repository.", "a"),
    # both contain it, F1 close: a tie, not a preference
    ("It is the Mozilla Public License 2.0.", "The Mozilla Public License 2.0, it is!", "tie"),
    # neither contains it: a clear F1 difference decides (most of the reference's words)
    ("Mozilla Public License", "The GNU General Public License, version 3.", "a"),
    # neither, and both equally far: a tie
    ("The MIT License.", "The Apache License.", "tie"),
    ("", "", "tie"),
])
def test_containment_first_then_a_clear_f1_difference(a, b, expected):
    assert decide(a, b, MPL) == expected
    mirrored = {"a": "b", "b": "a", "tie": "tie"}[expected]
    assert decide(b, a, MPL) == mirrored                  # blind to position


def test_whole_words_and_the_margin_decide_what_clear_means():
    assert decide("Version 2019 of it.", "Version 2 of it.", "2") == "b"
    close = ("Mozilla Public License 2.0 is the licence.", "Mozilla Public License 2.0, it.")
    assert decide(*close, MPL) == "tie"
    # The same two answers with a margin small enough to separate them: the shorter wins.
    assert decide(*close, MPL, f1_margin=0.01) == "b"
    with pytest.raises(ValueError, match="f1_margin must be above 0"):
        ReferenceOptions(f1_margin=0)


def test_the_rater_shares_containment_with_the_correctness_evaluator():
    assert correctness.contains is contains_reference
    assert correctness.normalize is normalize_answer
    load_plugins()
    cls = registry.get_rater("reference")
    assert cls is ReferenceRater and cls.needs_reference
    rater = cls(cls.Config())
    assert rater.default_rater_id() == "reference@1"


def test_verdict_scores_passages_and_a_question_without_a_reference():
    rater = ReferenceRater(ReferenceOptions())
    item = Comparison("Which licence?", ["Ferrule is under the Mozilla Public License 2.0.",
                                         "Ferrule is fast."],
                      "The MIT License.", "Mozilla Public License 2.0 [1].",
                      ask_scores=True, ask_passages=True, reference=MPL)
    verdict = rater.compare(item)
    # MIT shares one word of four with the reference: F1 1/3, so 1 + 3 × 1/3 = 2.
    assert verdict == Verdict("b", scores=(2, 5), relevant=[True, False])
    item.reference = None
    assert rater.compare(item) is None          # nothing to check against: skipped


# ---- rate --rater reference --------------------------------------------------------------

def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_questions_without_a_reference_are_left_out_and_counted(indexed, tmp_path,  # noqa: F811
                                                                ragloop_home):
    qfile = write_jsonl(tmp_path / "q.jsonl", [
        {"question": QUESTIONS[0], "answer": "zebra.toml"},
        {"question": QUESTIONS[1]},
        {"question": QUESTIONS[2], "answer": "zebra.toml", "source": "doc0.md"}])
    result = run("rate", "--rater", "reference", *gen(), "-k", "2", "--questions", qfile)
    assert "Rating 2 of 2 questions as reference@1." in result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == (
        "1 question without a reference answer left out: the reference rater needs one.")
    d = db(ragloop_home)
    assert sorted(r["text"] for r in d["questions"].rows) == sorted([QUESTIONS[0],
                                                                    QUESTIONS[2]])
    comparisons = list(d["comparisons"].rows)
    assert len(comparisons) == 2
    assert {(c["rater"], c["rater_id"]) for c in comparisons} == {("reference", "reference@1")}
    assert {c["choice"] for c in comparisons} <= {"a", "b", "tie"}


@pytest.mark.parametrize("lines, message", [
    ([QUESTIONS[0], QUESTIONS[1]], "Error: none of the 2 questions has a reference answer; "
                                   "the reference rater needs questions with a reference "
                                   'answer: give --questions FILE, JSONL lines with "question" '
                                   'and "answer"'),
    ([json.dumps({"question": QUESTIONS[0]})], "Error: the question has no reference "
                                               "answer;"),
])
def test_no_question_with_a_reference_is_a_one_line_error(indexed, tmp_path,  # noqa: F811
                                                          ragloop_home, lines, message):
    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join(lines) + "\n")
    result = run("rate", "--rater", "reference", *gen(), "--questions", qfile, ok=False)
    assert result.exit_code == 1 and result.output.startswith(message), result.output
    assert result.output.count("\n") == 1
    assert set(counts(ragloop_home).values()) == {0}


def distinguishing_word(texts: list[str]) -> tuple[int, str] | None:
    """(i, a word that texts[i] contains and no other text does), or None."""
    for i, text in enumerate(texts):
        for word in sorted(set(normalize_answer(text).split())):
            if len(word) > 2 and contains_reference(text, word) and not any(
                    contains_reference(t, word) for j, t in enumerate(texts) if j != i):
                return i, word
    return None


def test_best_of_three_with_references_exports_pairs_whose_chosen_contains_it(
        indexed, tmp_path, ragloop_home):  # noqa: F811
    settings = [*gen("12"), "-k", "2", "--candidates", "best-of-3"]
    plain = tmp_path / "q.txt"
    plain.write_text("\n".join(QUESTIONS) + "\n")
    # The judge's session samples the sets; the reference rater then rates the very same
    # sets (candidates are shared between raters under the same settings), with references
    # chosen from them: a word that exactly one of a question's three answers holds.
    run("rate", "--rater", "judge", "--rater-id", "sampler", *settings, "--questions", plain)
    d = db(ragloop_home)
    references, expected = [], {}
    for ranking in d["rating_rankings"].rows:
        ids = json.loads(ranking["candidate_ids_json"])
        texts = [d["candidates"].get(i)["text"] for i in ids]
        found = distinguishing_word(texts)
        if found:
            question = d["questions"].get(ranking["question_id"])["text"]
            references.append({"question": question, "answer": found[1]})
            expected[question] = ids[found[0]]
    assert references, "the tiny model's samples should differ in at least one word"
    before = counts(ragloop_home)["candidates"]
    qfile = write_jsonl(tmp_path / "q.jsonl", references)
    result = run("rate", "--rater", "reference", *settings, "--questions", qfile)
    assert result.stdout.count("Saved ") == len(references)
    assert counts(ragloop_home)["candidates"] == before          # the stored sets, reused
    out = tmp_path / "pairs.jsonl"
    run("prefs", "export", "--kind", "pairs", "--rater", "reference@1", "--out", out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(references)
    by_question = {r["question"]: r for r in rows}
    for ref in references:
        row = by_question[ref["question"]]
        assert row["chosen_id"] == expected[ref["question"]]
        assert contains_reference(row["chosen"], ref["answer"])
        assert not contains_reference(row["rejected"], ref["answer"])
        assert row["prompt"] and row["rater_id"] == "reference@1"
