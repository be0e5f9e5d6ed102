"""`ragloop serve --ab` put live: `/v1/compare` answers with two different adapters of the A/B
set (the base model and a tiny LoRA adapter), each recorded on its trace; verdicts and thumbs
sent to a real uvicorn server come out of `prefs stats` and `eval --live` as the exact counts
and Wilson intervals computed here from what was posted, and as pairs whose answers name
their adapters."""

import json
import sqlite3

import httpx
import pytest
from cli_helpers import run
from test_eval import make_adapter
from test_serve_api import make_workspace, settings

from ragloop.core.pipeline.prefs_stats import wilson
from ragloop.core.serve.server import Serving

AB = (("base", 0.5), ("tuned", 0.5))
# (rater, verdict) per comparison; alice then changes her mind on the first: latest counts.
VERDICTS = [("alice", "a"), ("alice", "b"), ("alice", "tie"), ("alice", "both-bad"),
            ("alice", "a"), ("bob", "b"), ("alice", "b")]
QUESTIONS = ["what does part 1 mention?", "what is gadget2?", "where are the settings?",
             "which part mentions gadget4?", "tell me about zebra.toml", "what is gadget0?"]


@pytest.fixture(scope="module")
def ab(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-ab")
    home = root / "home"
    make_workspace(home, root / "docs")
    make_adapter(home, "tuned")
    with Serving(settings(home, ab=AB)) as s:
        s.home = home
        s.client = httpx.Client(base_url=s.url, timeout=300)
        yield s
        s.client.close()


def adapters_of(home, trace_ids) -> list:
    """The adapter each answer trace records, and its candidate's adapter column."""
    db = sqlite3.connect(home / "ragloop.db")
    try:
        return [db.execute("select t.adapter, c.adapter from serve_traces t join candidates c "
                           "on c.id = t.candidate_id where t.id = ?", [t]).fetchone()
                for t in trace_ids]
    finally:
        db.close()


def test_compare_puts_two_adapters_head_to_head_and_stats_count_it(ab):
    shown = []
    for question in QUESTIONS:
        r = ab.client.post("/v1/compare", json={"question": question, "max_new_tokens": 6,
                                                "k": 2}, headers={"X-User": "alice"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["head_to_head"] is True and body["adapter"] is None     # still blind
        (a_label, a_path), (b_label, b_path) = adapters_of(
            ab.home, [body["a"]["trace_id"], body["b"]["trace_id"]])
        assert {a_label, b_label} == {"base", "tuned"}
        # The candidates' own provenance: no adapter for base, the adapter's folder for tuned.
        paths = {a_label: a_path, b_label: b_path}
        assert paths["base"] is None and "tuned" in paths["tuned"]
        shown.append((body, a_label, b_label))

    # Verdicts, and the exact tallies they make, per rater's latest vote on each pair.
    latest = {}
    for n, (rater, verdict) in enumerate(VERDICTS):
        body, a_label, b_label = shown[n % len(shown)]
        r = ab.client.post("/v1/feedback", json={"compare_id": body["compare_id"],
                                                 "verdict": verdict}, headers={"X-User": rater})
        assert r.status_code == 200, r.text
        latest[(rater, body["compare_id"])] = (verdict, a_label, b_label)
    wins = {"base": 0, "tuned": 0}
    ties = both_bad = 0
    for verdict, a_label, b_label in latest.values():
        if verdict in ("a", "b"):
            wins[a_label if verdict == "a" else b_label] += 1
        ties += verdict == "tie"
        both_bad += verdict == "both-bad"
    decided = wins["base"] + wins["tuned"]
    assert (decided, ties, both_bad) == (4, 1, 1)

    # Thumbs on the answers shown: per adapter, each rater's latest.
    thumbs = [(0, "a", "up"), (0, "b", "down"), (1, "a", "up"), (1, "b", "up"),
              (2, "a", "down"), (2, "a", "up")]          # the last replaces the one before
    given = {}
    for n, side, value in thumbs:
        body, a_label, b_label = shown[n]
        r = ab.client.post("/v1/feedback", json={"trace_id": body[side]["trace_id"],
                                                 "thumbs": value}, headers={"X-User": "carol"})
        assert r.status_code == 200, r.text
        given[body[side]["trace_id"]] = (a_label if side == "a" else b_label, value == "up")
    ups = {name: [up for label, up in given.values() if label == name]
           for name in ("base", "tuned")}

    stats = json.loads(run("--home", ab.home, "prefs", "stats", "--json").stdout)
    expected = []
    for me, other in (("base", "tuned"), ("tuned", "base")):
        expected.append({"adapter": me, "opponent": other, "wins": wins[me],
                         "losses": wins[other], "ties": ties, "both_bad": both_bad,
                         "decided": decided, "win_rate": round(wins[me] / decided, 4),
                         "interval": list(wilson(wins[me], decided))})
    assert stats["head_to_head"] == expected
    served = {a["adapter"]: a for a in stats["served"]}
    for name in ("base", "tuned"):
        n, up = len(ups[name]), sum(ups[name])
        if n:
            assert (served[name]["up"], served[name]["thumbs"]) == (up, n)
            assert served[name]["interval"] == list(wilson(up, n))
        else:
            assert name not in served

    lines = run("--home", ab.home, "prefs", "stats").stdout.splitlines()
    low, high = wilson(wins["tuned"], decided)
    line = (f"Head to head, adapter tuned vs base: won {wins['tuned']} of {decided} decided "
            f"({100 * wins['tuned'] / decided:.0f}%, 95% interval {100 * low:.0f}-"
            f"{100 * high:.0f}%); 1 tie, 1 both bad")
    assert line in lines

    # `eval --live`: the same numbers alone, generating nothing.
    live = run("--home", ab.home, "eval", "--live").stdout.splitlines()
    assert line in live and all(x.startswith(("Served, ", "Head to head, ")) for x in live)
    assert len(live) == len(stats["served"]) + 2
    as_json = json.loads(run("--home", ab.home, "eval", "--live", "--json").stdout)
    assert as_json == {"served": stats["served"], "head_to_head": stats["head_to_head"]}

    # A decided head-to-head is a pair on one prompt, its answers' adapters on record.
    pairs = {p["comparison_id"]: p for p in json.loads(
        "[" + ",".join(run("--home", ab.home, "prefs", "export").stdout.splitlines()) + "]")}
    assert len(pairs) == decided
    db = sqlite3.connect(ab.home / "ragloop.db")
    for pair in pairs.values():
        names = {db.execute("select t.adapter from serve_traces t where t.candidate_id = ?",
                            [pair[k]]).fetchone()[0] for k in ("chosen_id", "rejected_id")}
        assert names == {"base", "tuned"}


def test_asks_under_ab_still_stick_to_one_adapter_per_user(ab):
    got = {ab.client.post("/v1/ask", json={"question": "what is gadget3?", "max_new_tokens": 4},
                          headers={"X-User": "dora"}).json()["adapter"] for _ in range(2)}
    assert len(got) == 1 and got <= {"base", "tuned"}


def test_eval_live_without_served_feedback_says_so_in_one_line():
    result = run("eval", "--live")
    assert result.stdout.splitlines() == [
        "No served feedback yet: thumbs and compare verdicts sent to `ragloop serve` show here."]
    assert json.loads(run("eval", "--live", "--json").stdout) == {"served": [],
                                                                  "head_to_head": []}
    refused = run("eval", "--live", "--adapter", "x", ok=False)
    assert refused.exit_code == 2 and "--live reads the served feedback" in refused.output
    assert "drop --adapter" in refused.output
