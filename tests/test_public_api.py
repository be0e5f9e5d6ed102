"""`ragloop.core` is the public API for plugin authors: every exported name resolves, importing
it (and every name it exports) loads no heavy library, and each base class declares every
method ragloop calls on a component of its kind. tests/test_import_rules.py checks that
plugins use nothing else; tests/test_example_plugin.py runs a plugin written only against it.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ragloop.core
from ragloop.core import components

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "faiss", "numpy")

# What ragloop calls on each kind of component (core/pipeline, core/cli, and the built-in
# commands that plugins add), and so what the base class must declare, with a default or a
# NotImplementedError. Optional capabilities that the caller looks up with getattr (a
# filter's `compares`, an evaluator's `plot`) are not part of this list.
CONTRACT = {
    "Loader": ["extensions", "load"],
    "Chunker": ["chunk"],
    "Embedder": ["id", "dimension", "count_tokens", "encode"],
    "Store": ["add", "remove", "search", "__len__", "ids", "save", "file_checksum"],
    "Reranker": ["rerank"],
    "Prompt": ["check", "examples", "messages"],
    "Generator": ["model_id", "context_length", "count_tokens", "render", "generate",
                  "generate_many", "checkpoint", "check", "save_merged"],
    "Rater": ["version", "interactive", "default_rater_id", "check", "compare"],
    "Filter": ["applies_to", "apply"],
    "RowFormat": ["noun", "writes_folder", "recognizes", "write", "dumps", "read"],
    "TrainingMethod": ["data_kind", "train"],
    "TrainingBackend": ["pick_device", "configure", "check", "run"],
    "Compressor": ["kind", "calibration_tokens", "check", "load_kwargs", "compress"],
    "Distiller": ["distill"],
    "Evaluator": ["evaluate"],
}


def modules_after(code: str) -> list[str]:
    """The heavy libraries a fresh interpreter holds after running `code`."""
    probe = (f"{code}\nimport json, sys\n"
             f"loaded = {{m.split('.')[0] for m in sys.modules}}\n"
             f"print(json.dumps(sorted(loaded & {set(HEAVY)!r})))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=ROOT / "tests")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_every_exported_name_resolves():
    missing = [name for name in ragloop.core.__all__ if getattr(ragloop.core, name, None) is None]
    assert missing == []
    assert dir(ragloop.core) == sorted(ragloop.core.__all__)


def test_a_name_outside_the_api_is_refused():
    with pytest.raises(AttributeError, match="module 'ragloop.core' has no attribute 'nope'"):
        ragloop.core.nope  # noqa: B018
    with pytest.raises(ImportError):
        exec("from ragloop.core import nope", {})


def test_importing_the_api_loads_no_heavy_library():
    assert modules_after("import ragloop.core") == []
    assert modules_after("import numpy") == ["numpy"]      # the probe sees what is loaded


def test_resolving_every_exported_name_loads_no_heavy_library():
    # Plugin modules import these names at every `ragloop` start, `--help` included.
    assert modules_after("import ragloop.core as c\nfor n in c.__all__: getattr(c, n)") == []


def test_hook_marker_and_base_classes_are_exported():
    assert ragloop.core.hookimpl.project_name == "ragloop"
    bases = {name for name, value in vars(components).items()
             if isinstance(value, type) and issubclass(value, components.Component)}
    assert bases == {"Component", *CONTRACT}
    assert bases <= set(ragloop.core.__all__)


@pytest.mark.parametrize("kind", CONTRACT)
def test_base_class_declares_what_ragloop_calls(kind):
    cls = getattr(ragloop.core, kind)
    missing = [name for name in CONTRACT[kind] if not hasattr(cls, name)]
    assert missing == [], f"{kind} (core/components.py) lacks {missing}"
    assert issubclass(cls, components.Component) and cls.Config and cls.description == ""
    assert "name" in components.Component.__annotations__     # each subclass sets its own


def hook_section(kind: str) -> str:
    """The docs/plugins.md section of the hook that registers a kind."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    hook = "register_" + re.sub(r"(?<!^)([A-Z])", r"_\1", kind).lower() + "s"
    match = re.search(rf"^### {hook}\(.*?(?=^##)", text, re.M | re.S)
    assert match, f"docs/plugins.md has no section for {hook}"
    return match.group(0)


@pytest.mark.parametrize("kind", CONTRACT)
def test_contract_is_documented(kind):
    section = hook_section(kind)
    undocumented = [name for name in CONTRACT[kind] if name != "__len__"
                    and f"`{name}" not in section and f"{name}(" not in section]
    assert undocumented == [], f"docs/plugins.md's {kind} section does not name {undocumented}"
