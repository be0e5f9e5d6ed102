"""trust_remote_code is taken from the command line only, never from the workspace: a
workspace database (perhaps someone else's) cannot make `search` run a model's code."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from cli_helpers import run
from tiny_models import tiny_embedder

from ragloop.core.pipeline.vector_index import TRUST_ENV, VectorIndex
from ragloop.core.workspace import Workspace

REMOTE_CODE = '''
import os, pathlib
pathlib.Path(os.environ["RAGLOOP_TEST_MARKER"]).write_text("ran")
from transformers import BertConfig, BertModel


class RemoteConfig(BertConfig):
    model_type = "ragloop_remote_test"


class RemoteModel(BertModel):
    config_class = RemoteConfig
'''


@pytest.fixture
def remote_model(tmp_path, monkeypatch):
    """The tiny embedder as a model that needs its own code (an unknown model type whose
    classes live in the folder); that code writes a marker file when it runs."""
    folder = tmp_path / "remote-embedder"
    shutil.copytree(tiny_embedder(), folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="ragloop_remote_test", architectures=["RemoteModel"],
                  auto_map={"AutoConfig": "remote_code.RemoteConfig",
                            "AutoModel": "remote_code.RemoteModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "remote_code.py").write_text(REMOTE_CODE)
    marker = tmp_path / "remote-code-ran"
    monkeypatch.setenv("RAGLOOP_TEST_MARKER", str(marker))
    return folder, marker


def ragloop_subprocess(*args, tmp_path):
    """`ragloop ARGS` in its own process, with transformers' copy of remote code kept
    under tmp_path (its cache folder is fixed when transformers is first imported)."""
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf-modules")}
    return subprocess.run([sys.executable, "-c", "from ragloop.core.cli import main; main()",
                           *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600)


def refused(result):
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    line = errors[0]
    assert "runs code shipped with it" in line and "-o embedder.trust_remote_code=true" in line


def test_trust_remote_code_is_given_each_time_never_recorded_nor_read_back(
        tmp_path, ragloop_home, remote_model):
    folder, marker = remote_model
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Zebras\n\nZebras have stripes.\n")
    trust = ["-o", "embedder.trust_remote_code=true"]
    done = ragloop_subprocess("index", docs, "-o", f"embedder.model={folder}", *trust,
                              tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert marker.exists()            # given on the command line, the model's code ran
    marker.unlink()
    state = Workspace(ragloop_home).db["index_state"].get("default")
    assert json.loads(state["embedder_options_json"]) == [f"model={folder}"]

    refused(run("search", "zebras", "--mode", "dense", ok=False))
    # a database that names the option anyway (an old or a hostile workspace) is not obeyed
    db = Workspace(ragloop_home).db
    db["index_state"].update("default", {"embedder_options_json": json.dumps(
        [f"model={folder}", "trust_remote_code=true"])})
    db.conn.commit()
    refused(run("search", "zebras", "--mode", "dense", ok=False))
    refused(run("index", docs, "--repair", ok=False))
    assert not marker.exists()

    again = ragloop_subprocess("search", "zebras", "--mode", "dense", "--json", *trust,
                               tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)[0]["text"] == "Zebras have stripes."
    assert marker.exists()


def test_commands_without_embedder_options_take_trust_from_the_environment(
        ragloop_home, monkeypatch):
    ws = Workspace(ragloop_home)
    assert VectorIndex(ws).embedder.config.trust_remote_code is False
    monkeypatch.setenv(TRUST_ENV, "1")
    assert VectorIndex(ws).embedder.config.trust_remote_code is True
