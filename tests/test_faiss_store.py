"""The FAISS store on real index files: ids, removal, atomic saves, corruption, IVF."""

import os

import numpy as np
import pytest

from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.core.registry import get_store


def make_store(tmp_path, dim=16, **options):
    cls = get_store("faiss")
    config = build_config(cls.Config, [f"{k}={v}" for k, v in options.items()])
    return cls(config, tmp_path / "index", dim)


def unit_vectors(n, dim, seed=0, clusters=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype("float32")
    if clusters:   # embeddings of real text are clustered, unlike uniform noise
        centres = np.random.default_rng(99).standard_normal((clusters, dim)).astype("float32")
        x = centres[rng.integers(0, clusters, n)] * 3 + x
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ids_are_the_given_chunk_ids_and_survive_save_and_reload(tmp_path):
    store = make_store(tmp_path)
    vectors = unit_vectors(50, 16)
    ids = np.arange(1000, 1050)
    store.add(ids, vectors)
    store.remove([1000, 1001])
    checksum = store.save()
    reopened = make_store(tmp_path)
    assert len(reopened) == 48
    assert sorted(reopened.ids().tolist()) == list(range(1002, 1050))
    assert reopened.file_checksum() == checksum
    scores, found = reopened.search(vectors[10:11], 3)
    assert found[0][0] == 1010 and scores[0][0] == pytest.approx(1.0, abs=1e-5)


def test_empty_store_searches_to_no_results(tmp_path):
    scores, ids = make_store(tmp_path).search(unit_vectors(2, 16), 4)
    assert ids.shape == (2, 4) and (ids == -1).all()


def test_crash_between_write_and_replace_keeps_the_old_file(tmp_path, monkeypatch):
    store = make_store(tmp_path)
    store.add([1, 2, 3], unit_vectors(3, 16))
    old = store.save()
    store.add([4], unit_vectors(1, 16, seed=1))

    def crash(*args):
        raise OSError("simulated crash before replace")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.save()
    monkeypatch.undo()
    assert make_store(tmp_path).file_checksum() == old
    assert len(make_store(tmp_path)) == 3
    leftovers = [p.name for p in (tmp_path / "index").iterdir() if p.name != "vectors.faiss"]
    assert leftovers == []


def test_corrupt_file_is_a_one_line_error_naming_the_fix(tmp_path):
    store = make_store(tmp_path)
    store.add([1], unit_vectors(1, 16))
    store.save()
    (tmp_path / "index" / "vectors.faiss").write_bytes(b"not a faiss index at all")
    with pytest.raises(RagloopError, match=r"corrupt .*ragloop index --repair"):
        len(make_store(tmp_path))


def test_auto_switches_to_ivf_at_the_threshold_with_high_recall(tmp_path):
    dim, n = 32, 4000
    vectors = unit_vectors(n, dim, clusters=40)
    flat = make_store(tmp_path / "flat", dim, kind="flat")
    ivf = make_store(tmp_path / "ivf", dim, ivf_threshold=3000, nprobe=16)
    flat.add(np.arange(n), vectors)
    ivf.add(np.arange(n), vectors)
    assert flat.kind == "flat" and ivf.kind == "ivf"
    queries = unit_vectors(50, dim, seed=7, clusters=40)
    _, exact = flat.search(queries, 10)
    _, approx = ivf.search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall > 0.8
    ivf.remove([0, 1, 2])
    assert len(ivf) == n - 3 and 0 not in set(ivf.ids().tolist())
    ivf.save()
    assert make_store(tmp_path / "ivf", dim).kind == "ivf"


def test_store_options_are_validated():
    cls = get_store("faiss")
    with pytest.raises(RagloopError, match="ivf_threshold"):
        build_config(cls.Config, ["ivf_threshold=10"], "faiss")
    with pytest.raises(RagloopError, match="unknown option 'bogus' for faiss; valid options: kind"):
        build_config(cls.Config, ["bogus=1"], "faiss")
