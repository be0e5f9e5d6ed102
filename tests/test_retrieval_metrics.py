"""The retrieval benchmark's metrics on hand-built rankings, and its corpus builders on small
hand-written man-page-like and FAQ-like texts (nothing here reads /usr/share or a model)."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_retrieval  # noqa: E402
import retrieval_corpora as rc  # noqa: E402
import retrieval_metrics as rm  # noqa: E402

# ---- metrics -----------------------------------------------------------------------------


def test_chunks_rank_documents_by_their_best_chunk():
    assert rm.to_documents(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_recall_mrr_ndcg_on_a_known_ranking():
    ranking = ["x", "y", "rel", "z"]
    scores = rm.query_scores(ranking, ["rel"])
    assert scores["recall@1"] == 0.0
    assert scores["recall@5"] == scores["recall@10"] == 1.0
    assert scores["mrr@10"] == pytest.approx(1 / 3)
    assert scores["ndcg@10"] == pytest.approx(1 / math.log2(4))


def test_a_relevant_document_past_ten_counts_nothing():
    ranking = [f"d{i}" for i in range(10)] + ["rel"]
    scores = rm.query_scores(ranking, ["rel"])
    assert scores == {"recall@1": 0.0, "recall@5": 0.0, "recall@10": 0.0, "mrr@10": 0.0,
                      "ndcg@10": 0.0}


def test_several_relevant_documents():
    ranking = ["a", "x", "b", "y"]
    scores = rm.query_scores(ranking, ["a", "b", "c"])
    assert scores["recall@1"] == pytest.approx(1 / 3)
    assert scores["recall@5"] == pytest.approx(2 / 3)
    assert scores["mrr@10"] == 1.0
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert scores["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / ideal)


def test_duplicate_chunks_of_one_document_do_not_push_others_down():
    chunk_docs = ["a", "a", "a", "rel"]
    assert rm.query_scores(rm.to_documents(chunk_docs), ["rel"])["mrr@10"] == 0.5


def test_bootstrap_contains_the_mean_and_repeats_with_its_seed():
    values = [1.0] * 30 + [0.0] * 20 + [0.5] * 10
    first = rm.bootstrap(values, seed=7)
    assert first.low <= first.mean <= first.high
    assert first.mean == pytest.approx(35 / 60)
    assert first.high - first.low > 0.05
    again = rm.bootstrap(values, seed=7)
    assert (again.low, again.high) == (first.low, first.high)
    assert rm.bootstrap([0.25] * 40).to_dict() == {"mean": 0.25, "low": 0.25, "high": 0.25}


def test_stratified_bootstrap_keeps_each_corpus_whole():
    # one corpus all 1s, the other all 0s: every resample that keeps the sizes has mean 0.75
    values, strata = [1.0] * 30 + [0.0] * 10, ["a"] * 30 + ["b"] * 10
    estimate = rm.bootstrap(values, strata)
    assert (estimate.low, estimate.mean, estimate.high) == pytest.approx((0.75, 0.75, 0.75))
    assert rm.bootstrap(values).high > 0.8


def test_paired_difference():
    a = [1.0, 0.0, 1.0, 1.0] * 10
    assert rm.paired_difference(a, a).to_dict() == {"mean": 0.0, "low": 0.0, "high": 0.0}
    better = [min(1.0, x + 0.5) for x in a]
    diff = rm.paired_difference(better, a)
    assert diff.low <= diff.mean <= diff.high
    assert diff.mean == pytest.approx(0.125)
    assert diff.low > 0
    with pytest.raises(ValueError):
        rm.paired_difference([1.0], [1.0, 0.0])


def test_speed_ratio_of_two_throughputs_with_an_interval_over_items():
    # a: 100 tokens in 1 s per item; b: 50 tokens in 1 s: a is exactly twice as fast
    same = rm.speed_ratio([100] * 4, [1.0] * 4, [50] * 4, [1.0] * 4)
    assert same.mean == pytest.approx(2.0) and same.low == same.high == pytest.approx(2.0)
    # A ratio of sums, not a mean of per-item ratios: the long item weighs more.
    mixed = rm.speed_ratio([100, 300], [1.0, 1.0], [100, 100], [1.0, 2.0])
    assert mixed.mean == pytest.approx((400 / 2) / (200 / 3))
    assert mixed.low <= mixed.mean <= mixed.high
    noisy = rm.speed_ratio([100, 120, 80, 110], [1.0] * 4, [50] * 4, [1.0] * 4, seed=1)
    assert noisy.low < 2.05 < noisy.high and noisy.high - noisy.low > 0.1
    assert noisy == rm.speed_ratio([100, 120, 80, 110], [1.0] * 4, [50] * 4, [1.0] * 4,
                                   seed=1)
    assert rm.speed_ratio([], [], [], []).mean == 0.0


def test_summarize_gives_every_metric():
    per_query = [rm.query_scores(["a", "b"], ["a"]), rm.query_scores(["b", "a"], ["a"])]
    summary = rm.summarize(per_query)
    assert set(summary) == set(rm.METRICS)
    assert summary["mrr@10"].mean == pytest.approx(0.75)


# ---- the baselines' chunks and fusion ----------------------------------------------------


def test_paragraph_chunks_pack_up_to_the_size():
    text = "\n\n".join(["a" * 300, "b" * 300, "c" * 300, "word " * 400])
    chunks = bench_retrieval.paragraph_chunks(text, 800)
    assert chunks[0] == "a" * 300 + "\n\n" + "b" * 300
    assert all(len(c) <= 800 for c in chunks)
    assert "".join(chunks).replace("\n", "").replace(" ", "") == \
        text.replace("\n", "").replace(" ", "")


def test_naive_rrf():
    # 3: 1/63 + 1/61 beats 2: 1/62 + 1/62, by a hair
    assert bench_retrieval.rrf([[1, 2, 3], [3, 2]]) == [3, 2, 1]


def test_document_evidence_lifts_a_document_matched_by_several_chunks():
    ranked = [(1, 0.9), (2, 0.8), (3, 0.5)]
    paths = {1: "a.md", 2: "b.md", 3: "b.md"}
    assert bench_retrieval.document_evidence(ranked, paths, 0.0) == ranked
    lifted = bench_retrieval.document_evidence(ranked, paths, 0.3)
    assert [c for c, _ in lifted] == [2, 1, 3]
    assert lifted[0][1] == pytest.approx(0.8 + 0.3 * 0.5)


# ---- man pages ---------------------------------------------------------------------------

RENDERED = """\
FROB(1)                          User Commands                          FROB(1)

NAME
       frob - twist the knobs of a widget
       until it squeaks

SYNOPSIS
       frob [-v] WIDGET

DESCRIPTION
       frob turns every knob of WIDGET by a quarter.

       -v     say what is turned

SEE ALSO
       knob(5)

frobtools 1.0                        2024-01-01                         FROB(1)
"""


def test_a_man_page_loses_its_name_section_and_keeps_its_sections():
    name, body = rc.split_man_page(RENDERED)
    assert name == "frob - twist the knobs of a widget until it squeaks"
    assert rc.name_description(name) == "twist the knobs of a widget until it squeaks"
    assert "twist the knobs" not in body
    assert "User Commands" not in body and "frobtools 1.0" not in body
    assert body.startswith("## SYNOPSIS\n")
    assert "\n## DESCRIPTION\n" in body and "\n## SEE ALSO\n" in body
    assert "frob turns every knob" in body


def test_man_page_titles_and_descriptions():
    assert rc.page_title(Path("/x/man1/ls.1.gz")) == "ls(1)"
    assert rc.page_title(Path("/x/man3/Archive::Tar.3perl.gz")) == "Archive::Tar(3perl)"
    assert rc.name_description("printf, fprintf - formatted output conversion") == \
        "formatted output conversion"
    assert rc.name_description("no dash here") == ""
    assert rc.usable_description("list directory contents")
    assert not rc.usable_description("a shell")
    assert not rc.usable_description("manual page for frob 1.2.3")


def test_lexgrog_output_and_shared_descriptions():
    out = ('/m/a.1.gz: "a - do the first thing"\n/m/b.1.gz: "b - do the first thing"\n'
           '/m/c.1.gz: "c - something else entirely"\n/m/c.1.gz: "cc - something else entirely"\n'
           '/m/d.1.gz: parse failed\n')
    found = rc.parse_lexgrog(out)
    assert found == {"/m/a.1.gz": {"do the first thing"}, "/m/b.1.gz": {"do the first thing"},
                     "/m/c.1.gz": {"something else entirely"}}
    assert rc.shared_descriptions(found) == {"do the first thing"}


# ---- FAQ files ---------------------------------------------------------------------------

NUMBERED_FAQ = """\
Contents

1.1\tWhat is frob?
1.2\tWhy does frob squeak when
\tthe knob is loose?

______________________________________________________________________

1.1\tWhat is frob?

\tFrob is a tool that turns the knobs of widgets, one quarter at a time,
\tuntil they squeak; it was written in a weekend.

1.2\tWhy does frob squeak when
\tthe knob is loose?

\tA loose knob slips under the driver, and the slipping squeaks. Tighten
\tthe knob first, or turn it by hand. This is
3.79.1 of the manual, and not a heading.

2.1\tHi?

\tThis question is too short to have one answer, but its answer stays a document
\tin the corpus, as a distractor.
"""

QA_FAQ = """\
Frob FAQ
========

Q: Why is the sky of frob blue?

Q: Why is the sea of frob blue too?

A: Both reflect the big knob above them, which was painted blue in 1987 by
   the first maintainer, and nobody has repainted it since then.

* Other questions:

Q. Can frob turn two widgets at once?

A. No. Frob turns one widget at a time, since two would need two drivers
and the machine has only one of them.
"""


def test_numbered_faq_skips_its_contents_and_wrapped_numbers():
    entries = {e.number: e for e in rc.parse_numbered(NUMBERED_FAQ)}
    assert set(entries) == {"1.1", "1.2", "2.1"}
    assert entries["1.1"].questions == ["What is frob?"]
    assert entries["1.1"].answer.startswith("Frob is a tool")
    assert entries["1.2"].questions == ["Why does frob squeak when the knob is loose?"]
    assert entries["1.2"].answer.endswith("3.79.1 of the manual, and not a heading.")
    assert "___" not in entries["1.2"].answer


def test_qa_faq_shares_an_answer_between_questions():
    entries = rc.parse_qa(QA_FAQ)
    assert [e.questions for e in entries] == [
        ["Why is the sky of frob blue?", "Why is the sea of frob blue too?"],
        ["Can frob turn two widgets at once?"]]
    assert entries[0].answer.startswith("Both reflect") and "Other questions" not in \
        entries[0].answer
    assert entries[1].answer.endswith("only one of them.")


def test_other_faq_layouts():
    setext = "Frob questions\n--------------\n\nWhy frob?\n=========\n\nBecause knobs.\n"
    assert [(e.questions, e.answer) for e in rc.parse_setext(setext)] == \
        [(["Why frob?"], "Because knobs.")]
    outdented = "Why does frob squeak?\n\n\tIt is loose.\n\nWhy frob?\n\tKnobs.\n"
    assert [(e.questions[0], e.answer) for e in rc.parse_outdented(outdented)] == \
        [("Why does frob squeak?", "It is loose."), ("Why frob?", "Knobs.")]
    stars = "preamble\n\n****\n\nFrob squeaks.\n\nOil it.\n# not a heading\n\n****\n"
    entry, = rc.parse_stars(stars)
    assert entry.questions == ["Frob squeaks."]
    assert entry.answer == "Oil it.\n # not a heading"


def test_faq_corpus_indexes_answers_without_their_questions(tmp_path):
    root = tmp_path / "doc"
    (root / "frob").mkdir(parents=True)
    (root / "frob" / "FAQ").write_text(NUMBERED_FAQ)
    (root / "frob" / "QA").write_text(QA_FAQ)
    sources = (("frob/FAQ", "numbered", "frob", True), ("frob/QA", "qa", "frob qa", False),
               ("frob/missing", "qa", "gone", False))
    corpus = rc.build_faq_corpus(tmp_path / "out", limit=10, seed=0, sources=sources,
                                 root=root)
    files = sorted(p.name for p in corpus.folder.iterdir())
    assert files == ["frob-faq-1.1.md", "frob-faq-1.2.md", "frob-faq-2.1.md",
                     "frob_qa-faq-1.md", "frob_qa-faq-2.md"]
    assert corpus.documents == 5
    doc = (corpus.folder / "frob-faq-1.2.md").read_text()
    assert doc.startswith("# frob FAQ 1.2\n\n")
    assert "squeak when" not in doc
    asked = {q.text: q.relevant for q in corpus.queries}
    assert asked == {
        "What is frob?": ["frob-faq-1.1.md"],
        "Why does frob squeak when the knob is loose?": ["frob-faq-1.2.md"],
        "Why is the sky of frob blue?": ["frob_qa-faq-1.md"],
        "Why is the sea of frob blue too?": ["frob_qa-faq-1.md"],
        "Can frob turn two widgets at once?": ["frob_qa-faq-2.md"]}
    again = rc.build_faq_corpus(tmp_path / "again", limit=10, seed=0, sources=sources,
                                root=root)
    assert [q.text for q in again.queries] == [q.text for q in corpus.queries]


def test_faq_questions_are_sampled_with_a_cap_per_faq():
    candidates = [(f"big question {i}", f"big-{i}.md", "big") for i in range(20)] + \
        [(f"small question {i}", f"small-{i}.md", "small") for i in range(3)]
    chosen = rc.sample_questions(candidates, 10, seed=1)
    assert len(chosen) == 8             # 5 of the big FAQ's, all 3 of the small one's
    assert sum(f.startswith("big") for _, f in chosen) == 5
    assert chosen == rc.sample_questions(candidates, 10, seed=1)
    assert chosen != rc.sample_questions(candidates, 10, seed=2)
