"""Model ids name what a model is, not where it lies: the packaged model and the folder it
was converted into, a folder and its copy or link, have one id; another model never shares
it, so `check_base` takes an adapter on its own base under any name and refuses it on
another. Tiny models only (a tiny model stands in for the converted SmolLM2)."""

import json
import os
import shutil

import pytest
from tiny_models import make_tiny_causal_lm, tiny_causal_lm

from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.adapters import check_base
from ragloop.core.workspace import Workspace
from ragloop.plugins.generators.transformers import (
    TransformersConfig,
    TransformersGenerator,
    model_identity,
)
from ragloop.plugins.hf.common import ID_CACHE
from ragloop.plugins.hf.gguf import MARKER, PACKAGED_MODEL, converted_id, fingerprint, packaged_gguf


def model_id(model, workspace=None) -> str:
    return TransformersGenerator(TransformersConfig(model=str(model)), workspace=workspace).model_id


def fake_conversion(ws: Workspace, with_id: bool = True) -> str:
    """A tiny model where the packaged model's conversion goes, with the marker a
    conversion of the installed GGUF writes (without its id: as older ragloop wrote it);
    returns the GGUF's fingerprint."""
    fp = fingerprint(packaged_gguf())
    folder = make_tiny_causal_lm(ws.models_dir / PACKAGED_MODEL, 0)
    marker = {"gguf_fingerprint": fp, **({"model_id": converted_id(fp)} if with_id else {})}
    (folder / MARKER).write_text(json.dumps(marker))
    return fp


@pytest.mark.parametrize("with_id", [False, True], ids=["older-marker", "marker-with-id"])
def test_the_converted_folder_has_the_packaged_models_id(with_id, ragloop_home):
    ws = Workspace(ragloop_home)
    fp = fake_conversion(ws, with_id)
    by_name = model_id(PACKAGED_MODEL, ws)
    assert by_name == f"{PACKAGED_MODEL}@{fp}"
    folder = ws.models_dir / PACKAGED_MODEL
    assert model_id(folder, ws) == by_name == model_identity(folder)
    # An adapter trained on the default model is taken on its folder, as ask and distill do.
    check_base({"name": "dpo1", "base_model_id": by_name}, model_id(folder, ws))


def test_a_copy_or_a_link_of_a_folder_has_its_id_and_another_model_does_not(tmp_path):
    original = tiny_causal_lm()
    copy = shutil.copytree(original, tmp_path / "renamed-copy")
    link = tmp_path / "link"
    os.symlink(original, link)
    ids = {model_id(original), model_id(copy), model_id(link)}
    assert len(ids) == 1
    (only,) = ids
    assert only.startswith("llama@") and str(tmp_path) not in only and "causal" not in only
    other = model_id(make_tiny_causal_lm(tmp_path / "other", seed=1))
    assert other != only
    with pytest.raises(RagloopError) as info:
        check_base({"name": "a", "base_model_id": only}, other)
    assert "was trained on" in info.value.message


def test_one_changed_weight_is_another_model(tmp_path):
    from safetensors.torch import load_file, save_file
    copy = shutil.copytree(tiny_causal_lm(), tmp_path / "copy")
    before = model_identity(copy)
    weights = load_file(copy / "model.safetensors")
    name = sorted(weights)[-1]                            # a tensor near the end of the file
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] += 1.0
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert model_identity(copy) != before


def test_the_id_is_remembered_in_the_workspace_until_the_weights_change(tmp_path, ragloop_home):
    ws = Workspace(ragloop_home)
    copy = shutil.copytree(tiny_causal_lm(), tmp_path / "copy")
    first = model_identity(copy, ws)
    cache = json.loads((ws.models_dir / ID_CACHE).read_text())
    assert first in cache.values()
    make_tiny_causal_lm(tmp_path / "seed1", seed=1)
    shutil.copy(tmp_path / "seed1" / "model.safetensors", copy / "model.safetensors")
    assert model_identity(copy, ws) == model_identity(tmp_path / "seed1") != first


def test_a_hub_cache_snapshot_has_its_hub_id(tmp_path):
    snapshot = tmp_path / "hub" / "models--SomeOrg--Some-Model-1B" / "snapshots" / "abc123"
    shutil.copytree(tiny_causal_lm(), snapshot)
    assert model_id(snapshot) == "SomeOrg/Some-Model-1B" == model_id("SomeOrg/Some-Model-1B")


def test_a_record_that_names_its_base_by_path_still_fits_that_folder(tmp_path):
    """Adapters recorded before ids came from content hold a local base's path."""
    model = tiny_causal_lm()
    other = make_tiny_causal_lm(tmp_path / "other", 1)
    meta = {"name": "old", "base_model_id": str(model)}
    check_base(meta, model_identity(model), str(model))
    with pytest.raises(RagloopError, match="was trained on"):
        check_base(meta, model_identity(other), str(other))
    with pytest.raises(RagloopError, match="was trained on"):
        check_base(meta, model_identity(model))          # no folder to compare with
