"""The import rules of docs/architecture.md, checked on the source: every module is parsed
with `ast`, never imported, so a rule breaks here even where the import sits in a function.

- Plugins (`plugins/`, `stores/`) import from the core only `from ragloop.core import NAME`
  with NAME in `_EXPORTS` (the public API), and of `ragloop.plugins` only their own family
  and the shared helpers `ragloop.plugins.hf`, which import no family.
- The core imports neither `ragloop.plugins` nor `ragloop.stores` (it reaches them through the
  plugin manager; DEFAULT_PLUGINS names them as strings), nor any heavy library, anywhere.
- No import cycle among ragloop's modules (imports that run when a module is imported).
- The example plugin, a stranger's package, imports only the public API.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"core": "ragloop.core", "plugins": "ragloop.plugins", "stores": "ragloop.stores"}
EXAMPLE = ROOT / "examples" / "ragloop-example-plugin"
HEAVY = ("torch", "transformers", "peft", "accelerate", "datasets", "trl")
SHARED = "hf"       # the helper package under plugins/ that every family may import


@dataclass(frozen=True)
class Source:
    path: str           # relative to the repository root, for messages
    module: str         # its dotted name once installed
    tree: ast.Module

    @property
    def package(self) -> str:
        return self.module if self.path.endswith("__init__.py") else self.module.rpartition(".")[0]


@dataclass(frozen=True)
class Import:
    source: Source
    line: int
    module: str                 # absolute name of the module named by the statement
    names: tuple[str, ...]      # `from module import names`; () for `import module`
    when: str       # "import": runs on import (module level, class bodies); "call": in a
                    # function; "typing": under `if TYPE_CHECKING:`, never runs

    @property
    def runs_on_import(self) -> bool:
        return self.when == "import"

    def where(self) -> str:
        return f"{self.source.path}:{self.line}"


def parse(path: Path, module: str) -> Source:
    rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
    return Source(rel, module, ast.parse(path.read_text(encoding="utf-8"), rel))


def ragloop_sources() -> list[Source]:
    found = []
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append(parse(path, ".".join((package, *parts))))
    return found


def example_sources() -> list[Source]:
    return [parse(path, path.stem) for path in sorted(EXAMPLE.rglob("*.py"))
            if "build" not in path.relative_to(EXAMPLE).parts]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(source: Source) -> list[Import]:
    """Every import statement in the module, nested ones included."""
    found: list[Import] = []

    def visit(node: ast.AST, when: str) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(source, node.lineno, alias.name, (), when) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:     # relative: resolve against the module's own package
                base = source.package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            names = tuple(alias.name for alias in node.names)
            found.append(Import(source, node.lineno, module, names, when))
        for field, value in ast.iter_fields(node):
            inner = when
            if isinstance(node, ast.If) and field == "body" and _is_type_checking(node.test):
                inner = "typing"
            elif when == "import" and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                        ast.Lambda)):
                inner = "call"
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, ast.AST):
                    visit(child, inner)

    visit(source.tree, "import")
    return found


def public_api() -> dict[str, str | None]:
    """`_EXPORTS` of core/__init__.py (public name -> defining module), read without
    importing: the table assignments (`_PUBLIC`, `_EXPORTS`) are run on their own."""
    tree = ast.parse((ROOT / "core" / "__init__.py").read_text(encoding="utf-8"))
    tables = [node for node in tree.body if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id in ("_PUBLIC", "_EXPORTS") for t in node.targets)]
    namespace: dict = {"__builtins__": {}}
    exec(compile(ast.Module(tables, type_ignores=[]), "core/__init__.py", "exec"), namespace)
    if "_EXPORTS" not in namespace:
        raise AssertionError("core/__init__.py has no _EXPORTS table")
    return {"__version__": "", **namespace["_EXPORTS"]}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def loaded(imp: Import, known: set[str], exports: dict[str, str | None]) -> set[str]:
    """The ragloop modules this statement makes Python run (parent packages aside)."""
    targets = {imp.module} if imp.module in known else set()
    for name in imp.names:
        if f"{imp.module}.{name}" in known:
            targets.add(f"{imp.module}.{name}")
        elif imp.module == "ragloop.core" and exports.get(name):
            targets.add(f"ragloop.core.{exports[name]}")    # a lazy export still runs its module
    return targets


# ---- the rules: each returns "file:line: rule: what" lines, empty when kept ------------------

def public_only(imp: Import, exports: dict, rule: str) -> list[str]:
    """Of ragloop's core, `from ragloop.core import NAME` with NAME exported, or nothing."""
    if imp.module == "ragloop.core":
        hidden = [n for n in imp.names if n not in exports]
        return [f"{imp.where()}: {rule}: `from ragloop.core import {n}`, which is not in "
                "_EXPORTS (core/__init__.py)" for n in hidden]
    if within(imp.module, "ragloop.core"):
        how = (f"from {imp.module} import {', '.join(imp.names)}" if imp.names
               else f"import {imp.module}")
        return [f"{imp.where()}: {rule}: `{how}` reaches a core module; import its names "
                "`from ragloop.core import ...` (add them to _EXPORTS)"]
    return []


def family_of(module: str, names: tuple[str, ...] = ()) -> list[str]:
    """The ragloop.plugins families a module name (and its imported names) belong to."""
    parts = module.split(".")
    if parts[:2] != ["ragloop", "plugins"]:
        return []
    return [parts[2]] if len(parts) > 2 else list(names)


def plugin_rules(sources: list[Source], exports: dict) -> list[str]:
    """(a) plugins/ and stores/: public API only; own family, or the shared helpers."""
    problems = []
    for source in sources:
        if within(source.module, "ragloop.core"):
            continue
        own = family_of(source.module) or [None]
        allowed = {SHARED} | ({own[0]} if own[0] != SHARED else set())
        for imp in imports(source):
            problems += public_only(imp, exports, "plugins import only the public API")
            for family in family_of(imp.module, imp.names):
                if family not in allowed:
                    why = ("the shared helpers import no family" if own[0] == SHARED else
                           f"a plugin imports only its own family and ragloop.plugins.{SHARED}")
                    problems.append(f"{imp.where()}: {why}: imports ragloop.plugins.{family}")
            if within(imp.module, "ragloop.stores") and not within(source.module, "ragloop.stores"):
                problems.append(f"{imp.where()}: a plugin imports no store: imports {imp.module}")
    return problems


def core_rules(sources: list[Source]) -> list[str]:
    """(b) and (c): the core imports no plugin, no store, and no heavy library, anywhere."""
    problems = []
    for source in sources:
        if not within(source.module, "ragloop.core"):
            continue
        for imp in imports(source):
            named = [imp.module, *(f"{imp.module}.{n}" for n in imp.names)]
            outside = [m for m in named for p in ("ragloop.plugins", "ragloop.stores")
                       if within(m, p)]
            if outside:
                problems.append(f"{imp.where()}: the core imports no plugin or store (reach it "
                                f"through the registry or hooks): imports {outside[0]}")
            if imp.module.split(".")[0] in HEAVY:
                problems.append(f"{imp.where()}: the core imports no heavy library (not even "
                                f"in a function; that work belongs in a plugin): {imp.module}")
    return problems


def cycles(sources: list[Source], exports: dict, deferred: bool = False) -> list[str]:
    """(d) Import cycles among ragloop modules, by Tarjan's strongly connected components;
    each is reported as one cycle, every edge with the line that makes it. Only imports that
    run on import count, unless `deferred` adds those inside functions (a cycle hidden there
    still ties two modules into one); those under TYPE_CHECKING never run."""
    known = {s.module for s in sources}
    edges: dict[str, dict[str, Import]] = {m: {} for m in known}
    for source in sources:
        for imp in imports(source):
            if imp.runs_on_import or (deferred and imp.when == "call"):
                for target in loaded(imp, known, exports) - {source.module}:
                    edges[source.module].setdefault(target, imp)

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(node: str) -> None:     # recursive: the graph is a few hundred nodes deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(known):
        if node not in index:
            connect(node)

    problems = []
    for component in components:
        members = set(component)
        path = [component[0]]         # walk inside the component until a module repeats
        while path.count(path[-1]) < 2:
            path.append(min(n for n in edges[path[-1]] if n in members))
        path = path[path.index(path[-1]):]
        steps = [f"{a} -> {b} ({edges[a][b].where()})" for a, b in zip(path, path[1:])]
        problems.append("import cycle: " + "; ".join(steps))
    return problems


def example_rules(sources: list[Source], exports: dict) -> list[str]:
    """(e) The example plugin and its tests use ragloop as a stranger would."""
    problems = []
    for source in sources:
        for imp in imports(source):
            problems += public_only(imp, exports, "the example plugin imports only the public API")
            if within(imp.module, "ragloop.plugins") or within(imp.module, "ragloop.stores"):
                problems.append(f"{imp.where()}: the example plugin imports only the public "
                                f"API: imports {imp.module}")
    return problems


# ---- the tree as it is ----------------------------------------------------------------------

SOURCES = ragloop_sources()
EXPORTS = public_api()


def report(problems: list[str]) -> str:
    return f"{len(problems)} import rule(s) broken:\n" + "\n".join(problems)


def test_the_tree_is_read():
    modules = {s.module for s in SOURCES}
    assert {"ragloop.core", "ragloop.core.cli.app", "ragloop.plugins.hf",
            "ragloop.plugins.training.dpo", "ragloop.stores.faiss"} <= modules
    assert {"hookimpl", "Generator", "Workspace", "__version__"} <= set(EXPORTS)


def test_plugins_import_only_the_public_api_their_family_and_hf():
    problems = plugin_rules(SOURCES, EXPORTS)
    assert not problems, report(problems)


def test_core_imports_no_plugin_store_or_heavy_library():
    problems = core_rules(SOURCES)
    assert not problems, report(problems)


def test_no_import_cycles():
    problems = cycles(SOURCES, EXPORTS)
    assert not problems, report(problems)


def test_no_import_cycles_hidden_in_functions():
    problems = cycles(SOURCES, EXPORTS, deferred=True)
    assert not problems, report(problems)


def test_example_plugin_imports_only_the_public_api():
    sources = example_sources()
    assert {s.path.rsplit("/", 1)[-1] for s in sources} >= {
        "ragloop_example_plugin.py", "test_ragloop_example_plugin.py"}
    problems = example_rules(sources, EXPORTS)
    assert not problems, report(problems)


# ---- the checker itself finds what it should --------------------------------------------------

def fake(tmp_path, files: dict[str, str]) -> list[Source]:
    sources = []
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        folder, *parts = Path(rel).with_suffix("").parts
        if parts and parts[-1] == "__init__":
            parts = parts[:-1]
        sources.append(Source(rel, ".".join((FOLDERS[folder], *parts)), ast.parse(text)))
    return sources


FAKE_EXPORTS = {"__version__": "", "hookimpl": "hookspecs", "registry": None,
                "Searcher": "pipeline.search"}


def test_checker_flags_plugin_imports(tmp_path):
    sources = fake(tmp_path, {
        "plugins/training/rlhf.py": (
            "from ragloop.core import hookimpl, Secret\n"
            "from ragloop.plugins.training import reward\n"       # own family: fine
            "from ragloop.plugins.hf.common import quiet\n"       # shared helpers: fine
            "def f():\n"
            "    from ragloop.core.pipeline.prefs import latest_votes\n"
            "    from ragloop.plugins import filters\n"
            "    import ragloop.stores.faiss\n"),
        "plugins/hf/common.py": "from ragloop.plugins.generators import transformers\n",
        "stores/faiss.py": "from ragloop.plugins.hf import common\nfrom ragloop.stores import x\n",
    })
    assert plugin_rules(sources, FAKE_EXPORTS) == [
        "plugins/training/rlhf.py:1: plugins import only the public API: `from ragloop.core "
        "import Secret`, which is not in _EXPORTS (core/__init__.py)",
        "plugins/training/rlhf.py:5: plugins import only the public API: `from "
        "ragloop.core.pipeline.prefs import latest_votes` reaches a core module; import its "
        "names `from ragloop.core import ...` (add them to _EXPORTS)",
        "plugins/training/rlhf.py:6: a plugin imports only its own family and "
        "ragloop.plugins.hf: imports ragloop.plugins.filters",
        "plugins/training/rlhf.py:7: a plugin imports no store: imports ragloop.stores.faiss",
        "plugins/hf/common.py:1: the shared helpers import no family: imports "
        "ragloop.plugins.generators",
    ]


def test_checker_flags_core_imports_even_inside_functions(tmp_path):
    sources = fake(tmp_path, {"core/pipeline/training.py": (
        "DEFAULT_PLUGINS = ('ragloop.plugins.training.dpo',)\n"     # a string, not an import
        "def pick_device():\n"
        "    import torch.cuda\n"
        "    from ragloop.plugins.backends.launch import launch\n"
        "    from ragloop import stores\n")})
    assert core_rules(sources) == [
        "core/pipeline/training.py:3: the core imports no heavy library (not even in a "
        "function; that work belongs in a plugin): torch.cuda",
        "core/pipeline/training.py:4: the core imports no plugin or store (reach it through "
        "the registry or hooks): imports ragloop.plugins.backends.launch",
        "core/pipeline/training.py:5: the core imports no plugin or store (reach it through "
        "the registry or hooks): imports ragloop.stores",
    ]


def test_checker_reports_a_cycle_with_its_lines(tmp_path):
    sources = fake(tmp_path, {
        "core/__init__.py": "",
        "core/pipeline/__init__.py": "",
        "core/pipeline/ask.py": "from ragloop.core.pipeline import adapters\n",
        "core/pipeline/adapters.py": "import os\n\nfrom ragloop.core import Searcher\n",
        "core/pipeline/search.py": "from . import ask\n",
        "core/pipeline/training.py": "from ragloop.core.pipeline.training_runs import x\n",
        "core/pipeline/training_runs.py": ("from typing import TYPE_CHECKING\n"
                                           "if TYPE_CHECKING:\n"
                                           "    from ragloop.core.pipeline.training import y\n"
                                           "def later():\n"
                                           "    from ragloop.core.pipeline import training\n"),
    })
    assert cycles(sources, FAKE_EXPORTS) == [
        "import cycle: ragloop.core.pipeline.adapters -> ragloop.core.pipeline.search "
        "(core/pipeline/adapters.py:3); ragloop.core.pipeline.search -> "
        "ragloop.core.pipeline.ask (core/pipeline/search.py:1); ragloop.core.pipeline.ask -> "
        "ragloop.core.pipeline.adapters (core/pipeline/ask.py:1)"]
    assert cycles(sources, FAKE_EXPORTS, deferred=True)[1] == (
        "import cycle: ragloop.core.pipeline.training -> ragloop.core.pipeline.training_runs "
        "(core/pipeline/training.py:1); ragloop.core.pipeline.training_runs -> "
        "ragloop.core.pipeline.training (core/pipeline/training_runs.py:5)")
    assert len(cycles(sources, FAKE_EXPORTS, deferred=True)) == 2


def test_checker_flags_example_imports(tmp_path):
    sources = fake(tmp_path, {"plugins/example.py": (
        "import click\nfrom ragloop.core import hookimpl, registry\n"
        "from ragloop.core.cli import cli\nfrom ragloop.plugins.hf import common\n")})
    assert example_rules(sources, FAKE_EXPORTS) == [
        "plugins/example.py:3: the example plugin imports only the public API: `from "
        "ragloop.core.cli import cli` reaches a core module; import its names `from "
        "ragloop.core import ...` (add them to _EXPORTS)",
        "plugins/example.py:4: the example plugin imports only the public API: imports "
        "ragloop.plugins.hf",
    ]


@pytest.mark.parametrize("source, when", [
    ("import os\n", "import"), ("class A:\n    import os\n", "import"),
    ("try:\n    import os\nexcept ImportError:\n    pass\n", "import"),
    ("def f():\n    import os\n", "call"), ("async def f():\n    import os\n", "call"),
    ("class A:\n    def f(self):\n        if TYPE_CHECKING:\n            import os\n", "typing"),
    ("if typing.TYPE_CHECKING:\n    import os\nelse:\n    pass\n", "typing"),
    ("if TYPE_CHECKING:\n    pass\nelse:\n    import os\n", "import"),
])
def test_when_an_import_runs(source, when):
    (imp,) = imports(Source("core/x.py", "ragloop.core.x", ast.parse(source)))
    assert imp.when == when
