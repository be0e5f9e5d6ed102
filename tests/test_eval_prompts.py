"""`ragloop eval --prompt A --baseline-prompt B`: two prompts on one model (no adapter, or the
adapter given), end to end on a tiny model, judged and checked against references the way
an adapter is against its base; and bad input."""

import json

from cli_helpers import run
from test_eval import gen, make_adapter, one_line_error, report_folder
from test_eval import indexed  # noqa: F401  (fixture)

from ragloop.core.ids import new_id
from ragloop.core.workspace import Workspace, utcnow

RATED = ["Where does zebrafish keep its settings?", "How many widgets may a flurble hold?"]
HELD = [{"question": "Which file holds the zebrafish settings?", "answer": "zebra.toml",
         "source": "docs/doc1.md"},
        {"question": "What limits widgets per flurble?", "answer": "max_widgets"}]


def rate_first_answers_five(home, tmp_path):
    """Rated answers for few-shot: `rate` makes the pairs, a person scores each first one 5."""
    questions = tmp_path / "rated.txt"
    questions.write_text("\n".join(RATED) + "\n")
    run("rate", "--rater", "judge", "--questions", questions, *gen())
    db = Workspace(home).db
    for qid, both in db.execute("select question_id, group_concat(id) from (select * from "
                                "candidates order by rowid) group by question_id").fetchall():
        first, second = both.split(",")
        comparison = new_id()
        db["comparisons"].insert({"id": comparison, "question_id": qid, "candidate_a": first,
                                  "candidate_b": second, "left_candidate": first, "choice": "a",
                                  "rater": "human", "rater_id": "ann", "created_at": utcnow()})
        db["scores"].insert({"id": new_id(), "comparison_id": comparison, "candidate_id": first,
                             "score": 5, "rater": "human", "rater_id": "ann",
                             "created_at": utcnow()})
    db.conn.commit()


def test_eval_compares_two_prompts_on_one_model(indexed, tmp_path, ragloop_home):  # noqa: F811
    rate_first_answers_five(ragloop_home, tmp_path)
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps(q) + "\n" for q in HELD))
    result = run("eval", "--prompt", "few-shot", "--baseline-prompt", "default", *gen(),
                 "--questions", held, "-o", "few-shot.k=1")
    lines = result.stdout.splitlines()
    # Only the evaluators that compare two answers run; no adapter is needed.
    assert [line.split(":")[0] for line in lines[:-1]] == ["winrate", "correctness"], lines
    assert lines[1].startswith("correctness: containment ") and "(2 questions)" in lines[1]
    folder = report_folder(result.stdout)
    record = json.loads((folder / "metrics.json").read_text())
    assert record["adapter"] is None
    settings = record["settings"]
    assert (settings["prompt"], settings["baseline_prompt"]) == ("few-shot", "default")
    assert record["evaluators"]["correctness"]["metrics"]["questions"] == 2
    report = (folder / "report.md").read_text()
    assert report.splitlines()[2].startswith("Prompt `few-shot` against prompt `default` on ")

    db = Workspace(ragloop_home).db
    stored = db.execute(
        "select ca.params_json, cb.params_json, ca.adapter, cb.adapter, ca.chunk_ids_json, "
        "cb.chunk_ids_json from comparisons c join candidates ca on ca.id = c.candidate_a "
        "join candidates cb on cb.id = c.candidate_b where c.session = ?",
        [record["id"]]).fetchall()
    assert len(stored) == 2
    for a, b, adapter_a, adapter_b, chunks_a, chunks_b in stored:
        a, b = json.loads(a), json.loads(b)
        assert (a["slot"], b["slot"], adapter_a, adapter_b) == ("a", "b", None, None)
        assert "prompt" not in a and b["prompt"] == "few-shot"   # a: the default, as always
        assert len(b["examples"]) == 1 and b["examples"][0]["similarity"] is not None
        assert a["candidates"] == b["candidates"] == "prompts"
        assert chunks_a == chunks_b                               # the same passages
    outcomes = [d["outcome"] for d in record["evaluators"]["winrate"]["details"]]
    assert len(outcomes) == 2 and set(outcomes) <= {"win", "loss", "tie", "both-bad"}

    # Again: the pairs stored under these prompts are read back, not generated again.
    before = db["candidates"].count
    again = run("eval", "--prompt", "few-shot", "--baseline-prompt", "default", *gen(),
                "--questions", held, "-o", "few-shot.k=1", "--evaluators", "correctness")
    assert again.stdout.splitlines()[0] == lines[1]
    assert db["candidates"].count == before


def test_eval_compares_prompts_with_the_adapter_named(indexed, tmp_path,  # noqa: F811
                                                      ragloop_home):
    make_adapter(ragloop_home, "a")
    held = tmp_path / "held.jsonl"
    held.write_text(json.dumps(HELD[0]) + "\n")
    record = json.loads(run("eval", "--adapter", "a", "--prompt", "few-shot",
                            "--baseline-prompt", "default", *gen(), "--questions", held,
                            "--evaluators", "winrate", "--json").stdout)
    assert record["adapter"]["name"] == "a"
    db = Workspace(ragloop_home).db
    adapters = db.execute("select ca.adapter, cb.adapter, c.choice from comparisons c "
                          "join candidates ca on ca.id = c.candidate_a join candidates cb "
                          "on cb.id = c.candidate_b where c.session = ?",
                          [record["id"]]).fetchall()
    assert len(adapters) == 1 and adapters[0][0] == adapters[0][1] and adapters[0][0]
    # The baseline is slot a even though both answers carry the adapter.
    expected = {"a": "loss", "b": "win"}.get(adapters[0][2], adapters[0][2])
    assert record["evaluators"]["winrate"]["details"][0]["outcome"] == expected


def test_bad_prompt_comparisons_are_one_line_errors(indexed, tmp_path,  # noqa: F811
                                                    ragloop_home):
    one_line_error(run("eval", "--prompt", "default", "--baseline-prompt", "default", *gen(),
                       ok=False), "--prompt and --baseline-prompt are both 'default'")
    one_line_error(run("eval", "--prompt", "few-shot", "--baseline-prompt", "nope", *gen(),
                       ok=False), "unknown prompt 'nope'; available: default, few-shot")
    one_line_error(run("eval", "--prompt", "few-shot", "--baseline-prompt", "default", *gen(),
                       "--evaluators", "reward", ok=False),
                   "evaluator 'reward' does not compare prompts; with --baseline-prompt use "
                   "winrate, correctness")
    one_line_error(run("eval", "--prompt", "few-shot", "--baseline-prompt", "default", *gen(),
                       "-o", "few-shot.template=no question", ok=False),
                   "invalid options for prompt few-shot: the template lacks {question}")
    runs = ragloop_home / "runs"
    assert not runs.exists() or not list(runs.iterdir())
