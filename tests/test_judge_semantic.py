"""The judge's semantic support with the real packaged all-MiniLM-L6-v2 (the one judge test
that loads an embedder): a paraphrase that shares no content word with its passage wins
where word overlap alone sees a tie, and a sentence close in meaning but with a name or a
number no passage holds earns nothing from meaning; the judge takes the embedder's model
already loaded in the process."""

from ragloop.core.components import Comparison
from ragloop.plugins.raters.judge import JudgeOptions, JudgeRater, workspace_embedder


def test_meaning_decides_where_words_miss():
    held = workspace_embedder(None)     # as a session's searcher holds the workspace's embedder
    held.encode(["loaded", "before", "the judge"])
    overlap = JudgeRater(JudgeOptions(semantic=False))
    semantic = JudgeRater(JudgeOptions(semantic=True))     # no workspace: the default embedder
    mail = Comparison(
        "What happens to mail I remove?",
        ["Deleted messages are kept in the trash for thirty days before they are erased."],
        "Removed mail stays in the bin for a month, then it is gone.",
        "It is sent back to the sender.")
    bus = Comparison(
        "Do kids pay a fare on the bus?", ["Children under twelve travel free on all city buses."],
        "Yes, everyone pays the full price.", "Young kids ride without paying.")
    for item, right in ((mail, "a"), (bus, "b")):
        assert overlap.compare(item).choice == "tie"
        assert semantic.compare(item).choice == right

    passages = ["Ferrule is released under the Mozilla Public License 2.0 (MPL-2.0)."]
    question = "What license is Ferrule released under?"
    wrong = "Ferrule is distributed under the GNU General Public License version 3."
    right = "Ferrule uses the MPL, version 2.0."
    assert semantic.score(wrong, Comparison(question, passages, wrong, right), False,
                          [1.0]).support == overlap.score(
        wrong, Comparison(question, passages, wrong, right), False, [1.0]).support
    assert semantic.compare(Comparison(question, passages, wrong, right)).choice == "b"
    assert semantic.semantic._embedder is not None        # loaded once, kept for the session
    # The judge's embedder took the model loaded already instead of loading it again.
    assert semantic.semantic._embedder is not held
    assert semantic.semantic._embedder.model is held.model
