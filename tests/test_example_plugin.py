"""examples/ragloop-example-plugin, installed by pip (into a temporary target, not this
environment) and used through the real `ragloop` script in a separate process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ragloop-example-plugin"
RAGLOOP = str(Path(sys.executable).with_name("ragloop"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    # Build from a copy: pip builds in the source folder, and others share this checkout.
    source = tmp_path_factory.mktemp("src") / "ragloop-example-plugin"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "--target",
                    str(target), str(source)], check=True)
    return target


def ragloop(site, *args, cwd, load=None):
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("RAGLOOP_LOAD_PLUGINS", None)
    if load is not None:
        env["RAGLOOP_LOAD_PLUGINS"] = load
    return subprocess.run([RAGLOOP, *args], env=env, cwd=cwd, capture_output=True, text=True)


LISTING = "ragloop-example-plugin 0.1.0\n  hooks: register_commands, register_filters\n"


def test_listed_and_restricted_by_environment(site, tmp_path):
    assert LISTING in ragloop(site, "plugins", cwd=tmp_path).stdout
    assert ragloop(site, "plugins", cwd=tmp_path, load="ragloop-example-plugin").stdout == LISTING
    hidden = ragloop(site, "plugins", cwd=tmp_path, load="")
    assert hidden.stdout == (
        "No plugins loaded (built-ins are shown with --all).\n1 installed plugin is hidden by "
        "RAGLOOP_LOAD_PLUGINS: ragloop-example-plugin; add it to the list, or unset the "
        "variable to load every installed plugin.\n")
    gone = ragloop(site, "example-filter", "x.jsonl", cwd=tmp_path, load="")
    assert gone.returncode == 1 and gone.stderr.startswith("Error: unknown command 'example-filter'")


def test_command_runs(site, tmp_path):
    rows = [{"text": "keep me"}, {"text": "TODO: fix"}, {"text": "also TODO"}, {"text": "fine"}]
    (tmp_path / "notes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = ragloop(site, "example-filter", "notes.jsonl", "--output", "kept.jsonl", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "Kept 2 of 4 records.\nRemoved 2: text contains 'TODO'\n"
    assert (tmp_path / "kept.jsonl").read_text() == '{"text": "keep me"}\n{"text": "fine"}\n'
    bad = ragloop(site, "example-filter", "notes.jsonl", "-o", "marker=", cwd=tmp_path)
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr == "Error: invalid options for filter 'drop-marker': marker must not be empty\n"


def test_filter_is_usable_through_the_registry(site, tmp_path):
    code = ("from ragloop.core import build_config, registry\n"
            "cls = registry.get_filter('drop-marker')\n"
            "f = cls(build_config(cls.Config, ['marker=draft', 'ignore_case=true']))\n"
            "r = f.apply([{'text': 'A Draft'}, {'text': 'final'}])\n"
            "print(cls.__module__, [x['text'] for x in r.kept], [why for _, why in r.removed])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert result.stdout == "ragloop_example_plugin ['final'] [\"text contains 'draft'\"]\n", result.stderr


def test_its_own_tests_pass(site, tmp_path):
    shutil.copytree(EXAMPLE / "tests", tmp_path / "tests")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "--rootdir", str(tmp_path), "tests"],
                            capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout
