"""The embedder's light query path: a query encoded with `tokenizers` + ONNX Runtime + numpy
pooling, without torch, from the fp32 ONNX export that indexing makes once; the same vectors
as the torch path, and the normal path whenever the light one cannot be trusted."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import run
from test_embedder_backends import make
from tiny_models import tiny_embedder

from ragloop.core import Workspace
from ragloop.plugins.embedders import light_query, runtimes

pytest.importorskip("onnxruntime")

QUERIES = ["how do I list the files a process has open?", "  Compression LEVEL 9 ünïcode  "]
NOTES = [
    "The configuration file is read once at start-up; send SIGHUP to reload it.",
    "Returns the number of bytes written, or -1 on error, with errno set appropriately.",
    "Compression level 9 gives the smallest archives at the cost of speed.",
    "Use lsof -p PID to list the files a process has open.",
]


def make_plain_model(folder):
    """The tiny embedder as a plain text model: sentence-transformers 6 renders texts through
    a chat template when the tokenizer has one, which the light path refuses to imitate."""
    shutil.copytree(tiny_embedder(), folder)
    (folder / "chat_template.jinja").unlink()
    config = json.loads((folder / "sentence_bert_config.json").read_text())
    config["modality_config"] = {"text": config["modality_config"]["text"]}
    (folder / "sentence_bert_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory):
    return make_plain_model(tmp_path_factory.mktemp("plain") / "embedder")


def index_notes(tmp_path, model):
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    for i, text in enumerate(NOTES):
        (docs / f"note{i}.md").write_text(f"# Note {i}\n\n{text}\n", encoding="utf-8")
    return run("index", docs, "-o", f"embedder.model={model}")


def export_dirs(ws):
    root = ws.models_dir / runtimes.EXPORTS_DIR
    return sorted(root.iterdir()) if root.exists() else []


def test_spec_reads_the_module_files(plain_model, tmp_path):
    found = light_query.spec(plain_model)
    assert found == light_query.LightSpec("mean", 32, 128, False)
    # each layout the light path cannot reproduce exactly is refused, not guessed
    assert light_query.spec(tiny_embedder()) is None            # chat template
    for name, edit in [
        ("max pooling", lambda f: _edit(f / "1_Pooling" / "config.json", pooling_mode="max")),
        ("a prompt", lambda f: _edit(f / "config_sentence_transformers.json",
                                     default_prompt_name="query")),
        ("a Dense layer", lambda f: _edit(f / "modules.json", add_dense=True)),
        ("an unknown option", lambda f: _edit(f / "sentence_bert_config.json", model_args={
            "x": 1})),
        ("no tokenizer.json", lambda f: (f / "tokenizer.json").unlink()),
    ]:
        folder = tmp_path / name.replace(" ", "-")
        shutil.copytree(plain_model, folder)
        edit(folder)
        assert light_query.spec(folder) is None, name


def _edit(path, add_dense=False, **changes):
    data = json.loads(path.read_text())
    if add_dense:
        data.append({"idx": 3, "name": "3", "path": "3_Dense",
                     "type": "sentence_transformers.models.Dense"})
    else:
        data.update(changes)
    path.write_text(json.dumps(data))


def test_index_makes_the_export_and_a_query_skips_torch(tmp_path, ragloop_home, plain_model):
    out = index_notes(tmp_path, plain_model).output
    assert "exporting the embedder to ONNX fp32 (once, so that searches start without torch)" \
        in out
    ws = Workspace(ragloop_home)
    [export] = export_dirs(ws)
    assert json.loads((export / light_query.CHECK).read_text())["ok"] is True
    fresh = make(ws, f"model={plain_model}")
    vectors = fresh.encode(QUERIES)
    assert fresh._model is None                     # the model was never loaded
    reference = make(None, f"model={plain_model}").encode(QUERIES)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    # the id and dimension come from the files, equal to the loaded model's
    assert fresh.id == make(None, f"model={plain_model}").id and fresh._model is None
    # more texts than a query: the normal path (and the same vectors)
    np.testing.assert_allclose(fresh.encode(QUERIES + NOTES)[:2], reference, atol=1e-5)
    assert fresh._model is not None
    # a second index run does not export again
    again = index_notes(tmp_path, plain_model).output
    assert "exporting" not in again and len(export_dirs(ws)) == 1


@pytest.mark.parametrize("damage", ["truncated model", "no record", "garbled record",
                                    "no check", "failed check"])
def test_a_damaged_export_falls_back_to_the_normal_path(tmp_path, ragloop_home, plain_model,
                                                        damage):
    index_notes(tmp_path, plain_model)
    ws = Workspace(ragloop_home)
    [export] = export_dirs(ws)
    onnx = export / "model_fused.onnx"
    if damage == "truncated model":
        onnx.write_bytes(onnx.read_bytes()[:5000])
    elif damage == "no record":
        (export / runtimes.RECORD).unlink()
    elif damage == "garbled record":
        (export / runtimes.RECORD).write_text("{not json")
    elif damage == "no check":
        (export / light_query.CHECK).unlink()
    else:
        (export / light_query.CHECK).write_text(json.dumps({"ok": False}))
    embedder = make(ws, f"model={plain_model}")
    vectors = embedder.encode(QUERIES[:1])
    assert embedder._model is not None              # it took the normal path
    reference = make(None, f"model={plain_model}").encode(QUERIES[:1])
    np.testing.assert_allclose(vectors, reference, atol=1e-6)


def test_without_onnxruntime_nothing_is_exported_and_search_works(tmp_path, ragloop_home,
                                                                  plain_model, monkeypatch):
    # A None entry in sys.modules is how Python marks a module as unavailable.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = index_notes(tmp_path, plain_model).output
    assert "exporting" not in out and export_dirs(Workspace(ragloop_home)) == []
    found = run("search", "files a process has open", "-k", "1", "--mode", "dense")
    assert "note3.md" in found.output


def test_a_query_on_the_torch_path_uses_one_thread_and_restores_the_count(plain_model):
    import torch
    embedder = make(None, f"model={plain_model}")
    before = torch.get_num_threads()
    one = embedder.encode(QUERIES[:1])
    assert torch.get_num_threads() == before
    np.testing.assert_allclose(one, embedder.encode(QUERIES + NOTES)[:1], atol=1e-6)


def test_the_digest_is_cached_per_file_stamps(tmp_path, plain_model):
    ws = Workspace(tmp_path / "home")
    folder = tmp_path / "model"
    shutil.copytree(plain_model, folder)
    first = make(ws, f"model={folder}").id
    cache = json.loads((ws.models_dir / light_query.DIGESTS).read_text())
    assert str(folder) in cache
    assert make(ws, f"model={folder}").id == first
    # new weights (new size and time): the cached digest is not reused
    from safetensors.numpy import load_file, save_file
    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1.0
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    changed = make(ws, f"model={folder}").id
    assert changed != first and changed.split(":")[:2] == first.split(":")[:2]


SEARCH = """
import json, sys
from ragloop.core.cli import cli
cli.main(["search", sys.argv[1], "--json"], standalone_mode=False)
print(json.dumps(sorted(m for m in sys.modules
                        if m.split(".")[0] in ("torch", "transformers", "sentence_transformers"))))
"""


@pytest.mark.slow
def test_cold_search_on_the_packaged_model_skips_torch_with_the_same_results(
        tmp_path, ragloop_home):
    """The default embedder (packaged MiniLM), default hybrid mode, as a new process."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(NOTES):
        (docs / f"note{i}.md").write_text(f"# Note {i}\n\n{text}\n", encoding="utf-8")
    run("index", docs)
    query = "which files does a process have open"
    light = subprocess.run([sys.executable, "-c", SEARCH, query], capture_output=True,
                           text=True, cwd=tmp_path)
    assert light.returncode == 0, light.stderr
    *output, modules = light.stdout.splitlines()
    assert json.loads(modules) == []
    ws = Workspace(ragloop_home)
    [export] = export_dirs(ws)
    shutil.move(export, tmp_path / "moved")          # now the torch path must run
    normal = json.loads(run("search", query, "--json").output)
    hits = json.loads("\n".join(output))
    assert [h["chunk_id"] for h in hits] == [h["chunk_id"] for h in normal]
    np.testing.assert_allclose([h["score"] for h in hits], [h["score"] for h in normal],
                               atol=1e-5)


def test_an_int8_index_encodes_queries_with_its_own_export(tmp_path, plain_model):
    ws = Workspace(tmp_path / "home")
    options = (f"model={plain_model}", "backend=onnx", "quantize=int8")
    indexer = make(ws, *options)
    indexer.encode(NOTES)                                 # loads, exports and checks
    # int8 quantizes activations per batch, so compare batches of the same texts
    reference = indexer.encode(QUERIES)
    [export] = export_dirs(ws)
    assert export.name.startswith("onnx-int8-")
    assert json.loads((export / light_query.CHECK).read_text())["ok"] is True
    query = make(ws, *options)
    np.testing.assert_allclose(query.encode(QUERIES), reference, atol=1e-5)
    assert query._model is None and query.id == indexer.id
    assert query.id.endswith(":onnx-int8")
