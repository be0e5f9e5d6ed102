"""The sentence-transformers embedder: tiny random models for the logic, MiniLM for the real thing."""

import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest
from tiny_models import make_tiny_embedder, tiny_embedder

from ragloop.core import registry
from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.plugins.embedders.sentence_transformers import (
    SentenceTransformersConfig,
    SentenceTransformersEmbedder,
)

TEXTS = ["a", "the capital of France is Paris, a big city on a river",
         "cat", "two dogs and a cat read a long book about rivers and stone houses", "sun moon"]


def embedder(model, **options) -> SentenceTransformersEmbedder:
    return SentenceTransformersEmbedder(SentenceTransformersConfig(model=str(model), **options))


@pytest.fixture(scope="module")
def tiny():
    return embedder(tiny_embedder(), batch_size=2)


def test_tiny_embedder_builds_once_and_loads(tmp_path):
    from sentence_transformers import SentenceTransformer
    path = make_tiny_embedder(tmp_path / "emb")
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert make_tiny_embedder(tmp_path / "emb") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp      # not rebuilt
    vectors = SentenceTransformer(str(path), device="cpu").encode(["hello", "world"])
    assert vectors.shape == (2, 32)


def test_registered_as_the_default_embedder():
    assert registry.get_embedder("sentence-transformers") is SentenceTransformersEmbedder
    assert SentenceTransformersConfig().model == "all-MiniLM-L6-v2"


def test_importing_the_plugins_imports_no_heavy_library():
    code = ("import sys, ragloop.plugins.embedders.sentence_transformers, ragloop.plugins.generators.transformers; "
            "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers', 'numpy')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_vectors_are_normalized_float32(tiny):
    vectors = tiny.encode(TEXTS)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), tiny.dimension) == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_input_order_is_restored_after_longest_first_batching(tiny):
    together = tiny.encode(TEXTS)
    one_by_one = np.stack([tiny.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    # Rows differ from each other, so a permutation would not pass the check above.
    assert not np.allclose(together[0], together[1], atol=1e-3)


def test_progress_is_called_with_each_batch_size(tiny):
    calls = []
    tiny.encode(TEXTS, progress=calls.append)
    assert calls == [2, 2, 1]      # increments, so a progress bar can advance by them


def test_empty_input_gives_an_empty_matrix(tiny):
    vectors = tiny.encode([])
    assert vectors.shape == (0, 32) and vectors.dtype == np.float32


def test_id_names_the_model_and_changes_with_its_weights(tmp_path):
    a, b = tiny_embedder(0), tiny_embedder(1)
    id_a = embedder(a).id
    assert id_a == embedder(a).id                     # stable across instances
    assert id_a.startswith(f"{a.name}:32:")
    assert embedder(b).id.split(":")[-1] != id_a.split(":")[-1]
    # A copy re-saved elsewhere with different version stamps keeps the weight hash.
    copy = tmp_path / a.name
    shutil.copytree(a, copy)
    (copy / "config_sentence_transformers.json").write_text('{"__version__": {"x": "9"}}')
    assert embedder(copy).id == id_a


def test_embedders_of_one_model_share_it_until_its_files_change(tmp_path):
    path = shutil.copytree(tiny_embedder(), tmp_path / "emb")
    first = embedder(path)
    assert embedder(path).model is first.model        # the judge's beside the searcher's
    with open(path / "modules.json", "a") as f:
        f.write("\n")                                 # the model rewritten in place
    fresh = embedder(path)
    assert fresh.model is not first.model
    np.testing.assert_allclose(fresh.encode(TEXTS), first.encode(TEXTS), atol=1e-6)


def test_count_tokens_uses_the_model_tokenizer_without_truncating(tiny, caplog):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_embedder())
    text = "the capital of France is Paris " * 60
    expected = len(tok(text, add_special_tokens=False)["input_ids"])
    with caplog.at_level(logging.WARNING):
        assert tiny.count_tokens(text) == expected
    assert expected > tiny.max_tokens == 128           # longer than the model reads: not cut
    assert not [r for r in caplog.records if "longer" in r.getMessage()]
    assert tiny.count_tokens("") == 0


def test_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(RagloopError) as info:
        embedder(tmp_path / "nowhere").encode(["x"])
    message = info.value.message
    assert "\n" not in message and "nowhere" in message and "-o model=" in message


def test_folder_that_is_not_a_model_is_a_one_line_error(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    with pytest.raises(RagloopError) as info:
        embedder(tmp_path / "junk").dimension
    assert "\n" not in info.value.message and "junk" in info.value.message


def test_hub_id_offline_is_a_one_line_error():
    with pytest.raises(RagloopError) as info:
        embedder("nobody-here/no-such-embedder").encode(["x"])
    message = info.value.message
    assert "\n" not in message and "nobody-here/no-such-embedder" in message
    assert "local folder" in message


def test_options_are_validated():
    with pytest.raises(RagloopError, match="batch_size"):
        build_config(SentenceTransformersConfig, ["batch_size=0"], "sentence-transformers")
    with pytest.raises(RagloopError, match="device"):
        build_config(SentenceTransformersConfig, ["device=gpu"], "sentence-transformers")
    config = build_config(SentenceTransformersConfig, ["batch_size=8", "trust_remote_code=no"])
    assert config.batch_size == 8 and config.trust_remote_code is False


@pytest.mark.slow
def test_packaged_minilm_embeds_similar_sentences_closer():
    e = SentenceTransformersEmbedder()
    assert e.dimension == 384
    assert e.id.startswith("all-MiniLM-L6-v2:384:")
    v = e.encode(["How do I install the package on Linux?",
                  "Installation steps for Linux users",
                  "The recipe needs two eggs and a cup of flour."])
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2
    assert e.count_tokens("Hello world") == 2
