"""The Python API (`ragloop.core.Ragloop`): the same results, prompts, logs and errors as the
commands, with the embedder and generator loaded once per object."""

import json
import re
from pathlib import Path

import pytest
from cli_helpers import emb, run
from tiny_models import tiny_causal_lm

from ragloop.core import Ragloop, RagloopError, answer_sources

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "python-api.md").read_text()
PASSAGE = ("The zebrafish tool reads its settings from zebra.toml in the project folder. "
           "Set max_widgets to limit how many widgets each flurble may hold. ")
QUERIES = ["where are zebrafish settings", "max widgets per flurble", "zebra.toml folder"]


@pytest.fixture
def indexed(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"doc{i}.md").write_text(f"# Part {i}\n\n" + PASSAGE * (i + 1)
                                         + f"Only part {i} mentions gadget{i}.\n")
    run("index", docs, *emb())
    return docs


def gen():
    return [f"model={tiny_causal_lm()}"]


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_search_equals_the_commands_json(indexed, mode):
    with Ragloop() as rl:
        for query in QUERIES:
            cli = json.loads(run("search", query, "--json", "--mode", mode, "-k", 4).stdout)
            assert [h.to_dict() for h in rl.search(query, k=4, mode=mode)] == cli
            assert len(cli) == 4


def test_where_and_fusion_equal_the_command(indexed):
    with Ragloop() as rl:
        hits = rl.search("gadget3 zebrafish", k=3, where=["path=*doc3*"], fusion="rrf")
        cli = json.loads(run("search", "gadget3 zebrafish", "-k", 3, "--where", "path=*doc3*",
                             "--fusion", "rrf", "--json").stdout)
        assert [h.to_dict() for h in hits] == cli
        assert hits and all(h.path.endswith("doc3.md") for h in hits)


def test_bm25_without_a_path_condition_ranks_as_with_one(indexed):
    """Searcher.bm25 skips the join to documents when no --where needs the path."""
    with Ragloop() as rl:
        for query in [*QUERIES, "gadget2 part", "the"]:
            plain = [h.to_dict() for h in rl.search(query, k=6, mode="bm25")]
            assert plain == [h.to_dict() for h in rl.search(query, k=6, mode="bm25",
                                                            where=["path=*"])]
            assert plain


def test_second_search_reuses_the_loaded_embedder_and_a_reindex_is_seen(indexed):
    rl = Ragloop()
    rl.search("zebrafish", mode="dense")
    embedder, model = rl.embedder, rl.embedder.model
    store = rl.searcher.index.store.index
    for query in QUERIES:
        rl.search(query)
    assert rl.embedder is embedder and rl.embedder.model is model
    assert rl.searcher.index.store.index is store        # nor the vectors read again
    # Another process indexes a new file: the next search finds it, with the same model.
    (indexed / "new.md").write_text("# New\n\nThe quokka module calibrates sprockets.\n")
    run("index", indexed)
    hits = rl.search("quokka sprockets", k=1, mode="dense")
    assert hits[0].path.endswith("new.md")
    assert rl.embedder.model is model and rl.searcher.index.store.index is not store
    rl.close()
    with pytest.raises(RagloopError, match="this Ragloop is closed; open a new one"):
        rl.search("quokka")


def test_ask_logs_what_the_command_logs_and_keeps_the_generator(indexed, ragloop_home):
    question = "Where are zebrafish settings?"
    run("ask", question, "-o", gen()[0], "--max-new-tokens", 6, "-k", 2)
    pieces = []
    with Ragloop() as rl:
        answer = rl.ask(question, k=2, generator_options=gen(), max_new_tokens=6,
                        on_text=pieces.append)
        generator, model = rl.generator, rl.generator.model
        second = rl.ask("max widgets?", k=2, generator_options=gen(), max_new_tokens=4)
        assert rl.generator is generator and rl.generator.model is model
        # Other generator options: another generator, loaded for them.
        rl.ask("max widgets?", k=1, generator_options=[*gen(), "device=cpu"], max_new_tokens=2)
        assert rl.generator is not generator and rl.generator.model is not model
        rows = list(rl.workspace.db.query("select * from asks order by created_at, id"))
    assert "".join(pieces) == answer.text and answer.text
    assert len(rows) == 4
    by_cli, by_api = rows[0], next(r for r in rows if r["id"] == answer.id)
    for key in ("question", "prompt", "answer", "chunk_ids_json", "scores_json", "model_id",
                "generator", "adapter", "mode", "k", "index_version", "notes_json"):
        assert by_api[key] == by_cli[key], key
    timing = ("seconds", "tokens_per_second", "first_piece_seconds")
    params = [{k: v for k, v in json.loads(r["params_json"]).items() if k not in timing}
              for r in (by_api, by_cli)]
    assert params[0] == params[1] and params[0]["max_new_tokens"] == 6
    sources = answer_sources(second)
    assert [s["n"] for s in sources] == list(range(1, len(sources) + 1))
    assert [s["chunk_id"] for s in sources] == [h.chunk_id for h in second.prompt.passages]


def cli_error(*args):
    result = run(*args, ok=False)
    assert result.exit_code != 0
    return result.stderr.strip().removeprefix("Error: ")


def test_bad_input_raises_the_commands_messages(indexed):
    with Ragloop() as rl:
        with pytest.raises(RagloopError) as empty:
            rl.search("   ")
        assert str(empty.value) == cli_error("search", "   ")
        with pytest.raises(RagloopError, match=r"^unknown mode 'fuzzy'; modes: hybrid, dense, "
                                               r"bm25$"):
            rl.search("zebrafish", mode="fuzzy")
        with pytest.raises(RagloopError) as where:
            rl.search("zebrafish", where=["size=3"])
        assert str(where.value) == cli_error("search", "zebrafish", "--where", "size=3")
        with pytest.raises(RagloopError) as question:
            rl.ask(" ", generator_options=gen())
        assert str(question.value) == cli_error("ask", " ", "-o", gen()[0])
        with pytest.raises(RagloopError) as adapter:
            rl.ask("zebrafish?", adapter="nosuch", generator_options=gen())
        assert str(adapter.value) == cli_error("ask", "zebrafish?", "--adapter", "nosuch")
        assert rl.workspace.db["asks"].count == 0


def test_an_empty_workspace_is_refused_as_the_command_refuses_it(tmp_path):
    with Ragloop(tmp_path / "other") as rl:
        with pytest.raises(RagloopError) as search:
            rl.search("anything")
        with pytest.raises(RagloopError) as ask:
            rl.ask("anything?")
    message = "nothing is indexed yet; run `ragloop index PATH` first"
    assert str(search.value) == str(ask.value) == message
    assert cli_error("--home", tmp_path / "third", "search", "anything") == message


def test_the_documented_search_example_runs(capsys, monkeypatch):
    """docs/python-api.md's index command and search block, on the tiny embedder."""
    shell, search = re.findall(r"```(?:bash|python)\n(.*?)```", DOC, re.S)[:2]
    assert "ragloop index examples/corpus" in shell
    monkeypatch.chdir(ROOT)
    run("index", "examples/corpus", *emb())
    exec(compile(search, "docs/python-api.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    assert all(re.fullmatch(r"\d+\.\d{3}  examples/corpus/\S+:\d+-\d+.*", line) for line in lines)
    assert all("ferrule" in line for line in lines[3:])
