"""Filter chains where data is used: `index --filter`, `prefs export --filter` and the
`ragloop filter` preview, on a real workspace with a tiny embedder."""

import json

import pytest
from cli_helpers import emb, run
from test_prefs import compare, item, score

from ragloop.core.workspace import Workspace

A = "# Tides\n\nThe moon pulls the sea toward it, which makes two high tides a day.\n"
B = "# Bread\n\nKnead the dough, let it rise for an hour, then bake it until brown.\n"




@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)            # paths in the output are relative to here
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text(A)
    (root / "b.md").write_text(B)
    (root / "copy.md").write_text(A.upper().replace("\n\n", "\n\n\n"))
    return root


def indexed(home):
    ws = Workspace(home)
    try:
        return sorted(p.rsplit("/", 1)[-1] for (p,) in ws.db.execute("select path from documents"))
    finally:
        ws.close()


# ---- index --filter ------------------------------------------------------------------------

def test_index_dedup_drops_copies_within_the_run_and_of_indexed_documents(corpus, ragloop_home):
    out = run("index", "docs", "--filter", "exact-dedup", *emb()).output
    assert out.splitlines() == [
        "Indexed: 2 added, 0 updated, 0 removed, 0 unchanged, 1 skipped; 2 chunks embedded.",
        "  skipped docs/copy.md: filter exact-dedup: exact duplicate: same text as docs/a.md"]
    assert indexed(ragloop_home) == ["a.md", "b.md"]
    # The copy is offered again on every run: skipped again, and not an error.
    again = run("index", "docs", "--filter", "exact-dedup").output
    assert "skipped docs/copy.md: filter exact-dedup: exact duplicate: same text as " \
           "docs/a.md (indexed)" in again
    # A changed file that now repeats another is dropped, its older version with it.
    (corpus / "b.md").write_text(A)
    out = run("index", "docs", "--filter", "exact-dedup").output
    assert out.splitlines()[0].startswith("Indexed: 0 added, 0 updated, 1 removed, 1 unchanged, "
                                          "2 skipped")
    assert "skipped docs/b.md: filter exact-dedup: exact duplicate: same text as docs/a.md " \
           "(indexed)" in out
    assert indexed(ragloop_home) == ["a.md"]


def test_index_reports_redactions_and_keeps_the_redacted_text(corpus, ragloop_home):
    (corpus / "b.md").write_text(B + "\nQuestions: baker@example.com\n")
    out = run("index", "docs/b.md", "--filter", "pii-redact", "--json", *emb()).stdout
    report = json.loads(out)
    assert report["warnings"] == [["filter pii-redact", "redacted 1 email in 1 document"]]
    assert report["filters"]["filters"][0]["notes"] == ["redacted 1 email in 1 document"]
    hits = json.loads(run("search", "questions", "--mode", "bm25", "--json").stdout)
    assert "[EMAIL]" in hits[0]["text"] and "baker@" not in hits[0]["text"]


def test_index_refuses_bad_chains_before_reading_files(corpus, ragloop_home):
    result = run("index", "docs", "--filter", "quality", "--filter", "no-such", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown filter 'no-such'; available: exact-dedup, ")
    result = run("index", "docs", "--filter", "curriculum", ok=False)
    assert (result.exit_code, result.output) == (
        1, "Error: filter 'curriculum' does not apply to documents (it applies to pairs, kto, "
           "sft)\n")
    assert indexed(ragloop_home) == []


def test_index_chain_removing_every_file_of_an_empty_index_writes_nothing(tmp_path, ragloop_home):
    for name in ("x.md", "y.md"):
        (tmp_path / name).write_text("Lorem ipsum dolor sit amet, consectetur adipiscing.\n")
    result = run("index", str(tmp_path), "--filter", "quality", *emb(), ok=False)
    assert (result.exit_code, result.output) == (1, (
        "Error: the filter chain removed all 2 documents (quality removed 2 (2 boilerplate)); "
        "nothing was written\n"))
    assert indexed(ragloop_home) == []


# ---- prefs export --filter -----------------------------------------------------------------

@pytest.fixture
def ws(ragloop_home):
    workspace = Workspace(ragloop_home)
    yield workspace
    workspace.close()


def test_export_filter_drops_rows_and_notes_why(ws, tmp_path):
    p, q, r = item(ws, "p"), item(ws, "q"), item(ws, "r")
    compare(ws, p, "a")
    for rater, choice in (("alice", "a"), ("bob", "a"), ("carol", "b")):
        compare(ws, q, choice, rater_id=rater)   # two of three agree on q: 67%
    compare(ws, r, "b")
    out = tmp_path / "pairs.jsonl"
    result = run("prefs", "export", "--out", str(out), "--filter", "min-agreement",
                 "-o", "min-agreement.threshold=0.7")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["chosen"] for row in rows] == ["p one", "r two"]
    assert result.stderr.splitlines()[0] == (
        "Note: filter min-agreement removed 1 (1 low agreement) of 3 pairs.")
    assert result.stderr.splitlines()[-1].startswith("Exported 2 pairs to ")


def test_export_filter_that_removes_every_row_writes_nothing(ws, tmp_path):
    compare(ws, item(ws, "p"), "a")
    out = tmp_path / "pairs.jsonl"
    result = run("prefs", "export", "--out", str(out), "--filter", "length",
                 "-o", "length.min_words=50", ok=False)
    assert (result.exit_code, result.output) == (1, (
        "Error: the filter chain removed the only pair (length removed 1 (1 too short)); "
        "nothing was written\n"))
    assert not out.exists()
    result = run("prefs", "export", "--kind", "sft", "--filter", "min-agreement",
                 "-o", "min-agreement.threshold=0", ok=False)
    assert result.output == ("Error: invalid options for filter 'min-agreement': threshold "
                             "must be in (0, 1], got 0.0\n")


def test_export_drop_ties_removes_kto_rows_labelled_by_both_bad(ws):
    p, q = item(ws, "p"), item(ws, "q")
    compare(ws, p, "a")
    compare(ws, q, "both-bad")
    result = run("prefs", "export", "--kind", "kto", "--filter", "drop-ties",
                 "--filter", "curriculum")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(row["completion"], row["label"]) for row in rows] == [("p one", True),
                                                                   ("p two", False)]
    assert result.stderr.splitlines()[:2] == [
        "Note: filter drop-ties removed 2 (2 both-bad) of 4 rows.",
        "Note: filter curriculum: ordered 2 rows easy to hard by length (words 2 to 2)"]
    pairs = run("prefs", "export", "--filter", "drop-ties")
    assert "Note: filter drop-ties: no row was decided by a tie or both-bad verdict" in pairs.stderr


def test_min_agreement_uses_scores_for_score_rows(ws):
    p = item(ws, "p")
    score(ws, p[1], 5, "alice")
    score(ws, p[1], 1, "bob")
    score(ws, p[2], 5, "alice")
    score(ws, p[2], 4, "bob")
    from ragloop.core.pipeline.filtering import apply_chain
    rows = [{"prompt": "x", "completion": "y", "label": True, "source": "score",
             "candidate_id": cid} for cid in (p[1], p[2])]
    rows.append({"prompt": "x", "completion": "z", "label": True, "agreement": 0.5,
                 "raters": 4})
    rows.append({"prompt": "x", "completion": "w", "label": True, "comparison_id": "elsewhere"})
    kept, report = apply_chain(ws, ["min-agreement"], rows, "kto",
                               ["min-agreement.min_raters=2"])
    assert kept == [rows[1]]
    assert [why for _, why in report.steps[0].removed] == [
        "low agreement: 50% of 2 raters agree, below 75%",
        "low agreement: 50% of 4 raters agree, below 75%",
        "unknown agreement: not rated in this workspace"]


# ---- ragloop filter ------------------------------------------------------------------------

def test_filter_preview_on_documents(corpus, ragloop_home):
    run("index", "docs", *emb())
    result = run("filter", "exact-dedup", "near-dedup", "-o", "near-dedup.threshold=0.5")
    assert result.output == (
        "Documents: kept 2 of 3.\n"
        "exact-dedup: kept 2 of 3, removed 1\n"
        "  1 exact duplicate\n"
        "    docs/copy.md: exact duplicate: same text as docs/a.md\n"
        "near-dedup: kept 2 of 2\n"
        "Dry run: nothing was changed.\n")
    report = json.loads(run("filter", "exact-dedup", "--json").stdout)
    assert report == {"kind": "documents", "given": 3, "kept": 2, "dry_run": True,
                      "applied": [], "filters": [
                          {"name": "exact-dedup", "given": 3, "kept": 2, "removed": 1,
                           "reasons": {"exact duplicate": 1}, "notes": [], "examples": [
                               {"record": "docs/copy.md",
                                "reason": "exact duplicate: same text as docs/a.md"}]}]}
    assert indexed(ragloop_home) == ["a.md", "b.md", "copy.md"]


def test_filter_apply_removes_dropped_documents_from_the_index(corpus, ragloop_home):
    run("index", "docs", *emb())
    result = run("filter", "exact-dedup", "pii-redact", "--apply")
    assert result.output.splitlines()[-1] == "Removed 1 document from the index."
    assert indexed(ragloop_home) == ["a.md", "b.md"]
    result = run("filter", "length", "-o", "length.min_words=1000", "--apply", ok=False)
    assert result.output == ("Error: the filter chain removed all 2 documents (length removed 2 "
                             "(2 too short)); nothing was written\n")
    assert indexed(ragloop_home) == ["a.md", "b.md"]
    preview = run("filter", "length", "-o", "length.min_words=1000")
    assert preview.output.splitlines()[-2:] == [
        "The chain removes all 2 documents; a command using it would stop and write nothing.",
        "Dry run: nothing was changed."]


def test_filter_on_training_rows_and_bad_input(ws):
    result = run("filter", "length", "--on", "sft", ok=False)
    assert result.output == "Error: no sft rows yet; run `ragloop rate` first\n"
    p, q = item(ws, "p"), item(ws, "q")
    compare(ws, p, "a")
    compare(ws, q, "a")
    result = run("filter", "exact-dedup", "-o", "exact-dedup.fields=question", "--on", "pairs")
    assert result.output == "Pairs: kept 2 of 2.\nexact-dedup: kept 2 of 2\n" \
                            "Dry run: nothing was changed.\n"
    bad = [
        (["filter", "length", "--on", "pairs", "--apply"], "Error: --apply only removes "
         "documents from the index; training rows are filtered where they are used (`ragloop "
         "prefs export --filter`, `ragloop train --filter`), and ratings are never deleted\n"),
        (["filter", "length"], "Error: nothing is indexed yet; run `ragloop index PATH` first\n"),
        (["filter", "min-agreement"], "Error: filter 'min-agreement' does not apply to "
         "documents (it applies to pairs, kto, sft)\n"),
    ]
    for args, message in bad:
        result = run(*args, ok=False)
        assert (result.exit_code, result.output) == (1, message)


def test_filter_without_names_lists_filters_and_options():
    lines = run("filter").output.splitlines()
    assert lines[0] == ("exact-dedup (documents, pairs, kto, sft): Drops records whose text "
                        "repeats an earlier one (case and spacing ignored).")
    assert "  threshold = 0.8: Jaccard similarity of word shingles from which a record counts " \
           "as a near duplicate, in (0, 1]." in lines
    assert "  redact = aws,github,secret,email,phone: What to redact, comma-separated: aws, " \
           "github, secret, email, phone." in lines


def test_filter_command_comes_from_the_filters_plugin(ragloop_home):
    """`ragloop filter` is the filters family's command (register_commands), not the core's,
    and the group still lists it with the same summary."""
    import click

    from ragloop.core.cli import cli
    from ragloop.core.plugins import DEFAULT_PLUGINS
    from ragloop.plugins.filters import command

    assert "filter" not in cli.commands
    assert "ragloop.plugins.filters.command" in DEFAULT_PLUGINS
    group = click.Group()
    command.register_commands(group)
    assert group.commands["filter"] is command.filter_
    assert "  filter     Preview a chain of data filters on the workspace's data.\n" in \
        run("--help").output
    usage, _, rest = run("filter", "--help").output.partition("\n")
    assert usage.endswith(" filter [OPTIONS] [NAME]...")     # the runner names the group `cli`
    assert rest.startswith("\n  Preview a chain of data filters on the workspace's data.\n")


def test_index_passes_filter_options_to_the_chain(tmp_path):
    from click.testing import CliRunner
    from tiny_models import tiny_embedder

    from ragloop.core.cli import cli
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("only three words\n")
    (docs / "b.md").write_text("a somewhat longer document with enough words to pass\n")
    result = CliRunner().invoke(cli, ["index", str(docs), "-o", f"embedder.model={tiny_embedder()}",
                                      "--filter", "length", "--filter-option", "length.min_words=5"])
    assert result.exit_code == 0, result.output
    assert "1 added" in result.output and "a.md" in result.output
    bad = CliRunner().invoke(cli, ["index", str(docs), "--filter", "length",
                                   "--filter-option", "length.bogus=1"])
    assert bad.exit_code == 1 and "unknown option 'bogus'" in bad.output
