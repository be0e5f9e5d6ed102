"""The index's chunking: its settings belong to it (new ones re-chunk everything, none keep
the recorded ones), and a huge document goes in piece by piece, so that an interrupted run
keeps what was committed and a re-run continues from there."""

import hashlib
import random
import re

import pytest
from cli_helpers import counts, emb, run

from ragloop.core.components import Document
from ragloop.core.pipeline import ingest, vector_index
from ragloop.core.workspace import Workspace
from ragloop.plugins.chunkers.tokens import TokenChunker, TokenChunkerConfig

WORDS = ("the index maps every chunk of a document to a vector so that search finds the "
         "passage quokka zebrafish river stone light answer question file folder").split()


def prose(seed, sentences, newline=True):
    rng = random.Random(seed)
    parts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))).capitalize() + "."
             for _ in range(sentences)]
    if not newline:
        return " ".join(parts)
    return "\n\n".join(" ".join(parts[i:i + 4]) for i in range(0, len(parts), 4)) + "\n"


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "docs"
    (root / "more").mkdir(parents=True)
    for i, name in enumerate(["a.txt", "b.txt", "c.md", "more/d.txt"]):
        (root / name).write_text(prose(i, 40))
    return root


def stored(home):
    """{path: [(start, end), ...]} as the index holds it; the store agrees with the rows."""
    ws = Workspace(home)
    index = vector_index.VectorIndex(ws)
    assert index.problem() is None
    spans = {}
    for path, start, end in ws.db.execute(
            "select d.path, c.start_char, c.end_char from chunks c join documents d "
            "on d.id = c.document_id order by d.path, c.seq"):
        spans.setdefault(path, []).append((start, end))
    return spans, index


def expected(path, index, **config):
    doc = Document(str(path), path.read_text())
    chunks = TokenChunker(TokenChunkerConfig(**config)).chunk(doc, index.embedder.count_tokens)
    return [(c.start_char, c.end_char) for c in chunks]


def assert_chunked_with(home, root, **config):
    spans, index = stored(home)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert sorted(spans) == [str(p.resolve()) for p in files]
    for path in files:
        assert spans[str(path.resolve())] == expected(path, index, **config), path


def test_new_chunker_settings_rechunk_everything_and_later_runs_keep_them(corpus, ragloop_home):
    run("index", corpus, *emb(), "-o", "chunker.size=60", "-o", "chunker.overlap=10")
    assert_chunked_with(ragloop_home, corpus, size=60, overlap=10)
    # only the `more` folder is named: the other documents are re-chunked all the same
    out = run("index", corpus / "more", "-o", "chunker.size=120").output
    assert "Chunker settings changed (size 60 to 120): every indexed document was re-chunked." \
        in out.splitlines(), out
    assert counts(out)["updated"] == 4 and counts(out)["unchanged"] == 0
    assert_chunked_with(ragloop_home, corpus, size=120, overlap=10)
    # no chunker options: the recorded settings, not the defaults, for old and new files
    (corpus / "e.txt").write_text(prose(9, 40))
    out = run("index", corpus).output
    assert counts(out) == {"added": 1, "updated": 0, "removed": 0, "unchanged": 4, "skipped": 0}
    assert "Chunker settings changed" not in out
    assert_chunked_with(ragloop_home, corpus, size=120, overlap=10)
    # the same settings named again change nothing
    out = run("index", corpus, "-o", "chunker.size=120", "-o", "chunker.overlap=10").output
    assert counts(out)["unchanged"] == 5 and "0 chunks embedded" in out


def test_an_interrupted_rechunk_is_finished_by_the_next_run(corpus, ragloop_home, monkeypatch):
    run("index", corpus, *emb(), "-o", "chunker.size=60")
    monkeypatch.setattr(ingest, "BATCH_CHUNKS", 1)
    calls = {"n": 0}
    real_encode = vector_index.VectorIndex.encode

    def encode_then_interrupt(self, texts, progress=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_encode(self, texts, progress)
    with monkeypatch.context() as patch:
        patch.setattr(vector_index.VectorIndex, "encode", encode_then_interrupt)
        assert run("index", corpus, "-o", "chunker.size=120", ok=False).exit_code == 130
    out = run("index", corpus).output        # no options: the new settings were recorded
    assert counts(out)["updated"] == 3 and counts(out)["unchanged"] == 1, out
    assert_chunked_with(ragloop_home, corpus, size=120)


def test_rechunking_with_a_gone_file_is_refused_and_changes_nothing(corpus, ragloop_home):
    run("index", corpus, *emb(), "-o", "chunker.size=60")
    before, _ = stored(ragloop_home)
    (corpus / "b.txt").unlink()
    result = run("index", corpus, "-o", "chunker.size=120", ok=False)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: cannot re-chunk the index for the new chunker settings (size 60 to 120): "
        f"1 indexed file(s) are gone, e.g. {(corpus / 'b.txt').resolve()}; drop them with "
        f"`ragloop remove PATH` (or index --prune) first")
    assert stored(ragloop_home)[0] == before
    out = run("index", corpus, "-o", "chunker.size=120", "--prune").output
    assert counts(out)["removed"] == 1 and counts(out)["updated"] == 3
    assert_chunked_with(ragloop_home, corpus, size=120)


def test_a_huge_document_is_committed_in_pieces_and_a_rerun_continues(
        tmp_path, ragloop_home, monkeypatch):
    monkeypatch.setattr(ingest, "DOC_PIECE_CHUNKS", 4)
    monkeypatch.setattr(ingest, "BIG_DOCUMENT_CHARS", 1000)
    monkeypatch.setenv("RAGLOOP_PROGRESS_SECONDS", "0")
    root = tmp_path / "docs"
    root.mkdir()
    huge = root / "huge.txt"
    huge.write_text(prose(3, 120, newline=False))          # one line, about 20 chunks
    calls = {"n": 0}
    real_encode = vector_index.VectorIndex.encode

    def encode_then_interrupt(self, texts, progress=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_encode(self, texts, progress)
    with monkeypatch.context() as patch:
        patch.setattr(vector_index.VectorIndex, "encode", encode_then_interrupt)
        result = run("index", root, *emb(), "-o", "chunker.size=40", ok=False)
    assert result.exit_code == 130
    assert "huge.txt (MB): " in result.output      # progress while inside the one document
    spans, index = stored(ragloop_home)
    whole = expected(huge, index, size=40)
    assert len(whole) > 12 and spans[str(huge.resolve())] == whole[:8]
    digest = hashlib.sha256(huge.read_bytes()).hexdigest()
    row = Workspace(ragloop_home).db.execute("select content_hash from documents").fetchone()
    assert row[0] == "partial:" + digest       # never mistaken for an unchanged file

    out = run("index", root).output
    assert counts(out)["added"] == 1 and f"{len(whole) - 8} chunks embedded" in out, out
    spans, _ = stored(ragloop_home)
    assert spans[str(huge.resolve())] == whole
    db = Workspace(ragloop_home).db
    assert db.execute("select content_hash, chunk_count from documents").fetchone() == (
        digest, len(whole))
    assert [r[0] for r in db.execute("select seq from chunks order by seq")] == list(
        range(len(whole)))
    assert counts(run("index", root).output)["unchanged"] == 1
