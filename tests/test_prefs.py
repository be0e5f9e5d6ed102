"""Training rows from ratings (`build_rows`), `prefs export` and `prefs import`.

Ratings are written straight into a real workspace database with the helpers below, so
these tests do not depend on the rating session."""

import json
import re

import pytest
from cli_helpers import run

from ragloop.core.ids import new_id
from ragloop.core.pipeline.prefs import build_rows, dataset_hash, question_hash
from ragloop.core.workspace import Workspace, utcnow

CONTENT = {"pairs": ("prompt", "chosen", "rejected", "question"),
           "kto": ("prompt", "completion", "label", "question"),
           "sft": ("prompt", "completion", "question")}



# ---- helpers that write ratings the way the rating session does ----------------------------

def question(ws, text):
    qid = new_id()
    ws.db["questions"].insert({"id": qid, "text": text, "text_hash": question_hash(text),
                               "origin": "typed", "created_at": utcnow()})
    return qid


def answer(ws, qid, text, prompt=None):
    cid = new_id()
    prompt = prompt if prompt is not None else f"<user>Sources: [1] ...\nQuestion: {qid}</user>"
    ws.db["candidates"].insert({"id": cid, "question_id": qid, "text": text, "prompt": prompt,
                                "messages_json": "[]", "chunk_ids_json": "[1]",
                                "scores_json": "[0.5]", "params_json": "{}",
                                "created_at": utcnow()})
    return cid


def item(ws, name, prompt=None):
    """A question with two answers: (question id, answer 1, answer 2)."""
    qid = question(ws, f"question {name}?")
    prompt = prompt or f"PROMPT for {name}"
    return qid, answer(ws, qid, f"{name} one", prompt), answer(ws, qid, f"{name} two", prompt)


def compare(ws, it, choice, rater_id="alice", rater="human", left=None, swap=False):
    """`choice` refers to candidate_a/candidate_b; swap stores the pair the other way round."""
    qid, first, second = it
    a, b = (second, first) if swap else (first, second)
    cid = new_id()
    ws.db["comparisons"].insert({"id": cid, "question_id": qid, "candidate_a": a,
                                 "candidate_b": b, "left_candidate": left or a, "choice": choice,
                                 "rater": rater, "rater_id": rater_id, "created_at": utcnow()})
    return cid


def score(ws, cid, value, rater_id="alice"):
    ws.db["scores"].insert({"id": new_id(), "candidate_id": cid, "score": value,
                            "rater": "human", "rater_id": rater_id, "created_at": utcnow()})


def texts(rows, *fields):
    return [tuple(r[f] for f in fields) for r in rows]


@pytest.fixture
def ws(ragloop_home):
    workspace = Workspace(ragloop_home)
    yield workspace
    workspace.close()


# ---- build_rows -----------------------------------------------------------------------------

def test_pairs_leave_out_ties_both_bad_and_skips(ws):
    items = [item(ws, n) for n in "pqrst"]
    for it, choice in zip(items, ["a", "tie", "both-bad", "skip", "b"]):
        compare(ws, it, choice)
    rows = build_rows(ws, "pairs")
    assert texts(rows, "chosen", "rejected") == [("p one", "p two"), ("t two", "t one")]
    row = rows[1]
    assert row["prompt"] == "PROMPT for t" and row["question"] == "question t?"
    assert (row["chosen_id"], row["rejected_id"]) == (items[4][2], items[4][1])
    assert set(row) == {"prompt", "chosen", "rejected", "question", "comparison_id",
                        "question_id", "chosen_id", "rejected_id", "rater_id"}


def test_the_latest_rating_counts_and_a_later_skip_retracts_nothing(ws):
    it = item(ws, "p")
    compare(ws, it, "a")
    newest = compare(ws, it, "a", swap=True)   # re-rated, pair stored the other way round
    compare(ws, it, "skip")
    rows = build_rows(ws, "pairs")
    assert texts(rows, "chosen", "comparison_id") == [("p two", newest)]


def test_a_pair_whose_answers_saw_different_prompts_is_left_out(ws):
    qid = question(ws, "q?")
    compare(ws, (qid, answer(ws, qid, "x", "PROMPT 1"), answer(ws, qid, "y", "PROMPT 2")), "a")
    compare(ws, item(ws, "p", prompt="PROMPT\nwith [1] passage"), "a")
    assert texts(build_rows(ws, "pairs"), "prompt") == [("PROMPT\nwith [1] passage",)]


def test_kto_labels_come_from_scores_first_then_choices(ws):
    p, q, r = item(ws, "p"), item(ws, "q"), item(ws, "r")
    compare(ws, p, "a")             # p one True, p two False
    compare(ws, q, "both-bad")      # both False
    compare(ws, r, "tie")           # no label from the choice
    score(ws, p[1], 2)              # the score overrules the choice: False
    score(ws, r[1], 5)
    score(ws, r[2], 3)              # 3 is neither: dropped
    rows = build_rows(ws, "kto")
    assert texts(rows, "completion", "label", "source") == [
        ("p one", False, "score"), ("p two", False, "choice"), ("q one", False, "choice"),
        ("q two", False, "choice"), ("r one", True, "score")]
    assert rows[-1]["prompt"] == "PROMPT for r" and rows[-1]["candidate_id"] == r[1]


@pytest.mark.parametrize("rater, min_agreement, expected", [
    (None, None, [("p two", False, "choice"), ("q one", True, "score")]),
    ("alice", None, [("p one", True, "score"), ("p two", False, "choice"),
                     ("q one", True, "score")]),
    ("bob", None, [("p one", False, "score")]),      # the comparison was alice's
    (None, 0.6, [("p two", False, "choice"), ("q one", True, "score")]),
    (None, 0.7, [("p two", False, "choice")]),
])
def test_kto_labels_with_several_raters(ws, rater, min_agreement, expected):
    p, q = item(ws, "p"), item(ws, "q")
    compare(ws, p, "a")
    score(ws, p[1], 5, rater_id="alice")
    score(ws, p[1], 1, rater_id="bob")       # split: no label, and no fallback to the choice
    for rid, value in [("alice", 4), ("carol", 5), ("dave", 2)]:
        score(ws, q[1], value, rater_id=rid)  # good by 2 of 3
    rows = build_rows(ws, "kto", rater=rater, min_agreement=min_agreement)
    assert texts(rows, "completion", "label", "source") == expected


def test_sft_rows_are_chosen_answers_and_answers_scored_5(ws):
    p, q, r = item(ws, "p"), item(ws, "q"), item(ws, "r")
    compare(ws, p, "b")
    compare(ws, q, "a")
    score(ws, q[1], 2)       # chosen, but scored bad
    score(ws, r[1], 5)
    score(ws, r[2], 4)       # good, but neither chosen nor a 5
    assert texts(build_rows(ws, "sft"), "completion", "source") == [
        ("p two", "choice"), ("r one", "score")]


def test_several_raters_vote_and_a_split_vote_drops_the_item(ws):
    p, q = item(ws, "p"), item(ws, "q")
    for rid, choice in [("alice", "a"), ("bob", "b"), ("carol", "b")]:
        compare(ws, p, choice, rater_id=rid, swap=rid == "carol")
    compare(ws, q, "a", rater_id="alice")
    compare(ws, q, "b", rater_id="bob")
    # carol's "b" on the swapped pair is a vote for "p one", like alice's.
    assert texts(build_rows(ws, "pairs"), "chosen", "rater_id") == [("p one", "carol")]


@pytest.fixture
def three_raters(ws):
    p, q, r = item(ws, "p"), item(ws, "q"), item(ws, "r")
    for rid, choice in [("alice", "a"), ("bob", "a"), ("carol", "b")]:
        compare(ws, p, choice, rater_id=rid)     # agreement 2/3
    compare(ws, q, "a", rater_id="alice")        # one rater: 1.0
    compare(ws, r, "b", rater_id="alice")
    compare(ws, r, "a", rater_id="bob")          # 1/2, split
    return ws


@pytest.mark.parametrize("rater, min_agreement, expected", [
    (None, None, ["p one", "q one"]),
    (None, 0.7, ["q one"]),
    (None, 0.6, ["p one", "q one"]),
    ("bob", None, ["p one", "r one"]),
    ("bob", 0.6, ["p one"]),
    ("carol", None, ["p two"]),
    ("dave", None, []),
])
def test_rater_and_min_agreement_filters(three_raters, rater, min_agreement, expected):
    rows = build_rows(three_raters, "pairs", rater=rater, min_agreement=min_agreement)
    assert [r["chosen"] for r in rows] == expected


def test_dataset_hash_is_canonical(ws):
    rows = [{"prompt": "p", "chosen": "c"}, {"prompt": "é", "chosen": "d"}]
    assert dataset_hash(rows) == dataset_hash([dict(reversed(r.items())) for r in rows])
    assert dataset_hash(rows) != dataset_hash(rows[::-1])
    assert re.fullmatch(r"[0-9a-f]{64}", dataset_hash(rows))


def test_bad_arguments_are_one_line_errors(ws):
    with pytest.raises(Exception, match=r"unknown kind 'dpo'; kinds: pairs, kto, sft"):
        build_rows(ws, "dpo")
    with pytest.raises(Exception, match=r"--min-agreement must be between 0 and 1"):
        build_rows(ws, "pairs", min_agreement=2)


# ---- export and import -----------------------------------------------------------------------

def rated(ws):
    """Ratings that give rows of every kind."""
    p, q, r = item(ws, "p"), item(ws, "q"), item(ws, "r")
    compare(ws, p, "a")
    compare(ws, q, "b", left=q[2])
    compare(ws, r, "both-bad")
    score(ws, p[1], 5)
    score(ws, r[2], 1)
    ws.close()


@pytest.mark.parametrize("fmt", ["jsonl", "hf"])
@pytest.mark.parametrize("kind", ["pairs", "kto", "sft"])
def test_export_then_import_round_trips(ws, tmp_path, kind, fmt):
    rated(ws)
    out = tmp_path / f"{kind}.{fmt}"
    result = run("prefs", "export", "--format", fmt, "--kind", kind, "--out", str(out))
    original = build_rows(ws, kind)
    assert result.stdout == ""
    noun = "pairs" if kind == "pairs" else f"{kind} rows"
    assert result.stderr == (f"Exported {len(original)} {noun} to {out} "
                             f"(sha256 {dataset_hash(original)[:12]}).\n")
    if fmt == "hf":
        from datasets import load_from_disk
        assert load_from_disk(str(out)).to_list() == original
    else:
        assert [json.loads(line) for line in out.read_text().splitlines()] == original

    other = tmp_path / "other-home"
    imported = run("--home", str(other), "prefs", "import", str(out)).output
    n_questions = len({r["question"] for r in original})
    n_answers = len(original) * (2 if kind == "pairs" else 1)
    assert imported == (f"Imported {len(original)} rows ({kind}) from {out} "
                        f"({n_questions} new questions, {n_answers} new answers).\n")
    again = Workspace(other)
    assert texts(build_rows(again, kind), *CONTENT[kind]) == texts(original, *CONTENT[kind])

    # A second import reuses the questions and answers: the export is unchanged.
    assert "(0 new questions, 0 new answers)" in run("--home", str(other), "prefs", "import",
                                                     str(out)).output
    assert texts(build_rows(again, kind), *CONTENT[kind]) == texts(original, *CONTENT[kind])
    again.close()


def test_export_jsonl_to_stdout_with_notes_on_stderr(ws):
    rated(ws)
    qid = question(ws, "mismatch?")
    compare(ws, (qid, answer(ws, qid, "x", "P1"), answer(ws, qid, "y", "P2")), "a")
    ws.close()
    result = run("prefs", "export")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["chosen"] for r in rows] == ["p one", "q two"]
    assert result.stderr.splitlines() == [
        "Note: 1 left out: answers saw different prompts.",
        f"Exported 2 pairs (sha256 {dataset_hash(rows)[:12]})."]


def test_nothing_to_export_is_a_one_line_error_and_writes_nothing(ws, tmp_path):
    out = tmp_path / "pairs.jsonl"
    result = run("prefs", "export", "--out", str(out), ok=False)
    assert (result.exit_code, result.stderr) == (
        1, "Error: no pairs yet; run `ragloop rate` first\n")
    assert not out.exists()
    assert run("prefs", "export", "--kind", "kto", ok=False).stderr == \
        "Error: no kto rows yet; run `ragloop rate` first\n"
    rated(ws)
    result = run("prefs", "export", "--rater", "bob", "--min-agreement", "0.5", ok=False)
    assert result.stderr == ("Error: no pairs match --rater bob --min-agreement 0.5; "
                             "`ragloop prefs stats` lists raters\n")
    assert list(tmp_path.iterdir()) == [tmp_path / "ragloop-home"]


def test_hf_export_needs_out_and_replaces_only_a_datasets_folder(ws, tmp_path):
    rated(ws)
    assert run("prefs", "export", "--format", "hf", ok=False).stderr == \
        "Error: --format hf writes a folder: give it with --out\n"
    out = tmp_path / "ds"
    run("prefs", "export", "--format", "hf", "--out", str(out))
    run("prefs", "export", "--format", "hf", "--kind", "sft", "--out", str(out))
    from datasets import load_from_disk
    assert load_from_disk(str(out)).column_names[:2] == ["prompt", "completion"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "ragloop-home"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    result = run("prefs", "export", "--format", "hf", "--out", str(precious), ok=False)
    assert result.stderr == f"Error: {precious} exists and is not a datasets folder; " \
                            f"choose another --out\n"
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]


GOOD = {"prompt": "P", "chosen": "yes", "rejected": "no", "question": "Q?"}


@pytest.mark.parametrize("bad, problem", [
    ("{not json", "not JSON (Expecting property name enclosed in double quotes)"),
    ('["a list"]', "not a JSON object"),
    (json.dumps({"prompt": "P", "chosen": "yes"}), "field 'rejected' is missing"),
    (json.dumps({**GOOD, "chosen": "  "}), "field 'chosen' is empty"),
    (json.dumps({**GOOD, "prompt": 3}), "field 'prompt' must be text"),
    (json.dumps({**GOOD, "question": ""}), "field 'question' must be non-empty text when given"),
    (json.dumps({**GOOD, "rejected": "yes"}), "chosen and rejected are the same text"),
    (json.dumps({"prompt": "P", "completion": "c", "label": True}), "a kto row in a pairs file"),
    (json.dumps({"text": "x"}), "expected fields prompt/chosen/rejected (pairs), "
                                "prompt/completion/label (kto) or prompt/completion (sft)"),
])
def test_a_bad_line_is_reported_and_nothing_is_imported(ws, tmp_path, bad, problem):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + bad + "\n" + json.dumps(GOOD) + "\n")
    result = run("prefs", "import", str(path), ok=False)
    assert (result.exit_code, result.stderr) == (
        1, f"Error: {path} line 3: {problem}; nothing imported\n")
    assert [ws.db[t].count for t in ("questions", "candidates", "comparisons")] == [0, 0, 0]


def test_kto_labels_must_be_booleans_and_all_bad_lines_are_counted(ws, tmp_path):
    path = tmp_path / "kto.jsonl"
    rows = [{"prompt": "P", "completion": "c", "label": True},
            {"prompt": "P", "completion": "c", "label": "yes"},
            {"prompt": "P", "completion": ""}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run("prefs", "import", str(path), ok=False).stderr == (
        f"Error: {path} line 2: field 'label' must be true or false; nothing imported "
        f"(2 bad lines in all)\n")
    assert ws.db["scores"].count == 0


def test_import_of_a_bad_hf_row_names_the_row(ws, tmp_path):
    from datasets import Dataset
    folder = tmp_path / "ds"
    Dataset.from_list([GOOD, {**GOOD, "chosen": ""}]).save_to_disk(str(folder))
    assert run("prefs", "import", str(folder), ok=False).stderr == \
        f"Error: {folder} row 2: field 'chosen' is empty; nothing imported\n"


def test_import_rows_become_ratings_by_the_import_rater(ws, tmp_path):
    path = tmp_path / "kto.jsonl"
    path.write_text(json.dumps({"prompt": "P\n[1] passage", "completion": "c", "label": False})
                    + "\n" + json.dumps({"prompt": "P\n[1] passage", "completion": "d",
                                         "label": True, "question": "Q?"}) + "\n")
    run("prefs", "import", str(path), "--rater-id", "bulk")
    assert [(q["text"], q["origin"], q["origin_ref"]) for q in ws.db["questions"].rows] == [
        ("P\n[1] passage", "import", str(path)), ("Q?", "import", str(path))]
    params = json.loads(next(ws.db["candidates"].rows)["params_json"])
    assert params["imported_from"] == str(path) and params["line"] == 1
    assert [(s["score"], s["rater"], s["rater_id"]) for s in ws.db["scores"].rows] == [
        (1, "import", "bulk"), (5, "import", "bulk")]


def test_a_failure_while_writing_rolls_back_the_whole_import(ws, tmp_path, monkeypatch):
    from ragloop.core.pipeline import prefs_io
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({**GOOD, "question": f"Q{n}?"}) + "\n" for n in range(3)))
    calls = []

    def failing_id():
        calls.append(1)
        if len(calls) == 8:
            raise OSError("disk full")
        return new_id()
    monkeypatch.setattr(prefs_io, "new_id", failing_id)
    with pytest.raises(OSError):
        prefs_io.import_file(ws, path)
    assert [ws.db[t].count for t in ("questions", "candidates", "comparisons")] == [0, 0, 0]
    assert not ws.db.conn.in_transaction


def test_export_to_a_missing_folder_is_an_error(ws, tmp_path):
    rated(ws)
    out = tmp_path / "missing" / "pairs.jsonl"
    assert run("prefs", "export", "--out", str(out), ok=False).stderr == \
        f"Error: the folder {out.parent} does not exist; create it or choose another --out\n"


def test_import_errors_for_missing_or_empty_files(ws, tmp_path):
    assert run("prefs", "import", str(tmp_path / "nope.jsonl"), ok=False).stderr == \
        f"Error: no such file: {tmp_path / 'nope.jsonl'}\n"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert run("prefs", "import", str(empty), ok=False).stderr == \
        f"Error: {empty} holds no rows\n"


def test_eval_comparisons_count_in_stats_but_never_become_training_rows(ragloop_home):
    import json as _json
    import pathlib
    import tempfile

    from ragloop.core.pipeline.prefs import build_rows, latest_votes
    from ragloop.core.workspace import Workspace
    rows = [{"prompt": "P1", "chosen": "good one", "rejected": "bad one"},
            {"prompt": "P2", "chosen": "fine", "rejected": "poor"}]
    path = pathlib.Path(tempfile.mkdtemp()) / "pairs.jsonl"
    path.write_text("\n".join(_json.dumps(r) for r in rows) + "\n")
    from click.testing import CliRunner

    from ragloop.core.cli import cli
    assert CliRunner().invoke(cli, ["prefs", "import", str(path)]).exit_code == 0
    ws = Workspace(ragloop_home)
    with ws.db.atomic():
        ws.db.execute("update comparisons set session = 'eval-01TEST' where rowid = "
                      "(select min(rowid) from comparisons)")
    assert len(build_rows(ws, "pairs")) == 1
    assert len(latest_votes(ws.db, include_eval=True)) == 2
