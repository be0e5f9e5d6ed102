"""The embedder's ONNX Runtime and OpenVINO backends: vectors within tolerance of torch fp32
on the packaged MiniLM, the export made once and reused, its own embedder id (so a workspace
indexed with another backend is refused, naming --repair), and the one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import tiny_embedder

from ragloop.core import Workspace, cli
from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.plugins.embedders import runtimes
from ragloop.plugins.embedders.sentence_transformers import SentenceTransformersEmbedder

pytest.importorskip("onnxruntime")

SENTENCES = [
    "How do I list the files a process has open?",
    "The configuration file is read once at start-up; send SIGHUP to reload it.",
    "Returns the number of bytes written, or -1 on error, with errno set appropriately.",
    "Compression level 9 gives the smallest archives at the cost of speed.",
    "Can I mount an ISO image without root privileges?",
]


def make(ws, *options):
    cls = SentenceTransformersEmbedder
    return cls(build_config(cls.Config, list(options), cls.name), workspace=ws)


def exports(ws):
    root = ws.models_dir / runtimes.EXPORTS_DIR
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.fixture(scope="module")
def minilm_ws(tmp_path_factory):
    """One workspace for the MiniLM exports, so each is made once for the module."""
    return Workspace(tmp_path_factory.mktemp("backends") / "home")


@pytest.fixture(scope="module")
def reference():
    return make(None).encode(SENTENCES)


def cosines(a, b):
    return np.sum(a * b, axis=1)


@pytest.mark.slow
def test_onnx_fp32_matches_torch(minilm_ws, reference):
    embedder = make(minilm_ws, "backend=onnx")
    vectors = embedder.encode(SENTENCES)
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    np.testing.assert_allclose(vectors, reference, atol=1e-4)
    assert embedder.export_record["files"] == ["model_fused.onnx"]


@pytest.mark.slow
def test_onnx_int8_is_close_to_torch(minilm_ws, reference):
    vectors = make(minilm_ws, "backend=onnx", "quantize=int8").encode(SENTENCES)
    # int8 moves each vector a little: not equal, but pointing the same way (0.988-0.990
    # measured here; bench/bench_embed.py shows what that costs in retrieval)
    assert np.abs(vectors - reference).max() > 1e-4
    assert cosines(vectors, reference).min() >= 0.98
    # and what a search sees is kept: every sentence is still nearest its own torch vector
    assert (np.argmax(vectors @ reference.T, axis=1) == np.arange(len(SENTENCES))).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


OPENVINO_ENCODE = """
import json, sys
from ragloop.core.config import build_config
from ragloop.core.workspace import Workspace
from ragloop.plugins.embedders.sentence_transformers import SentenceTransformersEmbedder as E
embedder = E(build_config(E.Config, ["backend=openvino", "quantize=int8"], E.name),
             workspace=Workspace(sys.argv[1]))
print(json.dumps(embedder.encode(json.loads(sys.argv[2])).tolist()))
"""


@pytest.mark.slow
def test_openvino_int8_is_close_to_torch(minilm_ws, reference):
    pytest.importorskip("openvino")
    # In a child process: a process holding both the OpenVINO and the ONNX Runtime thread
    # pools crashed (SIGSEGV) in any child it then forked, as the terminal tests' pexpect
    # does, so this suite keeps OpenVINO out of the pytest process.
    done = subprocess.run([sys.executable, "-c", OPENVINO_ENCODE, str(minilm_ws.home),
                           json.dumps(SENTENCES)], capture_output=True, text=True, check=True)
    vectors = np.array(json.loads(done.stdout.strip().splitlines()[-1]), dtype=np.float32)
    assert np.abs(vectors - reference).max() > 1e-5
    assert cosines(vectors, reference).min() >= 0.99


@pytest.mark.slow
def test_each_backend_has_its_own_id(minilm_ws):
    ids = {opts: make(minilm_ws, *opts).id for opts in
           [(), ("backend=onnx",), ("backend=onnx", "quantize=int8")]}
    assert len(set(ids.values())) == 3
    torch_id = ids[()]
    assert len(torch_id.split(":")) == 3            # unchanged: old indexes still match
    assert ids[("backend=onnx", "quantize=int8")] == f"{torch_id}:onnx-int8"


def test_export_is_made_once_and_reused(tmp_path, capsys):
    ws = Workspace(tmp_path / "home")
    model = f"model={tiny_embedder()}"
    first = make(ws, model, "backend=onnx")
    vectors = first.encode(SENTENCES)
    assert "exporting the embedder to ONNX fp32 (once)" in capsys.readouterr().err
    [name] = exports(ws)
    record = ws.models_dir / runtimes.EXPORTS_DIR / name / runtimes.RECORD
    stamp = record.stat().st_mtime_ns
    again = make(ws, model, "backend=onnx")
    np.testing.assert_array_equal(again.encode(SENTENCES), vectors)
    assert "exporting" not in capsys.readouterr().err
    assert record.stat().st_mtime_ns == stamp and exports(ws) == [name]
    assert again.id == first.id


def test_a_new_key_makes_a_new_export(tmp_path):
    ws = Workspace(tmp_path / "home")
    key = runtimes.export_key("abc", "onnx", "int8")
    changed = {**key, "versions": {**key["versions"], "onnxruntime": "0.0.0"}}
    folders = {runtimes.export_folder(ws, k) for k in
               (key, changed, runtimes.export_key("abd", "onnx", "int8"),
                runtimes.export_key("abc", "onnx", "none"))}
    assert len(folders) == 4
    assert set(key["versions"]) >= {"torch", "transformers", "onnxruntime", "onnx"}


def test_a_failed_export_falls_back_to_torch_once(tmp_path, capsys, monkeypatch):
    # A probe check no export can pass: the export is made, judged wrong, and refused.
    monkeypatch.setitem(runtimes.MIN_COSINE, "none", 1.5)
    ws = Workspace(tmp_path / "home")
    model = f"model={tiny_embedder()}"
    embedder = make(ws, model, "backend=onnx")
    vectors = embedder.encode(SENTENCES)
    err = capsys.readouterr().err
    assert err.count("note: the embedder could not be exported to ONNX fp32") == 1
    assert "fp32 torch instead" in err
    np.testing.assert_allclose(vectors, make(None, model).encode(SENTENCES), atol=1e-6)
    assert embedder.id.endswith(":onnx-fp32-fallback-torch")
    [name] = exports(ws)
    record = json.loads((ws.models_dir / runtimes.EXPORTS_DIR / name / "export.json")
                        .read_text())
    assert "failed" in record and not [p for p in (ws.models_dir / runtimes.EXPORTS_DIR / name)
                                       .iterdir() if p.suffix in (".onnx", ".xml")]
    # The failure is remembered: the next run does not export again, and says so again.
    again = make(ws, model, "backend=onnx")
    again.encode(SENTENCES[:1])
    err = capsys.readouterr().err
    assert "exporting" not in err and err.count("note:") == 1
    assert again.id == embedder.id


@pytest.mark.parametrize("backend,module", [("onnx", "onnxruntime"), ("openvino", "openvino")])
def test_a_missing_runtime_names_the_extra(tmp_path, monkeypatch, backend, module):
    # Both runtimes are installed here; a None entry in sys.modules is how Python itself
    # marks a module as unavailable (the import raises ImportError).
    monkeypatch.setitem(sys.modules, module, None)
    embedder = make(Workspace(tmp_path / "home"), f"model={tiny_embedder()}",
                    f"backend={backend}")
    with pytest.raises(RagloopError, match=rf"pip install 'ragloop\[{backend}\]'"):
        embedder.encode(["x"])


def test_options_are_checked():
    for options, message in [(["backend=tensorrt"], "backend must be one of"),
                             (["quantize=int4"], "quantize must be none or int8"),
                             (["quantize=int8"], "needs backend=onnx or backend=openvino"),
                             (["backend=onnx", "device=cuda"], "runs on the CPU")]:
        with pytest.raises(RagloopError, match=message):
            make(None, *options)


def test_cli_refuses_an_index_built_with_another_backend(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(SENTENCES):
        (docs / f"note{i}.md").write_text(f"# Note {i}\n\n{text}\n", encoding="utf-8")
    home = str(tmp_path / "home")
    model = f"embedder.model={tiny_embedder()}"

    def run(*args):
        return CliRunner().invoke(cli.cli, ["--home", home, *args], prog_name="ragloop")

    assert run("index", str(docs), "-o", model).exit_code == 0
    refused = run("index", str(docs), "-o", model, "-o", "embedder.backend=onnx")
    assert refused.exit_code == 1
    error = [line for line in refused.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "ragloop index --repair" in error[0]
    assert "Traceback" not in refused.output
    repaired = run("index", "--repair", "-o", model, "-o", "embedder.backend=onnx")
    assert repaired.exit_code == 0, repaired.output
    assert "5 chunks re-embedded" in repaired.output
    # the workspace now records the onnx backend: a plain search uses it without -o
    found = run("search", "open files of a process", "-k", "1", "--mode", "dense")
    assert found.exit_code == 0 and "note0.md" in found.output
