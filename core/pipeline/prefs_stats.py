"""`ragloop prefs stats`: who rated what, how, and how much raters agree.

Choice statistics use each rater id's latest non-skip vote per item (see core/pipeline/prefs.py);
row and skip counts use every row. Agreement is over shared items (a question's unordered
pair of answers judged by two or more rater ids) and the categorical choice (a, b, tie,
both-bad): Cohen's kappa when exactly two raters share items, Krippendorff's alpha (nominal)
when more do. Position bias leaves out imported comparisons, whose screen side is unknown.
What `ragloop serve` collected is reported per adapter: the thumbs-up rate and, from
compare verdicts between two adapters, the live win rate (`live_stats` alone is
`ragloop eval --live`).
"""

from __future__ import annotations

import math
from collections import defaultdict

from ragloop.core.pipeline.prefs import CHOICES, IMPORT_RATER, latest_votes


def _rate(n: int, total: int) -> float | None:
    return round(n / total, 4) if total else None


def _finite(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 4)


def compute_stats(ws) -> dict:
    db = ws.db
    votes = latest_votes(db, include_eval=True)
    raters = {}
    for r in db.query("select rater, rater_id, count(*) as n, sum(choice = 'skip') as skips "
                      "from comparisons group by rater, rater_id order by rater, rater_id"):
        raters[(r["rater"], r["rater_id"])] = {
            "rater": r["rater"], "rater_id": r["rater_id"], "comparisons": r["n"],
            "skips": r["skips"], "judged": 0, "a_or_b": 0, "ties": 0, "both_bad": 0,
            "left_wins": 0}
    for v in votes:
        entry = raters[(v.rater, v.rater_id)]
        entry["judged"] += 1
        key = {"a": "a_or_b", "b": "a_or_b", "tie": "ties", "both-bad": "both_bad"}[v.choice]
        entry[key] += 1
        entry["left_wins"] += v.winner is not None and v.winner == v.left_candidate
    for entry in raters.values():
        entry["tie_rate"] = _rate(entry["ties"], entry["judged"])
        entry["both_bad_rate"] = _rate(entry["both_bad"], entry["judged"])
    totals = db.execute("select count(*), sum(choice = 'skip') from comparisons").fetchone()
    served, matches = served_thumbs(db), head_to_head(db, votes)
    return {
        "comparisons": totals[0], "skips": totals[1] or 0,
        "items": len({v.item for v in votes}),
        "questions": db.execute("select count(*) from questions").fetchone()[0],
        "candidates": db.execute("select count(*) from candidates").fetchone()[0],
        "raters": list(raters.values()),
        "position_bias": position_bias(votes),
        "agreement": agreement(votes),
        "prompt_mismatch": _prompt_mismatch(db, votes),
        "scores": {"count": db["scores"].count, "by_value": {
            str(n): db.execute("select count(*) from scores where score = ?", [n]).fetchone()[0]
            for n in range(1, 6)}},
        "passage_judgments": dict(zip(("count", "relevant"), db.execute(
            "select count(*), coalesce(sum(relevant), 0) from passage_judgments").fetchone())),
        # Only in workspaces that served answers with thumbs or head-to-heads, so other
        # reports stay as they were.
        **({"served": served} if served else {}),
        **({"head_to_head": matches} if matches else {}),
    }


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate k/n (sound for small n and rates near 0 or 1)."""
    p, d = k / n, 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def served_thumbs(db) -> list[dict]:
    """Thumbs-up rate per adapter on answers `ragloop serve` gave (each rater's latest thumbs
    per answer), with a 95% interval: the live A/B comparison."""
    rows = db.execute("""
        select adapter, sum(up), count(*) from (
            select f.adapter, json_extract(f.value_json, '$.thumbs') = 'up' as up,
                   row_number() over (partition by f.rater_id, f.trace_id
                                      order by f.created_at desc, f.rowid desc) as latest
            from serve_feedback f where json_extract(f.value_json, '$.thumbs') is not null)
        where latest = 1 group by adapter order by adapter""").fetchall()
    return [{"adapter": adapter, "up": up, "thumbs": n, "up_rate": _rate(up, n),
             "interval": wilson(up, n)} for adapter, up, n in rows]


def head_to_head(db, votes) -> list[dict]:
    """The live win rate between adapters, from verdicts on comparisons whose two answers
    `ragloop serve` gave with different adapters (`/v1/compare` under `--ab`), each rater's
    latest vote per pair: one entry per adapter and opponent. `win_rate` = wins / decided
    (a or b), with its 95% Wilson interval; ties and both-bad are counted apart."""
    served_as = dict(db.execute("select candidate_id, adapter from serve_traces "
                                "where kind = 'ask' and candidate_id is not null").fetchall())
    tally = defaultdict(lambda: {"wins": 0, "losses": 0, "ties": 0, "both_bad": 0})
    for v in votes:
        first, second = v.item[1], v.item[2]
        if first not in served_as or second not in served_as:
            continue        # not two served answers (a correction, `rate`'s own answers)
        x, y = served_as[first], served_as[second]
        if x == y:
            continue        # two samples of one adapter: no head-to-head
        for me, other, mine in ((x, y, first), (y, x, second)):
            t = tally[(me, other)]
            if v.choice in ("tie", "both-bad"):
                t["ties" if v.choice == "tie" else "both_bad"] += 1
            else:
                t["wins" if v.winner == mine else "losses"] += 1
    rows = []
    for (me, other), t in sorted(tally.items(), key=lambda e: (e[0][0] or "", e[0][1] or "")):
        decided = t["wins"] + t["losses"]
        rows.append({"adapter": me, "opponent": other, **t, "decided": decided,
                     "win_rate": _rate(t["wins"], decided),
                     "interval": wilson(t["wins"], decided) if decided else None})
    return rows


def live_stats(db) -> dict:
    """What `ragloop eval --live` shows: thumbs-up and head-to-head win rates per served
    adapter, read from the stored feedback (nothing is generated)."""
    return {"served": served_thumbs(db),
            "head_to_head": head_to_head(db, latest_votes(db, include_eval=True))}


def format_live(s: dict) -> list[str]:
    """The served lines of `prefs stats` and `eval --live`."""
    lines = []
    for a in s.get("served", []):
        low, high = a["interval"]
        lines.append(f"Served, adapter {a['adapter'] or '(none)'}: {a['up']} of {a['thumbs']} "
                     f"thumbs up ({100 * a['up_rate']:.0f}%, 95% interval {100 * low:.0f}-"
                     f"{100 * high:.0f}%)")
    for h in s.get("head_to_head", []):
        rest = (f"{h['ties']} {'tie' if h['ties'] == 1 else 'ties'}, {h['both_bad']} both bad")
        if h["decided"]:
            low, high = h["interval"]
            won = (f"won {h['wins']} of {h['decided']} decided ({100 * h['win_rate']:.0f}%, "
                   f"95% interval {100 * low:.0f}-{100 * high:.0f}%)")
        else:
            won = "no decided verdicts yet"
        lines.append(f"Head to head, adapter {h['adapter'] or '(none)'} vs "
                     f"{h['opponent'] or '(none)'}: {won}; {rest}")
    return lines


def position_bias(votes) -> dict:
    """How often the answer shown on the left won, among a/b decisions. p_value: two-sided
    binomial test against no bias (0.5)."""
    decided = [v for v in votes if v.winner is not None and v.rater != IMPORT_RATER]
    left = sum(v.winner == v.left_candidate for v in decided)
    p_value = None
    if decided:
        from scipy.stats import binomtest
        p_value = round(float(binomtest(left, len(decided), 0.5).pvalue), 4)
    return {"decisions": len(decided), "left_wins": left,
            "left_win_rate": _rate(left, len(decided)), "p_value": p_value}


def agreement(votes) -> dict:
    by_item = defaultdict(dict)
    for v in votes:
        by_item[v.item][v.rater_id] = v.choice
    shared = {item: r for item, r in by_item.items() if len(r) > 1}
    rater_ids = sorted({rid for r in shared.values() for rid in r})
    result = {"raters": rater_ids, "shared_items": len(shared), "method": None, "value": None,
              "observed": _rate(sum(len(set(r.values())) == 1 for r in shared.values()),
                                len(shared))}
    if len(rater_ids) == 2:
        from sklearn.metrics import cohen_kappa_score
        first = [r[rater_ids[0]] for r in shared.values()]
        second = [r[rater_ids[1]] for r in shared.values()]
        result["method"] = "cohen_kappa"
        # One same label everywhere makes chance agreement 1 and kappa 0/0: left as None.
        if len(set(first) | set(second)) > 1:
            result["value"] = _finite(cohen_kappa_score(first, second, labels=list(CHOICES)))
    elif len(rater_ids) > 2:
        import krippendorff
        import numpy as np
        code = {c: i for i, c in enumerate(CHOICES)}
        data = np.full((len(rater_ids), len(shared)), np.nan)
        for j, r in enumerate(shared.values()):
            for i, rid in enumerate(rater_ids):
                if rid in r:
                    data[i, j] = code[r[rid]]
        result["method"] = "krippendorff_alpha"
        with np.errstate(divide="ignore", invalid="ignore"):
            result["value"] = _finite(krippendorff.alpha(
                reliability_data=data, value_domain=list(range(len(CHOICES))),
                level_of_measurement="nominal"))
    return result


def _prompt_mismatch(db, votes) -> int:
    """Items decided a or b whose two answers saw different prompts: no pair can come of them."""
    prompts = dict(db.execute("select id, prompt from candidates").fetchall())
    items = {v.item for v in votes if v.winner is not None}
    return sum(prompts[a] != prompts[b] for _, a, b in items)


def format_stats(s: dict) -> list[str]:
    lines = [f"Comparisons: {s['comparisons']} ({s['skips']} skipped) on {s['items']} items, "
             f"{s['questions']} questions, {s['candidates']} answers"]
    if s["raters"]:
        lines.append(f"{'rater':<10} {'rater id':<18} {'rows':>5} {'a/b':>5} {'tie':>5} "
                     f"{'bad':>5} {'skip':>5} {'tie %':>6} {'bad %':>6}")
    for r in s["raters"]:
        pct = ["-" if x is None else f"{100 * x:.0f}" for x in (r["tie_rate"], r["both_bad_rate"])]
        lines.append(f"{r['rater'][:10]:<10} {r['rater_id'][:18]:<18} {r['comparisons']:>5} "
                     f"{r['a_or_b']:>5} {r['ties']:>5} {r['both_bad']:>5} {r['skips']:>5} "
                     f"{pct[0]:>6} {pct[1]:>6}")
    pb = s["position_bias"]
    if pb["decisions"]:
        lines.append(f"Position bias: the left answer won {pb['left_wins']} of {pb['decisions']} "
                     f"a/b decisions ({100 * pb['left_win_rate']:.0f}%, p = {pb['p_value']})")
    ag = s["agreement"]
    if ag["method"]:
        name = {"cohen_kappa": "Cohen's kappa",
                "krippendorff_alpha": "Krippendorff's alpha"}[ag["method"]]
        value = "undefined" if ag["value"] is None else f"{ag['value']:.3f}"
        lines.append(f"Agreement: {name} {value} over {ag['shared_items']} items shared by "
                     f"{len(ag['raters'])} raters ({100 * ag['observed']:.0f}% identical)")
    else:
        lines.append("Agreement: no items rated by more than one rater yet")
    if s["prompt_mismatch"]:
        lines.append(f"Note: {s['prompt_mismatch']} decided items have answers that saw "
                     f"different prompts; they are left out of pairs")
    sc, pj = s["scores"], s["passage_judgments"]
    by_value = " ".join(f"{k}:{v}" for k, v in sc["by_value"].items())
    lines.append(f"Scores: {sc['count']} ({by_value}); passage judgments: {pj['count']} "
                 f"({pj['relevant']} relevant)")
    return lines + format_live(s)
