"""Prompt plugins: the `default` prompt is today's prompt byte for byte; the `few-shot` prompt
picks the best-rated answers to the nearest earlier questions (hand-built ratings in a real
workspace, the packaged MiniLM as its embedder), never the question asked, and fits the
context by leaving examples out first; `ask/rate --prompt`; bad input."""

import json
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from cli_helpers import run
from tiny_models import tiny_causal_lm, tiny_embedder

from ragloop.core import Generator, Prompt, registry
from ragloop.core.errors import RagloopError
from ragloop.core.hookspecs import hookimpl
from ragloop.core.ids import new_id
from ragloop.core.pipeline.prompt import build_prompt, load_prompt, make_messages
from ragloop.core.pipeline.search import Hit, Searcher
from ragloop.core.plugins import load_plugins, pm
from ragloop.core.workspace import Workspace, utcnow
from ragloop.plugins.prompts.few_shot import NO_RATINGS

# Today's prompt, as core/pipeline/prompt.py wrote it before prompts were plugins.
INSTRUCTION = ("Answer the question using the sources below. "
               "Cite the source number in brackets, like [1].")


def todays_messages(question, hits):
    sources = "\n".join(f"[{i}] {' '.join(h.text.split())}" for i, h in enumerate(hits, 1))
    user = f"{INSTRUCTION}\n\nSources:\n{sources}\n\nQuestion: {question.strip()}"
    return [{"role": "user", "content": user}]


class Words(Generator):
    """A generator that counts words as tokens, to fit prompts into a known context."""
    name = "test-words"

    def __init__(self, context=4096):
        super().__init__()
        self.context = context

    @property
    def context_length(self):
        return self.context

    def count_tokens(self, text):
        return len(text.split())

    def render(self, messages):
        return "".join(f"<{m['role']}>\n{m['content']}\n" for m in messages)


def hit(i, text, path="doc.md"):
    return Hit(i, path, "", 1, 1, text, 1.0 / i)


HITS = [hit(1, "Zebrafish  reads zebra.toml.\n"), hit(2, "Widgets {question} are limited."),
        hit(3, "Flurbles hold widgets.")]


@contextmanager
def prompt_plugin(cls):
    """`cls` registered by a plugin named test-plugin, for the block."""
    class Plugin:
        @hookimpl
        def register_prompts(self, register):
            register(cls)

    load_plugins()
    pm.register(Plugin(), name="test-plugin")
    try:
        yield
    finally:
        pm.unregister(name="test-plugin")


def test_hook_register_prompts():
    class Terse(Prompt):
        name = "test-terse"

        def messages(self, question, passages, examples):
            return [{"role": "user", "content": question}]

    with prompt_plugin(Terse):
        assert registry.get_prompt("test-terse") is Terse
        assert registry.entries("prompt")["test-terse"].plugin == "test-plugin"
    assert "test-terse" not in registry.names("prompt")
    assert registry.names("prompt")[:2] == ["default", "few-shot"]


def test_the_default_prompt_is_todays_prompt_byte_for_byte():
    question = "  Where are the settings?\n"
    assert make_messages(question, HITS) == todays_messages(question, HITS)
    gen = Words()
    built = build_prompt(question, HITS, gen, 100)
    assert built.messages == todays_messages(question, HITS)
    assert built.text == gen.render(todays_messages(question, HITS))
    assert built.provenance == {} and built.notes == [] and built.examples == []
    # Fitted the same way: the lowest-ranked passage goes first, then the last is shortened.
    full = gen.count_tokens(built.text)
    tight = build_prompt(question, HITS, Words(context=full + 9), 10)
    assert tight.messages == todays_messages(question, tight.passages)
    assert [h.chunk_id for h in tight.passages] == [1, 2]
    assert tight.notes == [f"1 passage(s) left out to fit the model's context ({full + 9} "
                           f"tokens)"]
    long = [hit(1, "zebra " * 40)]
    size = gen.count_tokens(build_prompt(question, long, gen, 0).text)
    shortened = build_prompt(question, long, Words(context=size), 20)
    assert shortened.passages[0].text.endswith(" ...")
    assert shortened.messages == todays_messages(question, shortened.passages)
    assert shortened.notes == ["the last passage was shortened to fit the model's context"]


def test_a_template_without_the_question_is_a_one_line_error():
    with pytest.raises(RagloopError, match=r"^invalid options for prompt default: the template "
                                           r"lacks \{question\}; put \{question\} where"):
        load_prompt(None, "default", ["template=Sources:\\n{sources}"])
    own = load_prompt(None, "default", ["template=Q: {question}\\n{sources}"])
    assert own.messages("why?", HITS[:1], [])[0]["content"] == "Q: why?\n[1] Zebrafish reads " \
                                                                "zebra.toml."
    with pytest.raises(RagloopError, match=r"^unknown prompt 'nope'; available: default, "
                                           r"few-shot"):
        load_prompt(None, "nope")


# ---- few-shot over hand-built ratings --------------------------------------------------------

DOCS = {"install.md": "# Install\n\nInstall zebrafish with pip install zebrafish on Linux.\n",
        "settings.md": "# Settings\n\nZebrafish reads its settings from zebra.toml.\n",
        "sky.md": "# Sky\n\nThe sky looks blue because of Rayleigh scattering.\n"}
ASKED = "Where does zebrafish keep its settings?"


def add_question(db, text):
    qid = new_id()
    db["questions"].insert({"id": qid, "text": text, "text_hash": new_id(), "origin": "typed",
                            "created_at": utcnow()})
    return qid


def add_answer(db, qid, text, chunk_ids):
    cid = new_id()
    db["candidates"].insert({"id": cid, "question_id": qid, "text": text, "prompt": "p " + qid,
                             "messages_json": "[]", "chunk_ids_json": json.dumps(chunk_ids),
                             "scores_json": "[]", "params_json": "{}", "created_at": utcnow()})
    return cid


def compare(db, qid, a, b, choice, session=None):
    comparison = new_id()
    db["comparisons"].insert({"id": comparison, "question_id": qid, "candidate_a": a,
                              "candidate_b": b, "left_candidate": a, "choice": choice,
                              "rater": "human", "rater_id": "ann", "session": session,
                              "created_at": utcnow()})
    return comparison


def score(db, comparison, candidate, value):
    db["scores"].insert({"id": new_id(), "comparison_id": comparison, "candidate_id": candidate,
                         "score": value, "rater": "human", "rater_id": "ann",
                         "created_at": utcnow()})


@pytest.fixture
def rated_by_hand(tmp_path, ragloop_home):
    """A workspace indexed with the packaged MiniLM and ratings written as `rate` stores them:
    who won which comparison, and scores."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    run("index", docs)
    ws = Workspace(ragloop_home)
    db = ws.db
    chunk = {p.rsplit("/", 1)[1]: i for i, p in db.execute(
        "select c.id, d.path from chunks c join documents d on d.id = c.document_id")}
    ids = {}
    q = add_question(db, "Which file holds the zebrafish settings?")
    ids["five"] = add_answer(db, q, "The settings are in zebra.toml [1].",
                             [chunk["settings.md"], chunk["sky.md"]])
    ids["four"] = add_answer(db, q, "zebra.toml holds them [1].", [chunk["settings.md"]])
    both = compare(db, q, ids["five"], ids["four"], "tie")
    score(db, both, ids["five"], 5)
    score(db, both, ids["four"], 4)
    q = add_question(db, "How do I install zebrafish?")
    ids["install"] = add_answer(db, q, "Run pip install zebrafish [2].",
                                [chunk["sky.md"], chunk["install.md"]])
    ids["rejected"] = add_answer(db, q, "Buy it in a shop.", [chunk["install.md"]])
    compare(db, q, ids["install"], ids["rejected"], "a")
    q = add_question(db, "Why is the sky blue?")
    ids["sky"] = add_answer(db, q, "Rayleigh scattering [1].", [chunk["sky.md"]])
    ids["sky-lost"] = add_answer(db, q, "Paint.", [chunk["sky.md"]])
    compare(db, q, ids["sky"], ids["sky-lost"], "a")
    q = add_question(db, ASKED)                # the question asked: never its own example
    ids["same"] = add_answer(db, q, "In zebra.toml [1].", [chunk["settings.md"]])
    ids["same-lost"] = add_answer(db, q, "Nowhere.", [chunk["settings.md"]])
    compare(db, q, ids["same"], ids["same-lost"], "a")
    q = add_question(db, "Where are zebrafish settings stored, says eval?")
    ids["eval"] = add_answer(db, q, "Judged in an eval [1].", [chunk["settings.md"]])
    ids["eval-lost"] = add_answer(db, q, "x", [chunk["settings.md"]])
    compare(db, q, ids["eval"], ids["eval-lost"], "a", session="eval-1")
    db.conn.commit()
    return ws, ids


def test_few_shot_shows_the_best_rated_answers_to_the_nearest_questions(rated_by_hand):
    ws, ids = rated_by_hand
    searcher = Searcher(ws)
    prompt = load_prompt(ws, "few-shot")
    examples = prompt.examples(ASKED, searcher)
    used = [e["provenance"]["candidate_id"] for e in examples]
    # Nearest first: the settings question (its score-5 answer, not the 4), then install;
    # never the question asked, a rejected answer, an eval's comparison, or the far sky.
    assert used == [ids["five"], ids["install"]]
    assert examples[0]["provenance"]["similarity"] > examples[1]["provenance"]["similarity"]
    # Only the sources the answer cited, numbered as it cites them, cut to passage_words.
    assert examples[0]["sources"] == [(1, "Zebrafish reads its settings from zebra.toml.")]
    assert [n for n, _ in examples[1]["sources"]] == [2]

    hits = searcher.search(ASKED, k=2)
    built = build_prompt(ASKED, hits, Words(), 50, prompt, searcher)
    roles = [m["role"] for m in built.messages]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    assert built.messages[1]["content"] == "The settings are in zebra.toml [1]."
    assert built.messages[0]["content"].endswith(
        "Question: Which file holds the zebrafish settings?")
    assert built.messages[-1] == todays_messages(ASKED, built.passages)[0]
    assert built.provenance["prompt"] == "few-shot"
    assert [e["candidate_id"] for e in built.provenance["examples"]] == used

    three = load_prompt(ws, "few-shot", ["k=3", "passage_words=2"]).examples(ASKED, searcher)
    assert [e["provenance"]["candidate_id"] for e in three] == used + [ids["sky"]]
    assert three[0]["sources"] == [(1, "Zebrafish reads ...")]


def test_few_shot_fits_the_context_by_leaving_examples_out_first(rated_by_hand):
    ws, ids = rated_by_hand
    searcher = Searcher(ws)
    prompt = load_prompt(ws, "few-shot")
    hits = searcher.search(ASKED, k=3)
    full = build_prompt(ASKED, hits, Words(), 0, prompt, searcher)
    assert len(full.examples) == 2 and len(full.passages) == 3
    # Room for everything but the second example: it goes, the passages all stay.
    size = Words().count_tokens(full.text)
    second = sum(len(m["content"].split()) + 1 for m in full.messages[2:4])
    fitted = build_prompt(ASKED, hits, Words(context=size - second + 2), 0, prompt, searcher)
    assert [e["candidate_id"] for e in fitted.examples] == [ids["five"]]
    assert len(fitted.passages) == 3
    assert fitted.notes == ["1 example(s) left out to fit the model's context "
                            f"({size - second + 2} tokens)"]
    # No room for any example: then passages go as with the default prompt.
    plain = build_prompt(ASKED, hits, Words(), 0)
    bare = Words().count_tokens(plain.text)
    tight = build_prompt(ASKED, hits, Words(context=bare - 5), 0, prompt, searcher)
    assert tight.examples == [] and len(tight.passages) == 2
    assert tight.notes[0] == "2 example(s) left out to fit the model's context " \
                             f"({bare - 5} tokens)"


def test_few_shot_without_ratings_says_so_once_and_is_the_default(tmp_path, ragloop_home):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nZebrafish reads zebra.toml.\n")
    run("index", docs, "-o", f"embedder.model={tiny_embedder()}")
    ws = Workspace(ragloop_home)
    prompt = load_prompt(ws, "few-shot")
    hits = Searcher(ws).search(ASKED, k=1)
    first = build_prompt(ASKED, hits, Words(), 10, prompt)
    second = build_prompt(ASKED, hits, Words(), 10, prompt)
    assert first.messages == second.messages == todays_messages(ASKED, hits)
    assert first.notes == [NO_RATINGS] and second.notes == []
    assert first.provenance == {"prompt": "few-shot", "examples": []}


# ---- the commands ----------------------------------------------------------------------------

def gen():
    return ["-o", f"model={tiny_causal_lm()}", "--max-new-tokens", "4"]


@pytest.fixture
def indexed(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"doc{i}.md").write_text(f"# Part {i}\n\nZebrafish part {i} reads zebra.toml.\n")
    run("index", docs, "-o", f"embedder.model={tiny_embedder()}")
    return docs


def test_ask_and_rate_with_the_few_shot_prompt(indexed, tmp_path, ragloop_home):
    first = run("ask", "Where is part 1?", *gen(), "--prompt", "few-shot", "--json")
    assert "Note: the few-shot prompt found no rated answers yet" in first.stderr
    assert json.loads(first.stdout)["params"]["examples"] == []
    questions = tmp_path / "q.txt"
    questions.write_text("Where is part 0?\nWhere is part 2?\n")
    run("rate", "--rater", "judge", "--questions", questions, *gen())      # default prompt
    db = Workspace(ragloop_home).db
    pairs = db.execute("select question_id, group_concat(id) from (select * from candidates "
                       "order by rowid) group by question_id").fetchall()
    for qid, both in pairs:                    # a person scored each first answer 5
        first, second = both.split(",")
        score(db, compare(db, qid, first, second, "a"), first, 5)
    db.conn.commit()
    rated = run("rate", "--rater", "judge", "--rater-id", "j2", "--questions", questions,
                *gen(), "--prompt", "few-shot", "-o", "few-shot.k=1")
    assert "Rating 2 of 2 questions as j2" in rated.stderr
    params = [json.loads(p) for (p,) in db.execute(
        "select params_json from candidates order by rowid")]
    # Pairs under another prompt are not reused: four new answers, made with few-shot.
    assert [p.get("prompt") for p in params] == [None] * 4 + ["few-shot"] * 4
    assert len({p["settings"] for p in params}) == 2
    assert [len(p["examples"]) for p in params[4:]] == [1] * 4   # the other question's

    answer = run("ask", "Where is part 1?", *gen(), "--prompt", "few-shot", "-o",
                 "few-shot.k=2", "--json")
    assert "Note:" not in answer.stderr
    logged = json.loads(db.execute("select params_json, prompt from asks order by rowid desc")
                        .fetchone()[0])
    shown = logged["examples"]
    assert logged["prompt"] == "few-shot" and len(shown) == 2
    asked = {q for (q,) in db.execute("select text from questions")}
    texts = dict(db.execute("select c.id, q.text from candidates c join questions q "
                            "on q.id = c.question_id"))
    assert {texts[e["candidate_id"]] for e in shown} <= asked - {"Where is part 1?"}
    assert json.loads(answer.stdout)["params"]["examples"] == shown


def one_line_error(result, needle):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("Error: ") and needle in lines[0], lines
    return lines[0]


def test_bad_prompts_are_one_line_errors_before_anything_runs(indexed, tmp_path, ragloop_home):
    one_line_error(run("ask", "Where?", *gen(), "--prompt", "nope", ok=False),
                   "unknown prompt 'nope'; available: default, few-shot")
    one_line_error(run("ask", "Where?", *gen(), "-o", "default.template=Sources: {sources}",
                       ok=False), "the template lacks {question}")
    one_line_error(run("ask", "Where?", *gen(), "--prompt", "few-shot", "-o", "few-shot.k=0",
                       ok=False), "invalid options for prompt few-shot: k must be at least 1")
    one_line_error(run("ask", "Where?", *gen(), "-o", "few-shot.k=3", ok=False),
                   "-o few-shot.k=3 is for prompt 'few-shot', which is not in use; add --prompt "
                   "few-shot")
    (tmp_path / "q.txt").write_text("Where?\n")
    one_line_error(run("rate", "--rater", "judge", *gen(), "--prompt", "nope", "--questions",
                       tmp_path / "q.txt", ok=False), "unknown prompt 'nope'")

    class Forgetful(Prompt):
        name = "test-forgetful"

        def messages(self, question, passages, examples):
            return [{"role": "user", "content": "Answer from: " + passages[0].text}]

    with prompt_plugin(Forgetful):
        result = run("ask", "Where?", *gen(), "--prompt", "test-forgetful", ok=False)
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: prompt 'test-forgetful' leaves the question out of its last message; its "
        "template needs {question}")
    assert Workspace(ragloop_home).db["asks"].count == 0


def test_make_messages_serves_benchmarks_unchanged():
    one = SimpleNamespace(text=" a \n b ")
    assert make_messages("q", [one])[0]["content"].endswith("Sources:\n[1] a b\n\nQuestion: q")
