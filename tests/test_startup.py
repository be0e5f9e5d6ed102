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
        [sys.executable, "-c", CHECK.format(heavy=set(HEAVY)), "ragloop.core.cli", *DEFAULT_PLUGINS],
        capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
