"""The cross-encoder reranker takes only cross-encoders: a bi-encoder (embedder) would load
with a random classification head and reorder the passages at random, so it is refused in
one line; a sequence classifier, as saved by transformers or by sentence-transformers'
CrossEncoder, reranks by its scores."""

from dataclasses import dataclass

import pytest
from cli_helpers import emb, run
from test_train import one_line_error
from tiny_models import make_tiny_tokenizer, tiny_embedder

from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.plugins.rerankers.cross_encoder import CrossEncoderConfig, CrossEncoderReranker

PASSAGES = ["Paris is the capital of France.", "Dogs bark at night.", "Berlin is in Germany."]


@dataclass
class Hit:
    text: str
    score: float = 0.0


def reranker(model) -> CrossEncoderReranker:
    return CrossEncoderReranker(build_config(CrossEncoderConfig, [f"model={model}"], "x"))


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory):
    """A 1-layer BERT sequence classifier (one score per pair) from a config, random weights."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    folder = tmp_path_factory.mktemp("cross-encoder")
    tok = AutoTokenizer.from_pretrained(make_tiny_tokenizer(folder / "tok"))
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, num_labels=1,
                        max_position_embeddings=512, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder / "hf")
    tok.save_pretrained(folder / "hf")
    return folder / "hf"


def test_a_bi_encoder_is_refused_in_one_line():
    with pytest.raises(RagloopError) as info:
        reranker(tiny_embedder()).rerank("capital of France?", [Hit(p) for p in PASSAGES])
    message = info.value.message
    assert "\n" not in message and "not a cross-encoder" in message
    assert "bi-encoder" in message and "--rerank-option model=" in message


def test_a_bare_encoder_without_a_classifier_is_refused(tmp_path):
    from transformers import BertConfig, BertModel
    BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path)
    with pytest.raises(RagloopError) as info:
        reranker(tmp_path).rerank("q", [Hit("a"), Hit("b")])
    assert "a BertModel model, not a cross-encoder" in info.value.message


def test_search_with_a_bi_encoder_reranker_is_a_one_line_error(tmp_path, ragloop_home):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(PASSAGES):
        (docs / f"{i}.txt").write_text(text + "\n")
    run("index", docs, *emb())
    result = run("search", "capital of France?", "--rerank", "cross-encoder",
                 "--rerank-option", f"model={tiny_embedder()}", ok=False)
    one_line_error(result, "not a cross-encoder", "bi-encoder")


def test_a_cross_encoder_reranks_by_its_scores(cross_encoder, tmp_path):
    from sentence_transformers import CrossEncoder
    model = CrossEncoder(str(cross_encoder), device="cpu")
    query = "capital of France?"
    expected = model.predict([(query, p) for p in PASSAGES])
    ranked = reranker(cross_encoder).rerank(query, [Hit(p) for p in PASSAGES])
    assert [h.text for h in ranked] == [p for _, p in sorted(zip(-expected, PASSAGES))]
    assert [h.score for h in ranked] == pytest.approx(sorted(expected, reverse=True))
    # The folder sentence-transformers writes for a CrossEncoder is taken as well.
    model.save(str(tmp_path / "st"))
    assert [h.text for h in reranker(tmp_path / "st").rerank(query, [Hit(p) for p in PASSAGES])] \
        == [h.text for h in ranked]
