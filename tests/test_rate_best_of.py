"""`rate --candidates best-of-N`: N samples of one prompt ranked by the rater in a round robin,
best vs worst recorded with its provenance (core/pipeline/rating_candidates.py), and the
bad-input lines."""

import json

import pytest
from cli_helpers import run
from test_rate import counts, db, gen, indexed, qfile  # noqa: F401  (fixtures)

from ragloop.core.pipeline.prefs import build_rows
from ragloop.core.pipeline.rating_candidates import Ranking
from ragloop.core.workspace import Workspace


def test_round_robin_picks_best_and_worst_and_drops_ties():
    r = Ranking(4, {(0, 1): "b", (0, 2): "b", (0, 3): "tie", (1, 2): "a", (1, 3): "a",
                    (2, 3): "a"})
    assert r.scores == [round(0.5 / 3, 6), 1.0, round(2 / 3, 6), round(0.5 / 3, 6)]
    assert r.order() == [1, 2, 0, 3]             # equal scores keep sampling order
    assert r.pairs() == [(1, 3, "a")]
    # With a margin, every other pair that far apart whose own verdict agrees.
    assert r.pairs(margin=0.5) == [(1, 3, "a"), (1, 0, "a"), (2, 0, "a"), (2, 3, "a")]
    assert Ranking(3, {(0, 1): "tie", (0, 2): "tie", (1, 2): "tie"}).pairs() == [(0, 2, "tie")]
    bad = Ranking(2, {(0, 1): "both-bad"})
    assert bad.pairs() == [(0, 1, "tie")]        # equal scores: nothing stands out
    worst_bad = Ranking(3, {(0, 1): "a", (0, 2): "both-bad", (1, 2): "a"})
    assert worst_bad.order() == [0, 1, 2] and worst_bad.pairs() == [(0, 2, "both-bad")]
    # A cycle: equal scores, not trained.
    assert Ranking(3, {(0, 1): "a", (1, 2): "a", (0, 2): "b"}).pairs()[0][2] == "tie"


def test_judge_ranks_best_of_three_and_export_gives_best_over_worst(indexed, qfile,  # noqa: F811
                                                                    ragloop_home):
    result = run("rate", "--rater", "judge", *gen("12"), "--questions", str(qfile),
                 "--candidates", "best-of-3", "-n", "2")
    assert result.stdout.count("Saved ") == 2
    d = db(ragloop_home)
    rankings = list(d.query("select * from rating_rankings order by created_at"))
    assert len(rankings) == 2
    trained, seeds = set(), []
    for ranking in rankings:
        ids = json.loads(ranking["candidate_ids_json"])
        cands = [d["candidates"].get(i) for i in ids]
        params = [json.loads(c["params_json"]) for c in cands]
        assert [p["slot"] for p in params] == ["0", "1", "2"]
        assert {p["best_of"] for p in params} == {3} and len({c["seed"] for c in cands}) == 3
        # An automatic rater's sets come a group at a time (rating_batches.py): both
        # questions' in one generate_many call.
        assert {p["batched"] for p in params} == {2}
        seeds += [c["seed"] for c in cands]
        assert len({c["prompt"] for c in cands}) == 1
        verdicts = json.loads(ranking["verdicts_json"])
        assert sorted((i, j) for i, j, _ in verdicts) == [(0, 1), (0, 2), (1, 2)]
        again = Ranking(3, {(i, j): c for i, j, c in verdicts})
        assert json.loads(ranking["scores_json"]) == again.scores
        (comparison_id,) = json.loads(ranking["comparison_ids_json"])
        c = d["comparisons"].get(comparison_id)
        best, worst, choice = again.pairs()[0]
        assert (c["candidate_a"], c["candidate_b"], c["choice"]) == (ids[best], ids[worst],
                                                                    choice)
        if choice == "a":
            trained.add((ids[best], ids[worst]))
    # Set q of the call drew with seeds seed+3q .. seed+3q+2.
    assert sorted(seeds) == list(range(min(seeds), min(seeds) + 6))
    rows = build_rows(Workspace(ragloop_home), "pairs")
    assert {(r["chosen_id"], r["rejected_id"]) for r in rows} == trained
    # Resumed: the rated questions are done, the stored set of the third is not regenerated.
    before = counts(ragloop_home)["candidates"]
    run("rate", "--rater", "judge", *gen("12"), "--questions", str(qfile),
        "--candidates", "best-of-3")
    assert counts(ragloop_home)["candidates"] == before + 3
    assert db(ragloop_home)["rating_rankings"].count == 3


@pytest.mark.parametrize("args, message", [
    (["--candidates", "best-of-1"], "Error: --candidates best-of-1: N must be at least 2"),
    (["--candidates", "best-of-17"], "Error: --candidates best-of-17: at most best-of-16; "
                                     "each question would take 136 verdicts"),
    (["--candidates", "best-of-x"], "Error: --candidates 'best-of-x': N must be a whole number"),
    (["--candidates", "best-of-4", "--temperature", "0"],
     "Error: --temperature 0 gives one greedy answer, not 4 different ones; --candidates "
     "best-of-4 needs a temperature above 0"),
    (["--margin", "0.3"], "Error: --margin is for --candidates best-of-N"),
    (["--candidates", "best-of", "--margin", "2"], "Error: --margin 2 is not a score difference"),
    (["--candidates", "best-of", "--scores"], "Error: --scores and --passages are not asked "
                                              "with --candidates best-of"),
])
def test_best_of_bad_input_is_one_line_and_writes_nothing(indexed, qfile,  # noqa: F811
                                                          ragloop_home, args, message):
    result = run("rate", "--rater", "judge", *gen(), "--questions", str(qfile), *args, ok=False)
    assert result.exit_code == 1 and result.output.startswith(message), result.output
    assert result.output.count("\n") == 1
    assert set(counts(ragloop_home).values()) == {0}
