"""Every hook has a test and a section in docs/plugins.md, and that section's example runs."""

import inspect
import re
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from ragloop.core import components as kinds
from ragloop.core import hookspecs
from ragloop.core.cli import cli
from ragloop.core.config import build_config
from ragloop.core.plugins import pm
from ragloop.core.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "plugins.md").read_text()
HOOKS = {name: fn for name, fn in vars(hookspecs).items() if hasattr(fn, "ragloop_spec")}
TESTS = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))


def heading(name):
    return f"{name}{inspect.signature(HOOKS[name])}"


def sections():
    """Markdown heading -> the python code blocks under it."""
    found = {}
    for part in re.split(r"^(?=#+ )", DOCS, flags=re.M):
        title, _, body = part.partition("\n")
        found[title.lstrip("# ").strip()] = re.findall(r"```python\n(.*?)```", body, re.S)
    return found


def run_example(code, name, monkeypatch):
    """Execute a docs example as a module and register it like an installed plugin."""
    module = types.ModuleType(f"docs_example_{name}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, f"docs/plugins.md ({name})", "exec"), module.__dict__)
    return module


def test_hooks_are_found():
    assert len(HOOKS) >= 14 and "register_commands" in HOOKS


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test(name):
    assert re.search(rf"^def test_hook_{name}\(", TESTS, re.M), f"add test_hook_{name} in tests/"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented(name):
    assert re.search(rf"^#+ .*{re.escape(heading(name))}", DOCS, re.M), (
        f"docs/plugins.md needs a section headed `{heading(name)}`")


def smoke(cls, tmp_path):
    """Use a registered example the way ragloop would, where that needs nothing heavy."""
    if issubclass(cls, kinds.Store):  # built with its folder and dimension
        import numpy as np
        store = cls(None, tmp_path / "index", 2)
        store.add([7, 8, 9], np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype="float32"))
        store.remove([8])
        scores, ids = store.search(np.array([[0, 1]], dtype="float32"), 3)
        assert ids.tolist() == [[9, 7, -1]]
        checksum = store.save()
        again = cls(None, tmp_path / "index", 2)
        assert (len(again), sorted(again.ids()), again.file_checksum()) == (2, [7, 9], checksum)
        return
    it = cls(build_config(cls.Config), workspace=Workspace())
    if issubclass(cls, kinds.Loader):
        (tmp_path / "a.csv").write_text("name,age\nAda,36\n")
        doc = it.load(tmp_path / "a.csv")
        assert (doc.text, doc.metadata) == ("name, age\nAda, 36", {"rows": 2})
        (tmp_path / "empty.csv").write_text("")
        with pytest.raises(kinds.SkipFile):
            it.load(tmp_path / "empty.csv")
    elif issubclass(cls, kinds.Chunker):
        doc = kinds.Document("d.txt", "First one.\n\n  Second\npara.\n")
        chunks = it.chunk(doc, lambda text: len(text.split()))
        assert [(c.text, c.start_line, c.end_line) for c in chunks] == [
            ("First one.", 1, 1), ("Second\npara.", 3, 4)]
        assert all(doc.text[c.start_char:c.end_char] == c.text for c in chunks)
    elif issubclass(cls, kinds.Embedder):
        vectors = it.encode(["red apple", "green apple"])
        assert vectors.shape == (2, it.dimension) and abs((vectors ** 2).sum(1) - 1).max() < 1e-5
    elif issubclass(cls, kinds.Reranker):
        hits = [SimpleNamespace(text="cats purr", score=0.9), SimpleNamespace(text="dogs bark", score=0.1)]
        assert [h.text for h in it.rerank("why do dogs bark", hits)] == ["dogs bark", "cats purr"]
    elif issubclass(cls, kinds.Generator):
        messages = [{"role": "user", "content": "is it raining"}]
        assert "".join(it.generate(messages, max_new_tokens=2)) == "is it "
        assert it.render(messages) == "<user>\nis it raining\n"
    elif issubclass(cls, kinds.Rater):
        assert it.compare(kinds.Comparison("q", [], "short", "a longer one")) == "a"
        assert it.compare(kinds.Comparison("q", [], "", "")) == "both-bad"
    elif issubclass(cls, kinds.Filter):
        result = it.apply([{"text": "too short"}, {"text": "one two three four five"}])
        assert result.kept == [{"text": "one two three four five"}]
        assert result.removed == [({"text": "too short"}, "2 words, fewer than 5")]
    elif issubclass(cls, kinds.TrainingBackend):
        assert it.run(SimpleNamespace(train=lambda job: {"job": job}), "j") == {"job": "j"}
    elif issubclass(cls, kinds.Compressor):
        torch = pytest.importorskip("torch")
        model = torch.nn.Sequential(torch.nn.Linear(8, 8))
        assert (it.compress(model)[0].weight == 0).float().mean().item() == 0.5
    elif issubclass(cls, kinds.Evaluator):
        assert it.evaluate(None) == {"answers": 0, "mean_words": 0.0}


@pytest.mark.parametrize("name", [n for n in HOOKS if n != "register_commands"])
def test_hook_example_runs(name, monkeypatch, tmp_path):
    blocks = sections().get(heading(name))
    assert blocks, f"the `{heading(name)}` section needs a python example"
    module = run_example(blocks[0], name, monkeypatch)
    found = []
    getattr(module, name)(found.append)
    base = {c for c in vars(kinds).values() if isinstance(c, type) and issubclass(c, kinds.Component)}
    assert len(found) == 1 and found[0].name and set(found[0].__mro__) & (base - {kinds.Component})
    pm.register(module, name=module.__name__)  # validates the signature against the spec
    pm.unregister(name=module.__name__)
    smoke(found[0], tmp_path)


def test_commands_example_runs(monkeypatch):
    module = run_example(sections()[heading("register_commands")][0], "commands", monkeypatch)
    pm.register(module, name="docs-commands")
    try:
        result = CliRunner().invoke(cli, ["greet", "Ada"])
    finally:
        pm.unregister(name="docs-commands")
    assert (result.exit_code, result.output) == (0, "Hello, Ada!\n")


def test_options_and_tables_examples_run(monkeypatch):
    section = sections()["Components, options and the workspace"]
    options = run_example(section[0] + section[1], "options", monkeypatch)
    assert options.config.style == "title"
    tables = run_example(section[2], "tables", monkeypatch)
    pm.register(tables, name="docs-tables")
    try:
        runner = CliRunner()
        outputs = [runner.invoke(cli, ["bookmark", q]).output for q in ("why?", "how?")]
    finally:
        pm.unregister(name="docs-tables")
    assert outputs == ["Bookmarks: 1\n", "Bookmarks: 2\n"]


def test_tutorial_shows_the_example_plugin_as_it_is():
    source = (ROOT / "examples" / "ragloop-example-plugin" / "ragloop_example_plugin.py").read_text()
    blocks = sections()["Tutorial: ragloop-example-plugin"]
    complete = [block for block in blocks if "..." not in block]
    assert len(complete) >= 2
    for block in complete:
        assert block in source, f"docs/plugins.md tutorial drifted from the example:\n{block}"
