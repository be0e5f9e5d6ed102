"""The built-in data filters on hand-built records, and the chain that runs them."""

import pytest

from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.filtering import apply_chain, run_chain
from ragloop.core.registry import get_filter
from ragloop.plugins.filters.dedup import normalize

LOREM = ("Rivers carry water from the mountains down to the sea, and along the way they cut "
         "valleys, feed farms and give cities their drinking water. Most large cities were "
         "built next to a river for that reason, and many still depend on it today.")
OTHER = ("A compiler turns source code into machine instructions. It parses the text into "
         "a tree, checks the types, optimizes the tree and finally emits code for the target "
         "processor, which the linker then joins with the libraries into one program.")
THIRD = ("Bread needs only flour, water, salt and yeast. Knead the dough until it is smooth, "
         "let it rise for an hour in a warm place, shape the loaf, let it rise again and bake "
         "it in a hot oven until the crust is brown and the bottom sounds hollow.")


def make(name, **options):
    cls = get_filter(name)
    return cls(build_config(cls.Config, [f"{k}={v}" for k, v in options.items()]))


def run(name, records, **options):
    return make(name, **options).apply(records)


def docs(*texts):
    return [{"path": f"/d/{i}.md", "text": t, "metadata": {}} for i, t in enumerate(texts)]


def reasons(result):
    return [why for _, why in result.removed]


# ---- dedup ---------------------------------------------------------------------------------

def test_exact_dedup_ignores_case_and_spacing():
    records = docs("Hello  World\n", "hello world", "Hello, world", "HELLO\tWORLD")
    result = run("exact-dedup", records)
    assert [r["path"] for r in result.kept] == ["/d/0.md", "/d/2.md"]
    assert reasons(result) == ["exact duplicate: same text as /d/0.md"] * 2
    assert normalize(" A\n b ") == "a b"


def test_exact_dedup_of_training_rows_compares_prompt_and_answers():
    rows = [{"prompt": "P", "chosen": "yes", "rejected": "no", "question": "q1"},
            {"prompt": "P", "chosen": "yes", "rejected": "maybe", "question": "q1"},
            {"prompt": "p ", "chosen": "YES", "rejected": "no", "question": "q2"}]
    result = run("exact-dedup", rows)
    assert result.kept == rows[:2]
    assert reasons(result) == ["exact duplicate: same text as 'q1'"]
    by_prompt = run("exact-dedup", rows, fields="prompt")
    assert len(by_prompt.kept) == 1
    sft = [{"prompt": "P", "completion": "a"}, {"prompt": "P", "completion": "b"},
           {"prompt": "P", "completion": " a"}]
    assert len(run("exact-dedup", sft).kept) == 2


def test_dedup_refuses_a_field_the_records_lack():
    with pytest.raises(RagloopError, match="field 'answer' is not in the records; they have "
                                           "path, text, metadata"):
        run("exact-dedup", docs("a"), fields="answer")


def test_near_dedup_catches_light_edits_and_keeps_distinct_texts():
    # MinHash estimates similarity: on texts of a few dozen words one edited word moves it
    # by more than the estimate's noise, so the texts here have a realistic length.
    text = " ".join([LOREM, OTHER, LOREM.replace("river", "lake"), OTHER.lower()])
    distinct = " ".join([THIRD, OTHER.replace("compiler", "translator")])
    edited = text.replace("Most large", "Many large").replace("today.", "today!")
    records = docs(text, distinct, edited, text.upper())
    result = run("near-dedup", records)
    assert [r["path"] for r in result.kept] == ["/d/0.md", "/d/1.md"]
    assert [r["path"] for r, _ in result.removed] == ["/d/2.md", "/d/3.md"]
    assert reasons(result)[0].startswith("near duplicate: ~0.")
    assert reasons(result)[0].endswith("similar to /d/0.md")
    assert reasons(result)[1] == "near duplicate: ~1.00 similar to /d/0.md"
    strict = run("near-dedup", records, threshold=1.0)
    assert [r["path"] for r, _ in strict.removed] == ["/d/3.md"]


def test_near_dedup_is_deterministic_and_keeps_empty_texts():
    records = docs(LOREM, LOREM + " Indeed.", "", "")
    first, second = run("near-dedup", records), run("near-dedup", records)
    assert reasons(first) == reasons(second) and len(first.kept) == 3
    assert [r["path"] for r in first.kept] == ["/d/0.md", "/d/2.md", "/d/3.md"]


@pytest.mark.parametrize("option, message", [
    ("threshold=0", "threshold must be in (0, 1], got 0.0"),
    ("threshold=1.5", "threshold must be in (0, 1], got 1.5"),
    ("num_perm=8", "num_perm must be at least 16, got 8"),
    ("shingle=0", "shingle must be at least 1, got 0"),
])
def test_near_dedup_refuses_bad_options(option, message):
    cls = get_filter("near-dedup")
    with pytest.raises(RagloopError) as err:
        build_config(cls.Config, [option], owner="filter 'near-dedup'")
    assert err.value.message == f"invalid options for filter 'near-dedup': {message}"


# ---- length and quality --------------------------------------------------------------------

def test_length_bounds_in_words_and_characters():
    records = docs("one two", "one two three four five six", "x" * 50)
    result = run("length", records, min_words=1, max_words=5)
    assert [r["path"] for r in result.kept] == ["/d/0.md", "/d/2.md"]
    assert reasons(result) == ["too long: 6 words, more than 5"]
    result = run("length", records, min_words="none", min_chars=10, max_chars=40)
    assert reasons(result) == ["too short: 7 characters, fewer than 10",
                               "too long: 50 characters, more than 40"]
    assert reasons(run("length", records)) == ["too short: 2 words, fewer than 5",
                                               "too short: 1 word, fewer than 5"]


def test_length_judges_each_answer_of_a_pair_not_the_prompt():
    pair = {"prompt": "long " * 100, "chosen": "a fine full answer here", "rejected": "no"}
    result = run("length", [pair], min_words=2)
    assert reasons(result) == ["too short: rejected 1 word, fewer than 2"]
    assert run("length", [{"prompt": "p", "completion": "one two three four five"}]).kept


def test_length_refuses_crossed_bounds():
    with pytest.raises(RagloopError, match="min_words \\(9\\) is more than max_words \\(3\\)"):
        build_config(get_filter("length").Config, ["min_words=9", "max_words=3"])


def test_quality_heuristics():
    records = docs(
        LOREM,
        "1234 5678 9012 3456 7890 !!!! #### 2222 3333 4444 ok",
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\nSed do eiusmod tempor.",
        "We use cookies to improve your experience.\nAccept all cookies\nReal text follows here.",
        "Buy now.\nBuy now.\nBuy now.\nBuy now.\nSomething else entirely.",
        "spam and eggs spam and eggs " * 10,
    )
    result = run("quality", records)
    assert result.kept == records[:1]
    assert reasons(result) == [
        "few letters: 5% letters, below 50%",
        "boilerplate: 'lorem ipsum' on 1 of 2 lines, above 20%",
        "boilerplate: 'we use cookies' on 2 of 3 lines, above 20%",
        "repeated lines: 60% of 5 lines repeat an earlier one, above 30%",
        "repeated phrases: 95% of 56 5-word phrases repeat, above 20%",
    ]
    assert run("quality", records[2:3], boilerplate="nothing-matches").kept


# ---- PII -----------------------------------------------------------------------------------

def test_pii_is_redacted_with_counts_and_nothing_is_dropped():
    text = ("Mail ada@example.com or bob.smith+x@mail.co.uk, call +44 20 7946 0958 or "
            "(555) 123-4567. Keys: AKIAIOSFODNN7EXAMPLE, ghp_abcdefghijklmnopqrstuvwxyz0123456789, "
            "API_KEY=\"9f86d081884c7d659a2feaa0c55ad015\".")
    clean = ("Released 2024-01-15 as v1.2.3 on 192.168.1.100; commit "
             "3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39, 128 256 512 MB, password: hunter2.")
    f = make("pii-redact")
    result = f.apply(docs(text, clean))
    assert result.removed == []
    assert result.kept[0]["text"] == (
        "Mail [EMAIL] or [EMAIL], call [PHONE] or [PHONE]. Keys: [AWS_KEY], [GITHUB_TOKEN], "
        "API_KEY=\"[SECRET]\".")
    assert result.kept[1]["text"] == clean
    assert f.notes == ["redacted 1 AWS key, 1 GitHub token, 1 secret, 2 emails, "
                       "2 phone numbers in 1 document"]


def test_pii_redacts_every_text_field_of_a_row_and_only_what_is_asked():
    row = {"prompt": "from ada@example.com", "completion": "call 555-123-4567",
           "question": "who is ada@example.com?", "candidate_id": "ada@example.com"}
    f = make("pii-redact", redact="email")
    (kept,) = f.apply([row]).kept
    assert kept == {"prompt": "from [EMAIL]", "completion": "call 555-123-4567",
                    "question": "who is [EMAIL]?", "candidate_id": "ada@example.com"}
    assert f.notes == ["redacted 2 emails in 1 row"]
    with pytest.raises(RagloopError, match="redact: unknown 'ssn'; choose from aws, github"):
        build_config(get_filter("pii-redact").Config, ["redact=email,ssn"])


# ---- curriculum ----------------------------------------------------------------------------

def test_curriculum_orders_by_length_and_by_margin():
    rows = [{"prompt": "p", "completion": "three words here", "margin": 0.5},
            {"prompt": "p", "completion": "one", "margin": 2.0},
            {"prompt": "p", "completion": "two words", "margin": -1.0}]
    f = make("curriculum")
    assert [r["completion"] for r in f.apply(rows).kept] == ["one", "two words",
                                                             "three words here"]
    assert f.notes == ["ordered 3 rows easy to hard by length (words 1 to 3)"]
    f = make("curriculum", by="margin")
    assert [r["margin"] for r in f.apply(rows).kept] == [2.0, 0.5, -1.0]
    assert [r["margin"] for r in run("curriculum", rows, by="margin", hardest_first="true").kept] \
        == [-1.0, 0.5, 2.0]
    with pytest.raises(RagloopError, match="curriculum by margin: 1 of 1 rows have no number "
                                           "in 'reward'"):
        run("curriculum", rows[:1], by="margin", margin_key="reward")


# ---- the chain -----------------------------------------------------------------------------

def test_chain_runs_in_order_and_reports_each_filter():
    records = docs(LOREM, LOREM.lower(), "too short", "write to ada@example.com " + OTHER)
    kept, report = apply_chain(None, ["exact-dedup", "length", "pii-redact"], records,
                               "documents", ["length.min_words=3"])
    assert [r["path"] for r in kept] == ["/d/0.md", "/d/3.md"]
    assert "[EMAIL]" in kept[1]["text"]
    assert [(s.name, s.given, s.kept, len(s.removed)) for s in report.steps] == [
        ("exact-dedup", 4, 3, 1), ("length", 3, 2, 1), ("pii-redact", 2, 2, 0)]
    assert report.lines(examples=1) == [
        "Documents: kept 2 of 4.",
        "exact-dedup: kept 3 of 4, removed 1",
        "  1 exact duplicate",
        "    /d/1.md: exact duplicate: same text as /d/0.md",
        "length: kept 2 of 3, removed 1",
        "  1 too short",
        "    /d/2.md: too short: 2 words, fewer than 3",
        "pii-redact: kept 2 of 2",
        "  redacted 1 email in 1 document",
    ]
    assert report.notes() == [
        "filter exact-dedup removed 1 (1 exact duplicate) of 4 documents.",
        "filter length removed 1 (1 too short) of 3 documents.",
        "filter pii-redact: redacted 1 email in 1 document"]


def test_context_is_compared_with_but_never_returned():
    context = [{"path": "/old.md", "text": "Hello world", "metadata": {}}]
    records = docs("hello   WORLD", OTHER)
    kept, report = apply_chain(None, ["length", "exact-dedup"], records, "documents",
                               ["length.min_words=1"], context=context)
    assert kept == records[1:]
    assert report.steps[1].removed == [(records[0], "exact duplicate: same text as /old.md "
                                                    "(indexed)")]


def test_context_goes_through_rewrites_before_it_is_compared():
    context = [{"path": "/old.md", "text": "write to ada@example.com", "metadata": {}}]
    records = docs("write to bob@example.org")
    kept, _ = apply_chain(None, ["pii-redact", "exact-dedup"], records, "documents",
                          context=context, allow_empty=True)
    assert kept == []


def test_a_chain_that_removes_everything_says_so():
    with pytest.raises(RagloopError) as err:
        apply_chain(None, ["exact-dedup", "length"], docs("a b", "A  B", "c"), "documents",
                    ["length.min_words=3"])
    assert err.value.message == (
        "the filter chain removed all 3 documents (exact-dedup removed 1 (1 exact duplicate); "
        "length removed 2 (2 too short)); nothing was written")
    kept, report = run_chain([make("length")], docs("a"), "documents", allow_empty=True)
    assert kept == [] and report.kept == 0
    assert apply_chain(None, ["length"], [], "sft")[0] == []


@pytest.mark.parametrize("names, kind, options, message", [
    (["no-such"], "documents", [], "unknown filter 'no-such'; available: exact-dedup, "
                                   "near-dedup, length, quality, pii-redact, min-agreement, "
                                   "drop-ties, curriculum"),
    (["curriculum"], "documents", [], "filter 'curriculum' does not apply to documents "
                                      "(it applies to pairs, kto, sft)"),
    (["length"], "documents", ["min_words=3"], "option 'min_words=3' does not name a filter "
     "of the chain; write -o FILTER.key=value with FILTER one of length"),
    (["length"], "documents", ["quality.ngram=3"], "option 'quality.ngram=3' does not name a "
     "filter of the chain; write -o FILTER.key=value with FILTER one of length"),
    (["length"], "sft", ["length.colour=red"], "unknown option 'colour' for filter 'length'; "
     "valid options: min_words, max_words, min_chars, max_chars"),
    (["near-dedup"], "pairs", ["near-dedup.threshold=2"], "invalid options for filter "
     "'near-dedup': threshold must be in (0, 1], got 2.0"),
    (["length"], "rows", [], "unknown record kind 'rows'; kinds: documents, pairs, kto, sft"),
])
def test_bad_chains_are_refused_before_anything_runs(names, kind, options, message):
    with pytest.raises(RagloopError) as err:
        apply_chain(None, names, [], kind, options)
    assert err.value.message == message
