"""The built wheel holds the three packages (core, plugins, stores), every sub-package of
them and every built-in plugin module, so `pip install ragloop` works away from this
checkout."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ragloop.core.plugins import DEFAULT_PLUGINS

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"core": "ragloop.core", "plugins": "ragloop.plugins", "stores": "ragloop.stores"}
# every folder with an __init__.py, as the package it installs as
PACKAGES = sorted(".".join((FOLDERS[init.relative_to(ROOT).parts[0]],
                            *init.parent.relative_to(ROOT).parts[1:]))
                  for folder in FOLDERS for init in (ROOT / folder).rglob("__init__.py"))

WHERE = """
import importlib, json, sys
print(json.dumps({name: importlib.import_module(name).__file__ for name in sys.argv[1:]}))
"""


def pip(*args):
    subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--no-deps",
                    "--disable-pip-version-check"], check=True)


def test_wheel_installs_the_packages(tmp_path):
    # Build from a copy: setuptools writes build/ into the source folder, which others share.
    source = tmp_path / "build" / "ragloop"
    for name in ("core", "plugins", "stores"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip("wheel", "--no-build-isolation", "--wheel-dir", str(tmp_path / "dist"), str(source))
    (wheel,) = (tmp_path / "dist").glob("ragloop-*.whl")
    site = tmp_path / "site"
    pip("install", "--target", str(site), str(wheel))

    modules = [*PACKAGES, *DEFAULT_PLUGINS]
    elsewhere = tmp_path / "elsewhere"  # not beside the source copy: `-c` puts cwd on sys.path
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-c", WHERE, *modules], capture_output=True,
                            text=True, cwd=elsewhere, env={"PYTHONPATH": str(site), "PATH": ""})
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)
    assert {m: Path(f).is_relative_to(site) for m, f in files.items()} == dict.fromkeys(modules, True)
    assert (site / "bin" / "ragloop").exists()


def test_pyproject_lists_every_package():
    tomllib = pytest.importorskip("tomllib")        # Python 3.11+
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert sorted(setuptools["packages"]) == PACKAGES
    assert setuptools["package-dir"] == {package: folder for folder, package in FOLDERS.items()}
    assert {"ragloop.core.pipeline", "ragloop.plugins.hf", "ragloop.stores"} <= set(PACKAGES)
