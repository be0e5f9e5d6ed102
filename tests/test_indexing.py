"""`ragloop index`, `remove` and `search` on real SQLite and FAISS files with a tiny embedder."""

import json
import re

import pytest
from cli_helpers import counts, emb, run
from tiny_models import tiny_embedder

from ragloop.core.pipeline import ingest, vector_index
from ragloop.core.pipeline.search import rrf, weighted
from ragloop.core.workspace import Workspace

DOCS = {
    "install.md": "# Install\n\n## Linux\n\nRun apt install zebrafish to get the zebrafish tool.\n\n"
                  "## Windows\n\nDownload the zebrafish installer from the releases page.\n",
    "config.md": "# Configuration\n\nThe option max_widgets limits widgets per flurble. "
                 "The default is 42.\n",
    "notes.txt": "Vacation policy: employees get 27 vacation days per year.\n",
    "sub/deep.md": "# Deep\n\nQuokkas are nocturnal marsupials found on Rottnest Island.\n",
}




@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "docs"
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def consistent(home):
    ws = Workspace(home)
    index = vector_index.VectorIndex(ws)
    assert index.problem() is None
    return ws.db["chunks"].count, len(index.store)


def test_index_then_reindex_unchanged_embeds_nothing(corpus, ragloop_home):
    first = run("index", str(corpus), *emb())
    assert counts(first.output) == {"added": 4, "updated": 0, "removed": 0, "unchanged": 0,
                                    "skipped": 0}
    chunks, vectors = consistent(ragloop_home)
    assert chunks == vectors > 0
    again = run("index", str(corpus))
    assert counts(again.output)["unchanged"] == 4
    assert "0 chunks embedded" in again.output


def test_changed_deleted_and_removed_files(corpus, ragloop_home):
    run("index", str(corpus), *emb())
    (corpus / "notes.txt").write_text("Vacation policy changed: 30 vacation days per year.\n")
    (corpus / "config.md").unlink()
    out = run("index", str(corpus), "--prune").output
    assert counts(out)["updated"] == 1 and counts(out)["removed"] == 1
    hits = json.loads(run("search", "vacation days", "--mode", "bm25", "--json").stdout)
    assert "30 vacation days" in hits[0]["text"]
    run("remove", str(corpus / "sub"))
    paths = [r[0] for r in Workspace(ragloop_home).db.execute("select path from documents")]
    assert not any("deep.md" in p for p in paths)
    chunks, vectors = consistent(ragloop_home)
    assert chunks == vectors


def test_skips_are_reported_with_reasons(corpus):
    (corpus / "empty.txt").write_text("")
    (corpus / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    (corpus / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    out = run("index", str(corpus), *emb()).output
    assert re.search(r"skipped .*empty\.txt: empty file", out)
    assert re.search(r"skipped .*blob\.bin: no loader for \.bin", out)
    assert re.search(r"warning .*latin1\.txt: 1 undecodable bytes replaced", out)


def test_missing_path_is_one_line_error_and_nothing_written(tmp_path, ragloop_home):
    result = run("index", str(tmp_path / "nope"), ok=False)
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: no such file or folder: {tmp_path / 'nope'}"


def test_search_modes_where_and_json(corpus):
    run("index", str(corpus), *emb())
    out = run("search", "releases page download", "--mode", "bm25").output
    assert re.match(r"1\. .*install\.md:\d+-\d+  score \d+\.\d{4}  \(Install > Windows\)", out)
    hits = json.loads(run("search", "quokkas marsupials", "--json", "-k", "2").stdout)
    assert hits[0]["path"].endswith("deep.md") and len(hits) == 2
    only = json.loads(run("search", "zebrafish", "--where", "path=*notes*", "--json").stdout)
    assert only and all(h["path"].endswith("notes.txt") for h in only)
    dense = json.loads(run("search", "anything", "--mode", "dense", "--json", "-k", "3").stdout)
    assert len(dense) == 3
    bad = run("search", "x", "--where", "size>3", ok=False)
    assert bad.exit_code == 1 and "write --where path=GLOB" in bad.output


def test_search_before_index_says_what_to_do():
    result = run("search", "hello", ok=False)
    assert result.output.strip() == "Error: nothing is indexed yet; run `ragloop index PATH` first"


def test_crash_between_vector_save_and_commit_is_reconciled(corpus, ragloop_home, monkeypatch):
    run("index", str(corpus / "install.md"), *emb())
    real_record = vector_index.VectorIndex.record

    def record_then_die(self):
        real_record(self)                 # the vector file is replaced on disk ...
        raise KeyboardInterrupt           # ... but the database transaction never commits
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(vector_index.VectorIndex, "record", record_then_die)
        ws = Workspace(ragloop_home)
        indexer = ingest.Indexer(ws)
        indexer.add_file((corpus / "config.md").resolve(), indexer.known())
        indexer.flush()
    stale = run("search", "widgets", "--mode", "dense", ok=False)
    assert "out of step" in stale.output and "ragloop index --repair" in stale.output
    out = run("index", str(corpus)).output
    assert ("Repaired the vector index: 1 stale vector removed, 0 missing chunks embedded."
            in out.splitlines()), out
    chunks, vectors = consistent(ragloop_home)
    assert chunks == vectors


def test_interrupt_between_batches_keeps_finished_batches(corpus, ragloop_home, monkeypatch):
    monkeypatch.setattr(ingest, "BATCH_CHUNKS", 1)
    calls = {"n": 0}
    real_encode = vector_index.VectorIndex.encode

    def encode_then_interrupt(self, texts, progress=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_encode(self, texts, progress)
    with monkeypatch.context() as patch:
        patch.setattr(vector_index.VectorIndex, "encode", encode_then_interrupt)
        result = run("index", str(corpus), *emb(), ok=False)
    assert result.exit_code == 130
    assert Workspace(ragloop_home).db["documents"].count == 2
    consistent(ragloop_home)
    out = run("index", str(corpus)).output
    assert counts(out)["added"] == 2 and counts(out)["unchanged"] == 2


def test_corrupt_vector_file_and_repair(corpus, ragloop_home):
    run("index", str(corpus), *emb())
    (ragloop_home / "indexes" / "default" / "vectors.faiss").write_bytes(b"garbage")
    result = run("search", "zebrafish", "--mode", "dense", ok=False)
    assert result.exit_code == 1 and "run `ragloop index --repair`" in result.output
    out = run("index", "--repair").output
    chunks, vectors = consistent(ragloop_home)
    assert chunks == vectors
    assert f"Rebuilt the vector index: {chunks} chunks re-embedded." in out.splitlines()


def test_another_embedder_is_refused_until_repair(corpus, ragloop_home):
    run("index", str(corpus), *emb())
    other = ["-o", f"embedder.model={tiny_embedder(seed=1)}"]
    result = run("index", str(corpus), *other, ok=False)
    assert "was built with embedder" in result.output and "--repair" in result.output
    run("index", "--repair", *other)
    assert consistent(ragloop_home)[1] > 0
    run("search", "zebrafish", "--mode", "dense")


def test_fusion_arithmetic():
    dense = [(1, 0.9), (2, 0.8), (3, 0.1)]
    bm25 = [(3, 12.0), (1, 5.0)]
    fused = rrf([dense, bm25])
    assert [i for i, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    w = weighted([dense, bm25], 0.5)
    assert [i for i, _ in w] == [1, 3, 2]
    assert dict(w)[3] == pytest.approx(0.5)


def test_reindex_of_unchanged_files_never_loads_the_model(corpus, ragloop_home):
    import subprocess
    import sys
    run("index", str(corpus), *emb())
    script = ("import sys; from ragloop.core.cli import cli\n"
              "try:\n    cli(['index', sys.argv[1]])\nexcept SystemExit:\n    pass\n"
              "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", script, str(corpus)], capture_output=True,
                         text=True, env={**__import__("os").environ}, timeout=120)
    assert "4 unchanged" in out.stdout and out.stdout.strip().endswith("NO-TORCH"), out.stderr
