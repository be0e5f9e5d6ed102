"""Every `ragloop` start, `--help` included, imports the CLI and every built-in plugin
module: none of them may import a heavy library at module level."""

import json
import subprocess
import sys

from ragloop.core.plugins import DEFAULT_PLUGINS

HEAVY = ("torch", "transformers", "faiss", "sentence_transformers", "trl", "peft", "accelerate",
         "datasets", "numpy", "matplotlib")

CHECK = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
from ragloop.core.plugins import load_plugins
load_plugins()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})))
"""


def test_plugin_modules_do_not_import_heavy_libraries(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(heavy=set(HEAVY)), "ragloop.core.cli",
         *DEFAULT_PLUGINS],
        capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_each_command_module_imports_no_heavy_library(tmp_path):
    from ragloop.core.cli.app import BUILTIN_COMMANDS
    modules = sorted({f"ragloop.core.cli.{m}" for m in BUILTIN_COMMANDS.values()})
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(heavy=set(HEAVY)), *modules],
        capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


SEARCH = """
import json, sys
from ragloop.core.cli import cli
cli.main(["search", "zebrafish", "--mode", "bm25", "--json"], standalone_mode=False)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r}
                        or m.startswith("ragloop.core.cli.") or m == "pandas")))
"""


def test_a_search_imports_only_what_it_needs(tmp_path, ragloop_home):
    """`ragloop search` imports its own command module, not the indexing, training, rating
    or evaluation commands, nor the progress display, and sqlite-utils does not pull in
    pandas (a second per start)."""
    from cli_helpers import emb, run
    (tmp_path / "a.md").write_text("# A\n\nThe zebrafish tool reads zebra.toml.\n")
    run("index", tmp_path / "a.md", *emb())
    result = subprocess.run([sys.executable, "-c", SEARCH.format(heavy=set(HEAVY))],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    *_, modules = result.stdout.splitlines()
    assert '"path"' in result.stdout and "a.md" in result.stdout
    assert [m for m in json.loads(modules) if m not in ("numpy",) and not m.startswith(
        "numpy.")] == ["ragloop.core.cli.app", "ragloop.core.cli.search_cmd"]


HYBRID = """
import json, sys
from ragloop.core.cli import cli
cli.main(["search", "zebrafish config", "--json"], standalone_mode=False)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
                        ("torch", "transformers", "sentence_transformers"))))
"""


def test_a_hybrid_search_with_the_export_imports_no_torch(tmp_path, ragloop_home):
    """Indexing makes the embedder's ONNX export (onnxruntime installed); a hybrid `ragloop
    search` in a new process then encodes its query without torch, transformers or
    sentence-transformers, and finds what the torch path finds, with the same scores."""
    import shutil

    import pytest
    pytest.importorskip("onnxruntime")
    from cli_helpers import run
    from test_embedder_light_query import NOTES, index_notes, make_plain_model
    model = make_plain_model(tmp_path / "model")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "z.md").write_text("# Z\n\nThe zebrafish tool reads zebra.toml.\n")
    index_notes(tmp_path, model)
    result = subprocess.run([sys.executable, "-c", HYBRID], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    *output, modules = result.stdout.splitlines()
    assert json.loads(modules) == []
    light = json.loads("\n".join(output))
    assert len(light) == 5 == len(NOTES) + 1
    shutil.rmtree(ragloop_home / "models" / "embedder-exports")     # the torch path now
    normal = json.loads(run("search", "zebrafish config", "--json").output)
    assert [h["chunk_id"] for h in light] == [h["chunk_id"] for h in normal]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(light, normal)) < 1e-5
