"""Every hook has a test and a section in docs/plugins.md, and that section's example runs;
docs/plugins.md lists the public API and its examples use only it; the paths and modules
docs/architecture.md (and the other docs this checks) names exist."""

import ast
import inspect
import re
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import ragloop.core
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


# ---- the public API and the map ------------------------------------------------------------

MAPS = ("docs/architecture.md", "docs/plugins.md", "README.md")
PATH = re.compile(r"(?<![\w/.-])((?:core|plugins|stores)/[\w./<>*-]*)")
MODULE = re.compile(r"\bragloop\.(?:core|plugins|stores)(?:\.\w+)*")


def public_section():
    (section,) = [part for part in re.split(r"^(?=## )", DOCS, flags=re.M)
                  if part.startswith("## The public API")]
    return section


def test_every_exported_name_is_in_the_public_api_section():
    section = public_section()
    missing = [n for n in ragloop.core.__all__ if f"`{n}`" not in section]
    assert missing == [], f"docs/plugins.md's public API section does not list {missing}"


def test_public_api_section_lists_only_exported_names():
    listed = []
    for row in re.findall(r"^\|[^|\n]*\|([^|\n]*)\|$", public_section(), re.M)[2:]:
        while re.search(r"\([^()]*\)", row):     # asides name other things
            row = re.sub(r"\([^()]*\)", "", row)
        listed += re.findall(r"`(\w+)`", row)
    assert len(listed) > 40
    assert [n for n in listed if n not in ragloop.core.__all__] == []


@pytest.mark.parametrize("title, code", [
    (title, code) for title, blocks in sections().items() for code in blocks])
def test_doc_examples_import_only_the_public_api(title, code):
    try:
        tree = ast.parse(code)
    except SyntaxError:     # a tutorial excerpt: "..." stands for lines left out
        tree = ast.parse(re.sub(r"^ *\.\.\.\n", "", code, flags=re.M))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ragloop.core"):
            assert node.module == "ragloop.core", f"{title}: imports {node.module}"
            hidden = [a.name for a in node.names if a.name not in ragloop.core.__all__]
            assert hidden == [], f"{title}: {hidden} are not exported by ragloop.core"
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("ragloop.core.") for a in node.names), title


def named_paths(doc):
    text = (ROOT / doc).read_text()
    return sorted({p.rstrip(".,:;)") for p in PATH.findall(text) if not re.search(r"[<>*]", p)})


@pytest.mark.parametrize("doc", MAPS)
def test_named_paths_exist(doc):
    paths = named_paths(doc)
    assert [p for p in paths if not (ROOT / p).exists()] == [], f"{doc} names missing paths"


def module_file(name):
    """The source file of a dotted ragloop module name, or None."""
    folder = ROOT.joinpath(*name.split(".")[1:])
    for path in (folder.with_suffix(".py"), folder / "__init__.py"):
        if path.exists():
            return path
    return None


@pytest.mark.parametrize("doc", MAPS)
def test_named_modules_exist(doc):
    wrong = []
    for name in sorted(set(MODULE.findall((ROOT / doc).read_text()))):
        parts = name.split(".")
        module = next(".".join(parts[:n]) for n in range(len(parts), 1, -1)
                      if module_file(".".join(parts[:n])))
        rest = parts[len(module.split(".")):]
        source = module_file(module).read_text()
        if len(rest) > 1 or (rest and not re.search(
                rf"^\s*(def |class )?{rest[0]}\b", source, re.M)):
            wrong.append(name)
    assert wrong == [], f"{doc} names modules or attributes that are not there"


def test_the_map_is_linked():
    assert "(architecture.md)" in DOCS
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text()
    assert len(named_paths("docs/architecture.md")) > 20
