"""`ragloop prefs stats`: counts, position bias and agreement on hand-computed cases."""

import json
from pathlib import Path

import pytest
from test_prefs import compare, item, run, score

from ragloop.core.ids import new_id
from ragloop.core.pipeline.prefs_stats import compute_stats
from ragloop.core.workspace import Workspace, utcnow


@pytest.fixture
def ws(ragloop_home):
    workspace = Workspace(ragloop_home)
    yield workspace
    workspace.close()


def rate_all(ws, table):
    """table: {rater id: choices per item, None = not rated}; one item per column."""
    items = [item(ws, f"i{j}") for j in range(len(next(iter(table.values()))))]
    for rater_id, choices in table.items():
        for it, choice in zip(items, choices):
            if choice:
                compare(ws, it, choice, rater_id=rater_id)
    return compute_stats(ws)["agreement"]


def test_cohen_kappa_for_two_raters_by_hand(ws):
    alice = ["a"] * 4 + ["b"] * 2 + ["a", "a", "tie", "b"]
    bob = ["a"] * 4 + ["b"] * 2 + ["b", "b", "tie", "tie"]
    # Observed agreement 7/10. Marginals: alice a 6, b 3, tie 1; bob a 4, b 4, tie 2.
    # Chance agreement (6*4 + 3*4 + 1*2) / 100 = 0.38; kappa = (0.7 - 0.38) / 0.62.
    result = rate_all(ws, {"alice": alice, "bob": bob, "carol": [None] * 10})
    assert result == {"raters": ["alice", "bob"], "shared_items": 10, "method": "cohen_kappa",
                      "value": round(0.32 / 0.62, 4), "observed": 0.7}


def test_agreement_reads_choices_relative_to_the_pair_not_its_storage_order(ws):
    it = item(ws, "p")
    compare(ws, it, "a", rater_id="alice")
    compare(ws, it, "b", rater_id="bob", swap=True)     # the same answer wins
    compare(ws, item(ws, "q"), "b", rater_id="alice")
    q = item(ws, "r")
    compare(ws, q, "a", rater_id="alice")
    compare(ws, q, "a", rater_id="bob", swap=True)      # the other answer wins
    assert compute_stats(ws)["agreement"]["observed"] == 0.5


def test_kappa_is_undefined_when_both_raters_always_give_the_same_label(ws):
    result = rate_all(ws, {"alice": ["a", "a"], "bob": ["a", "a"]})
    assert (result["value"], result["observed"]) == (None, 1.0)


def test_krippendorff_alpha_for_three_raters_by_hand(ws):
    # Coincidences: i0 and i1 give 3 a-a and 3 b-b; i2 gives a-a 1, a-b 1, b-a 1; i3 gives
    # 3 tie-tie. n = 12 (a 5, b 4, tie 3); alpha = 1 - (n-1) * 2 / (144 - 25 - 16 - 9) = 72/94.
    result = rate_all(ws, {"alice": ["a", "b", "a", "tie"], "bob": ["a", "b", "a", "tie"],
                           "carol": ["a", "b", "b", "tie"]})
    assert result == {"raters": ["alice", "bob", "carol"], "shared_items": 4,
                      "method": "krippendorff_alpha", "value": round(72 / 94, 4),
                      "observed": 0.75}


def test_krippendorff_alpha_with_missing_ratings_matches_the_published_example(ws):
    # The nominal example of the `krippendorff` package (3 coders, 15 units, values 1-4 with
    # gaps): alpha = 0.691358. Values 1-4 stand for a, b, tie, both-bad.
    rows = {"r1": ". . . . . 3 4 1 2 1 1 3 3 . 3", "r2": "1 . 2 1 3 3 4 3 . . . . . . .",
            "r3": ". . 2 1 3 4 4 . 2 1 1 3 3 . 4"}
    table = {rater_id: [None if v == "." else ["a", "b", "tie", "both-bad"][int(v) - 1]
                        for v in row.split()] for rater_id, row in rows.items()}
    result = rate_all(ws, table)
    assert (result["method"], result["value"], result["shared_items"]) == (
        "krippendorff_alpha", 0.6914, 12)


def test_position_bias_counts_left_wins_among_a_b_decisions(ws):
    for n, (choice, left_first) in enumerate([("a", True), ("b", False), ("a", True),
                                              ("a", False), ("tie", True)]):
        it = item(ws, f"i{n}")
        compare(ws, it, choice, left=it[1] if left_first else it[2])
    # Imported comparisons record no real screen side.
    compare(ws, item(ws, "imported"), "a", rater="import", rater_id="import")
    assert compute_stats(ws)["position_bias"] == {
        "decisions": 4, "left_wins": 3, "left_win_rate": 0.75, "p_value": 0.625}


@pytest.fixture
def mixed(ws):
    p, q, r = item(ws, "p"), item(ws, "q"), item(ws, "r")
    compare(ws, p, "a", rater_id="alice", left=p[1])
    compare(ws, p, "a", rater_id="bob", left=p[2])
    compare(ws, q, "tie", rater_id="alice")
    compare(ws, r, "skip", rater_id="alice")
    compare(ws, q, "both-bad", rater="judge", rater_id="judge@1")
    score(ws, p[1], 5)
    score(ws, p[2], 3)
    for relevant in (1, 0):
        ws.db["passage_judgments"].insert({
            "id": new_id(), "question_id": p[0], "chunk_id": 1, "chunk_text": "text",
            "relevant": relevant, "rater": "human", "rater_id": "alice", "created_at": utcnow()})
    ws.close()


def rater(name, rater_id, **counts):
    entry = {"rater": name, "rater_id": rater_id, "comparisons": 1, "skips": 0, "judged": 1,
             "a_or_b": 0, "ties": 0, "both_bad": 0, "left_wins": 0, "tie_rate": 0.0,
             "both_bad_rate": 0.0}
    return {**entry, **counts}


def test_stats_json(mixed):
    # Alpha over p (a, a) and q (tie, both-bad): n = 4, 2 disagreeing coincidences,
    # 16 - (4 + 1 + 1) = 10 expected pairs: 1 - 3 * 2 / 10 = 0.4.
    assert json.loads(run("prefs", "stats", "--json").stdout) == {
        "comparisons": 5, "skips": 1, "items": 2, "questions": 3, "candidates": 6,
        "raters": [rater("human", "alice", comparisons=3, skips=1, judged=2, a_or_b=1, ties=1,
                         left_wins=1, tie_rate=0.5),
                   rater("human", "bob", a_or_b=1),
                   rater("judge", "judge@1", both_bad=1, both_bad_rate=1.0)],
        "position_bias": {"decisions": 2, "left_wins": 1, "left_win_rate": 0.5, "p_value": 1.0},
        "agreement": {"raters": ["alice", "bob", "judge@1"], "shared_items": 2,
                      "method": "krippendorff_alpha", "value": 0.4, "observed": 0.5},
        "prompt_mismatch": 0,
        "scores": {"count": 2, "by_value": {"1": 0, "2": 0, "3": 1, "4": 0, "5": 1}},
        "passage_judgments": {"count": 2, "relevant": 1},
    }


def test_stats_text(mixed):
    assert run("prefs", "stats").stdout.splitlines() == [
        "Comparisons: 5 (1 skipped) on 2 items, 3 questions, 6 answers",
        "rater      rater id            rows   a/b   tie   bad  skip  tie %  bad %",
        "human      alice                  3     1     1     0     1     50      0",
        "human      bob                    1     1     0     0     0      0      0",
        "judge      judge@1                1     0     0     1     0      0    100",
        "Position bias: the left answer won 1 of 2 a/b decisions (50%, p = 1.0)",
        "Agreement: Krippendorff's alpha 0.400 over 2 items shared by 3 raters (50% identical)",
        "Scores: 2 (1:0 2:0 3:1 4:0 5:1); passage judgments: 2 (1 relevant)",
    ]


def test_stats_on_an_empty_workspace():
    assert run("prefs", "stats").stdout.splitlines() == [
        "Comparisons: 0 (0 skipped) on 0 items, 0 questions, 0 answers",
        "Agreement: no items rated by more than one rater yet",
        "Scores: 0 (1:0 2:0 3:0 4:0 5:0); passage judgments: 0 (0 relevant)",
    ]


def test_every_stats_key_is_documented(mixed, ragloop_home):
    docs = (Path(__file__).resolve().parent.parent / "docs" / "prefs.md").read_text()
    report = compute_stats(Workspace(ragloop_home))
    keys = set(report) | set(report["raters"][0]) | set(report["position_bias"]) | \
        set(report["agreement"])
    assert [k for k in sorted(keys) if f"`{k}`" not in docs] == []


def served(ws, it, first, second):
    """Mark an item's two answers as served by adapters `first` and `second`."""
    for cid, adapter in zip(it[1:], (first, second)):
        ws.db["serve_traces"].insert({"id": new_id(), "kind": "ask", "question": "q",
                                      "question_id": it[0], "candidate_id": cid,
                                      "adapter": adapter, "hits_json": "[]",
                                      "created_at": utcnow()})
    return it


def test_head_to_head_by_hand_per_pair_of_adapters(ws):
    # base vs x: x wins 2 (once stored the other way round), base wins 1, a tie, a both-bad;
    # alice's first vote on p is replaced by her later one. base vs y: y wins 1.
    p, q, r, s, t = (served(ws, item(ws, n), "base", "x") for n in "pqrst")
    compare(ws, p, "a", rater_id="alice")       # replaced below
    compare(ws, p, "b", rater_id="alice")       # x
    compare(ws, q, "a", rater_id="alice", swap=True)    # candidate_a is q's second: x
    compare(ws, r, "a", rater_id="bob")         # base
    compare(ws, s, "tie", rater_id="alice")
    compare(ws, t, "both-bad", rater_id="alice")
    compare(ws, t, "skip", rater_id="bob")      # no opinion
    u = served(ws, item(ws, "u"), "y", "base")
    compare(ws, u, "a", rater_id="alice")       # y
    same = served(ws, item(ws, "v"), "x", "x")  # two samples of one adapter: not counted
    compare(ws, same, "a", rater_id="alice")
    compare(ws, item(ws, "w"), "a", rater_id="alice")   # not served at all
    rows = compute_stats(ws)["head_to_head"]

    def row(me, other, wins, losses, ties=0, both_bad=0):
        decided = wins + losses
        return {"adapter": me, "opponent": other, "wins": wins, "losses": losses,
                "ties": ties, "both_bad": both_bad, "decided": decided,
                "win_rate": round(wins / decided, 4), "interval": wilson(wins, decided)}

    from ragloop.core.pipeline.prefs_stats import wilson
    assert rows == [row("base", "x", 1, 2, 1, 1), row("base", "y", 0, 1),
                    row("x", "base", 2, 1, 1, 1), row("y", "base", 1, 0)]
    assert wilson(2, 3) == (0.2077, 0.9385)
    lines = run("prefs", "stats").stdout.splitlines()
    assert lines[-4:] == [
        "Head to head, adapter base vs x: won 1 of 3 decided (33%, 95% interval 6-79%); "
        "1 tie, 1 both bad",
        "Head to head, adapter base vs y: won 0 of 1 decided (0%, 95% interval 0-79%); "
        "0 ties, 0 both bad",
        "Head to head, adapter x vs base: won 2 of 3 decided (67%, 95% interval 21-94%); "
        "1 tie, 1 both bad",
        "Head to head, adapter y vs base: won 1 of 1 decided (100%, 95% interval 21-100%); "
        "0 ties, 0 both bad"]
    assert run("eval", "--live").stdout.splitlines() == lines[-4:]


def test_a_head_to_head_with_only_ties_has_no_win_rate(ws):
    compare(ws, served(ws, item(ws, "p"), "base", "x"), "tie")
    first = compute_stats(ws)["head_to_head"][0]
    assert (first["decided"], first["ties"], first["win_rate"], first["interval"]) == \
        (0, 1, None, None)
    assert "Head to head, adapter base vs x: no decided verdicts yet; 1 tie, 0 both bad" in \
        run("prefs", "stats").stdout.splitlines()
