"""The judge rater on fixed examples: grounded beats ungrounded, citations and repetition
count, empty loses, and the same inputs always give the same verdict."""

from ragloop.core import registry
from ragloop.core.components import Comparison, Verdict
from ragloop.plugins.raters.judge import VERSION, JudgeOptions, JudgeRater, score

PASSAGES = [
    "Ferrule is released under the Mozilla Public License 2.0 (MPL-2.0). Contributions are "
    "accepted under the same license.",
    "Ines Varga started the Ferrule project in 2019 to manage sleeve fittings for pipes.",
]
QUESTION = "What license is Ferrule released under?"
GROUNDED = "Ferrule uses the Mozilla Public License 2.0 [1]."
UNGROUNDED = "Ferrule is distributed under the GNU General Public License version 3, by Oracle."


def judge(a, b, *, cut_off=(False, False), passages=PASSAGES, **flags):
    # Word overlap only: the one test that loads the embedder is in test_judge_semantic.py.
    item = Comparison(QUESTION, passages, a, b, cut_off=cut_off, **flags)
    return JudgeRater(JudgeOptions(semantic=False)).compare(item)


def test_the_grounded_answer_wins_in_either_position():
    assert judge(GROUNDED, UNGROUNDED).choice == "a"
    assert judge(UNGROUNDED, GROUNDED).choice == "b"


def test_grounded_without_citation_still_beats_ungrounded():
    assert judge("It is the Mozilla Public License 2.0.", UNGROUNDED).choice == "a"


def test_same_inputs_same_verdict():
    first = judge(GROUNDED, UNGROUNDED, ask_scores=True, ask_passages=True)
    for _ in range(5):
        assert judge(GROUNDED, UNGROUNDED, ask_scores=True, ask_passages=True) == first


def test_invalid_citations_are_penalized():
    valid = "Ferrule uses the Mozilla Public License 2.0 [1]."
    invalid = "Ferrule uses the Mozilla Public License 2.0 [7]."
    assert judge(valid, invalid).choice == "a"
    s = score(invalid, PASSAGES, QUESTION)
    assert (s.valid_citations, s.invalid_citations) == (0, 1)
    assert s.total < score("Ferrule uses the Mozilla Public License 2.0.", PASSAGES, QUESTION).total


def test_repetition_is_penalized():
    once = "The license is the Mozilla Public License 2.0 [1]."
    looped = "The license is the Mozilla Public License 2.0 [1]. " * 3
    assert judge(looped, once).choice == "b"
    assert score(looped, PASSAGES, QUESTION).repetition > 0.3


def test_empty_loses_and_two_empty_are_both_bad():
    assert judge("", UNGROUNDED).choice == "b"
    assert judge("Mozilla [1].", "   \n").choice == "a"
    assert judge("", "").choice == "both-bad"
    assert judge("?? 12 ...", "mpl mpl mpl mpl mpl mpl mpl mpl").choice == "both-bad"


def test_an_answer_cut_off_mid_sentence_loses_to_a_finished_one():
    finished = "Ferrule uses the Mozilla Public License 2.0."
    cut = "Ferrule uses the Mozilla Public License 2.0 and"
    assert judge(cut, finished, cut_off=(True, False)).choice == "b"
    # Not at the token limit, the same text is not cut off: nothing to penalize.
    assert not score(cut, PASSAGES, QUESTION, cut_off=False).cut_off


def test_the_unfinished_sentence_of_a_cut_answer_is_not_judged():
    quoted = ("Ferrule is released under the Mozilla Public License 2.0 (MPL-2.0). It was "
              "started in 2019 and since version 7")
    whole = score(quoted, PASSAGES, QUESTION, cut_off=False)
    cut = score(quoted, PASSAGES, QUESTION, cut_off=True)
    assert whole.unsupported == ("7",)
    assert cut.cut_off and cut.unsupported == ()
    # Scored on its finished sentence, less the cut-off penalty.
    finished = score("Ferrule is released under the Mozilla Public License 2.0 (MPL-2.0).",
                     PASSAGES, QUESTION)
    assert cut.total == round(finished.total - 0.1, 6)
    # It beats a finished answer that names the wrong license.
    assert judge(quoted, UNGROUNDED, cut_off=(True, False)).choice == "a"
    # With no finished sentence there is nothing to keep: the whole text is judged.
    fragment = "Ferrule is released under the Mozilla Public License 2.0 and version 7"
    assert score(fragment, PASSAGES, QUESTION, cut_off=True).unsupported == ("7",)


def test_close_scores_are_a_tie():
    assert judge(GROUNDED, GROUNDED).choice == "tie"
    assert judge("BSD, from Oracle.", "Apache, from Google.").choice == "tie"  # both unsupported


def test_restating_the_question_is_not_support():
    echo = "What license is Ferrule released under? Ferrule is released under a license."
    assert score(echo, PASSAGES, QUESTION).support == 0.0
    assert judge(echo, GROUNDED).choice == "b"


def test_scores_and_passage_judgments_when_asked():
    verdict = judge(GROUNDED, "", ask_scores=True, ask_passages=True)
    assert verdict == Verdict("a", scores=(verdict.scores[0], 1), relevant=[True, False])
    assert 4 <= verdict.scores[0] <= 5
    assert judge(GROUNDED, "").scores is None and judge(GROUNDED, "").relevant is None


def test_registered_with_a_versioned_rater_id():
    cls = registry.get_rater("judge")
    assert cls is JudgeRater and cls().default_rater_id() == f"judge@{VERSION}"


def test_a_url_is_supported_only_when_a_passage_holds_all_of_it():
    passages = ["Ask in the Matrix room, see https://matrix.to/#/#ferrule:larchfield.dev today."]
    real = "Ask in the Matrix room: https://matrix.to/#/#ferrule:larchfield.dev."
    fake = "Ask in the Matrix room: https://www.example.com/ferrule-chat."
    assert score(real, passages, "Where to ask?").support == 1.0
    assert score(fake, passages, "Where to ask?").support < 1.0
    assert judge(fake, real, passages=passages).choice == "b"
