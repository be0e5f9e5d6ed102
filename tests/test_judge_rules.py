"""The judge's rules beyond word overlap, on fixed examples (no embedder): both orders give
mirrored verdicts, a scorer that favoured a position would get a tie, names and numbers in
no passage cost, and passages beside the question count less."""

import pytest

from ragloop.core.components import Comparison
from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.plugins.raters.judge import JudgeOptions, JudgeRater, passage_weights, score
from ragloop.plugins.raters.judge_support import specifics, unsupported

PASSAGES = [
    "Ines Varga started the Ferrule project in 2019 to manage sleeve fittings for pipes.",
    "Ferrule is released under the Mozilla Public License 2.0 (MPL-2.0).",
]
QUESTION = "Who started the Ferrule project, and in which year?"
ANSWERS = [
    "Ines Varga started it in 2019 [1].",
    "John Smith started it in 2018 [1].",
    "It was started by Ines Varga.",
    "Ferrule uses the Mozilla Public License 2.0 [2].",
    "",
    "started started started started started started started started",
    "Ines Varga started it in 2019 [7].",
]
MIRROR = {"a": "b", "b": "a", "tie": "tie", "both-bad": "both-bad"}


def rater(**options):
    return JudgeRater(JudgeOptions(semantic=False, **options))


def compare(judge, a, b, passages=PASSAGES, question=QUESTION):
    return judge.compare(Comparison(question, passages, a, b)).choice


def test_swapped_order_gives_the_mirrored_verdict():
    judge = rater()
    seen = set()
    for a in ANSWERS:
        for b in ANSWERS:
            forward, backward = compare(judge, a, b), compare(judge, b, a)
            assert backward == MIRROR[forward], (a, b)
            seen.add(forward)
    assert seen == {"a", "b", "tie", "both-bad"}


class FirstShownBonus(JudgeRater):
    """A scorer with a position bias (the answer shown first gets +0.3), which the swap
    must cancel: judged in both orders, each side wins once, so every pair is a tie."""

    def compare(self, item):
        self._shown = 0
        return super().compare(item)

    def score(self, answer, item, cut_off, weights):
        result = super().score(answer, item, cut_off, weights)
        self._shown += 1
        bonus = 0.3 if self._shown % 2 == 1 else 0.0
        return type(result)(**{**result.__dict__, "total": result.total + bonus})


def test_a_position_bias_is_cancelled_by_the_swap():
    close = ("Ines Varga started it in 2019 [1].", "It was started by Ines Varga [1].")
    biased = FirstShownBonus(JudgeOptions(semantic=False, swap=False))
    assert compare(biased, *close) == "a" and compare(biased, *close[::-1]) == "a"
    swapped = FirstShownBonus(JudgeOptions(semantic=False, swap=True))
    assert compare(swapped, *close) == "tie" and compare(swapped, *close[::-1]) == "tie"


def test_names_and_numbers_in_no_passage_are_penalized():
    assert specifics("John Smith started it in 2018, see config.yaml.") == \
        ["John", "Smith", "2018", "config.yaml"]
    assert unsupported("John Smith started it in 2018.", PASSAGES, QUESTION) == \
        ["John", "Smith", "2018"]
    # Whole words: "201" is not in "2019".
    assert unsupported("It began in 201.", PASSAGES, QUESTION) == ["201"]
    true, false = ANSWERS[0], ANSWERS[1]
    assert score(true, PASSAGES, QUESTION).unsupported == ()
    made_up = score(false, PASSAGES, QUESTION)
    assert made_up.unsupported == ("John", "Smith", "2018")
    without = score(false, PASSAGES, QUESTION, unsupported_penalty=0.0)
    assert made_up.total == pytest.approx(without.total - 0.3)
    assert compare(rater(), false, true) == "b"


def test_a_name_from_the_question_is_not_unsupported():
    question = "Did Ines Varga write the Pipefit module?"
    assert unsupported("No, Pipefit was not hers.", PASSAGES, question) == []


def test_words_from_a_passage_beside_the_question_count_less():
    # Both answers quote a passage; only the first quotes the one about the question.
    weights = passage_weights(PASSAGES, QUESTION)
    assert weights[0] == 1.0 and weights[1] < 1.0
    on_topic = "Varga began it to manage sleeve fittings for pipes [1]."
    off_topic = "It is under the Mozilla Public License (MPL) [2]."
    assert compare(rater(), on_topic, off_topic) == "a"
    assert score(off_topic, PASSAGES, QUESTION).support < \
        score(off_topic, PASSAGES, QUESTION, weights=[1.0, 1.0]).support


def test_options_are_checked():
    assert build_config(JudgeOptions, ["unsupported=0", "semantic=false", "swap=false"],
                        "judge") == JudgeOptions(unsupported=0.0, semantic=False, swap=False)
    with pytest.raises(RagloopError, match="unsupported must be between 0 and 1"):
        build_config(JudgeOptions, ["unsupported=2"], "judge")
    with pytest.raises(RagloopError, match="unknown option 'margins'"):
        build_config(JudgeOptions, ["margins=0.1"], "judge")


@pytest.mark.parametrize("command", [["eval"], ["rate", "--rater", "judge", "--questions",
                                                 __file__]])
def test_rate_and_eval_give_rater_options_to_the_rater(tmp_path, command):
    from click.testing import CliRunner

    from ragloop.core.cli import cli
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), *command,
                                      "-o", "rater.unsupported=5"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "invalid options for judge: unsupported must be between 0 and 1" in result.output
