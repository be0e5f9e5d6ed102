"""Parent-section retrieval (`search --expand section`): a matched chunk comes back as its
whole section, overlap removed, one hit per section, long sections cut around the match."""

import json

from cli_helpers import emb, run
from tiny_models import tiny_causal_lm

from ragloop.core import Ragloop
from ragloop.core.pipeline.sections import _window, join_chunks

SENTENCES = [f"Sentence {i} of the walrus section mentions tusk {i} and ice floe {i}."
             for i in range(24)]


def doc(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    walrus = "\n\n".join(" ".join(SENTENCES[i:i + 3]) for i in range(0, 24, 3))
    (root / "animals.md").write_text(
        "# Animals\n\n## Walrus\n\n" + walrus + "\n\n## Heron\n\nThe heron stands in reeds "
        "and spears fish with its beak.\n")
    return root, walrus


def search(*args):
    return json.loads(run("search", *args, *emb(), "--json").stdout)


def test_a_matched_chunk_comes_back_as_its_whole_section(tmp_path):
    root, walrus = doc(tmp_path)
    # small chunks with overlap: the walrus section is cut into several overlapping chunks
    run("index", root, *emb(), "-o", "chunker.size=40", "-o", "chunker.overlap=10")
    chunks = search("tusk 7 ice floe 7", "-k", "20", "--mode", "bm25")
    walrus_chunks = [h for h in chunks if h["heading"] == "Animals > Walrus"]
    assert len(walrus_chunks) >= 3
    hits = search("tusk 7 ice floe 7 heron", "-k", "20", "--mode", "bm25", "--expand",
                  "section")
    walruses = [h for h in hits if h["heading"] == "Animals > Walrus"]
    assert len(walruses) == 1                       # its chunks collapse into one hit
    assert walruses[0]["text"] == walrus            # the section, no repeated overlap
    # "# Animals", "", "## Walrus", "": the section's 8 paragraphs are lines 5 to 19
    assert (walruses[0]["start_line"], walruses[0]["end_line"]) == (5, 19)
    assert sorted(h["heading"] for h in hits) == ["Animals > Heron", "Animals > Walrus"]


def test_ask_with_expand_section_gives_the_model_the_section_and_records_it(tmp_path):
    root, _ = doc(tmp_path)
    run("index", root, *emb(), "-o", "chunker.size=40")
    with Ragloop() as rl:
        options = {"generator_options": [f"model={tiny_causal_lm()}"], "max_new_tokens": 2,
                   "k": 1, "mode": "bm25"}
        narrow = rl.ask("tusk 7 ice floe 7", **options)
        wide = rl.ask("tusk 7 ice floe 7", expand="section", **options)
        params = [json.loads(r["params_json"]) for r in
                  rl.workspace.db.query("select params_json from asks order by created_at")]
    # the section starts with sentence 0; the tiny model's context cuts its end off
    assert SENTENCES[0] not in narrow.prompt.text and SENTENCES[0] in wide.prompt.text
    assert len(wide.prompt.text) > len(narrow.prompt.text) + 500
    assert "expand" not in params[0] and params[1]["expand"] == "section"


def test_chunks_is_the_default_and_unknown_expansions_are_refused(tmp_path):
    root, _ = doc(tmp_path)
    run("index", root, *emb(), "-o", "chunker.size=40", "-o", "chunker.overlap=10")
    assert len(search("tusk ice floe walrus", "-k", "20", "--mode", "bm25")) > 2
    result = run("search", "tusk", "--expand", "page", *emb(), ok=False)
    assert result.exit_code == 2 and "'page' is not one of 'chunk', 'section'" in result.output


def test_a_long_section_is_cut_around_the_match():
    rows = [(i, i, "x" * 100, i * 100, i * 100 + 100, i, i) for i in range(10)]
    kept = _window(rows, 7, 350)
    assert [r[0] for r in kept] == [6, 7, 8]        # nearest first, alternating sides
    assert [r[0] for r in _window(rows, 0, 350)] == [0, 1, 2]
    assert [r[0] for r in _window(rows, 9, 99)] == [9]     # the match itself always stays


def test_join_chunks_drops_overlap_and_keeps_paragraph_breaks():
    text = "alpha beta gamma delta. epsilon zeta."
    rows = [(1, 0, text[0:16], 0, 16, 1, 1), (2, 1, text[11:37], 11, 37, 1, 1),
            (3, 2, "same line", 38, 47, 1, 2), (4, 3, "next line", 48, 57, 3, 3),
            (5, 4, "next para", 60, 69, 5, 5)]
    assert join_chunks(rows) == text + " same line\nnext line\n\nnext para"
