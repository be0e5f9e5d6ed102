"""The default chunker, "tokens": sections, then paragraphs, then sentences, then words.

A document is cut into sections at its headings (Markdown `#` lines, also written by the HTML
and JSONL loaders; reST and setext underlined titles). A chunk never spans two sections, and
carries the section's heading path ("Install > Linux"); the heading lines themselves are not
in the chunk text, since the path is embedded with it. Within a section whole paragraphs are
packed up to `size` tokens; a paragraph too long for one chunk is cut at line ends, sentence
ends or spaces (a hard cut only inside a giant "word"). Each new chunk of a section starts
with up to `overlap` tokens from the end of the previous one, from a sentence or word start.

`count_tokens` is a real tokenizer, so it is called about once per paragraph and once or
twice per chunk, never on more than `size * MAX_CHARS_PER_TOKEN` characters: long texts are
measured in characters first. Counts of pieces cut at whitespace add up (calibrated once per
tokenizer for its special tokens and separators), which keeps chunks within `size` without
tokenizing each one again.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field

from ragloop.core import Chunk, Chunker, Document, hookimpl

MAX_CHARS_PER_TOKEN = 10      # no real text is sparser; caps chunks of giant [UNK] words
MAX_HEADING = 200             # longer lines are text, and never run through the regexes
ATX = re.compile(r"(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
ADORNMENT = re.compile(r"([=\-~^\"'`#*+:.!$%&,/;<>?@\\_|])\1{2,}")
FENCE = re.compile(r" {0,3}(```|~~~)")
# each pattern ends with the whitespace a piece is cut at: line end, sentence end, any space
CUTS = (re.compile(r"\n"), re.compile(r"[.!?:;][\"')\]]*\s"), re.compile(r"\s"))
SENTENCE_START = re.compile(r"[.!?:;][\"')\]]*\s+(?=\S)")
WORD_START = re.compile(r"\s+(?=\S)")


@dataclass
class TokenChunkerConfig:
    size: int = field(default=200, metadata={
        "help": "Most tokens in a chunk, as the embedder's tokenizer counts them."})
    # 0: repeating 30 tokens cost dense search 2 points MRR@10 on the real-text benchmark
    # (docs/retrieval-benchmark.md); `search --expand section` gives a hit its context.
    overlap: int = field(default=0, metadata={
        "help": "Tokens from the end of a chunk repeated at the start of the next one in "
                "the same section (0 for none)."})

    def __post_init__(self):
        if self.size <= 0:
            raise ValueError(f"size must be a positive number of tokens, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise ValueError(f"overlap must be at least 0 and less than size ({self.size}), "
                             f"got {self.overlap}")


@dataclass
class _Unit:
    start: int
    end: int
    tokens: int
    glued: bool = False     # cut from the unit before it inside a word: never joined to it


class _Counter:
    """count_tokens without the tokenizer's fixed overhead (e.g. [CLS] and [SEP])."""

    def __init__(self, count_tokens, size: int):
        self.count = count_tokens
        self.overhead = count_tokens("")
        # a tokenizer set up to pad or truncate (as Hugging Face ones for batches often are)
        # would silently make every chunk "fit"
        if count_tokens(" ".join(["a"] * (size + 1))) <= size:
            raise ValueError("count_tokens does not count past the chunk size: its tokenizer "
                             "truncates or pads; give the chunker one that does neither")
        # what joining two pieces with whitespace costs beyond their own tokens
        self.join = max(0, max(count_tokens(f"a{sep}b") for sep in ("\n\n", "\n", " "))
                        - count_tokens("a") - count_tokens("b") + self.overhead)

    def __call__(self, text: str) -> int:
        return self.count(text) - self.overhead


class TokenChunker(Chunker):
    name = "tokens"
    description = ("Token-sized chunks within heading sections, cut at paragraph, sentence "
                   "and word boundaries, with overlap.")
    Config = TokenChunkerConfig
    _counter = None

    def chunk(self, document: Document, count_tokens) -> list[Chunk]:
        return list(self.iter_chunks(document, count_tokens))

    def iter_chunks(self, document: Document, count_tokens):
        """The chunks one at a time, in order, each as soon as it is cut: the indexer
        embeds and commits a huge document's first chunks before the rest are cut."""
        text = document.text
        if not text.strip():
            return
        counter = self._counter
        if counter is None or counter.count != count_tokens:    # calibrate once per tokenizer
            counter = self._counter = _Counter(count_tokens, self.config.size)
        budget = self.config.size - counter.overhead
        if budget <= 0:
            raise ValueError(f"chunk size {self.config.size} leaves no room for text: the "
                             f"tokenizer adds {counter.overhead} tokens to every text")
        work = _Section(text, counter, budget, min(self.config.overlap, budget - 1),
                        budget * MAX_CHARS_PER_TOKEN)
        newlines = [m.start() for m in re.finditer("\n", text)]
        markdown = document.path.lower().endswith((".md", ".markdown"))
        for heading, paragraphs in sections(text, markdown):
            for start, end in work.pack(paragraphs):
                yield Chunk(text=text[start:end], heading=heading, start_char=start,
                            end_char=end, start_line=bisect_right(newlines, start - 1) + 1,
                            end_line=bisect_right(newlines, end - 1) + 1)


def sections(text: str, markdown: bool = False) -> list[tuple[str, list[tuple[int, int]]]]:
    """(heading path, paragraph spans) per section, in order; sections without text dropped.

    Headings are Markdown `#` lines at column 0 (not inside ``` fences) and underlined, or
    over- and underlined, titles after a blank line (reST; Markdown setext). Underline
    styles get levels in order of first appearance, as reST defines them, except that in
    Markdown "=" and "-" underlines are levels 1 and 2.
    """
    lines, pos = [], 0
    while pos <= len(text):
        stop = text.find("\n", pos)
        stop = len(text) if stop < 0 else stop
        lines.append(text[pos:stop])
        pos = stop + 1
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)

    def adornment(i):
        return i < len(lines) and len(lines[i]) <= MAX_HEADING and ADORNMENT.fullmatch(
            lines[i].rstrip()) is not None

    result: list[tuple[str, list]] = [("", [])]
    styles: dict[tuple[bool, str], int] = {(False, "="): 1, (False, "-"): 2} if markdown else {}
    stack: list[tuple[int, str]] = []
    paragraph, fence, i = None, None, 0
    while i < len(lines):
        line, start = lines[i], starts[i]
        stripped = line.strip()
        heading, used = None, 1
        if fence or FENCE.match(line):
            fence = None if fence and line.lstrip().startswith(fence) else (
                fence or FENCE.match(line).group(1))
        elif not stripped:
            if paragraph:
                result[-1][1].append(tuple(paragraph))
            paragraph = None
            i += 1
            continue
        elif len(line) <= MAX_HEADING and (atx := ATX.match(line)):
            heading = len(atx.group(1)), atx.group(2).strip()
        elif len(line) <= MAX_HEADING and (i == 0 or not lines[i - 1].strip()):
            if (adornment(i) and adornment(i + 2) and lines[i + 1].strip()
                  and lines[i + 2].strip()[0] == stripped[0]):
                heading, used = (True, stripped[0]), 3
            elif not line[0].isspace() and not adornment(i) and adornment(i + 1):
                heading, used = (False, lines[i + 1].strip()[0]), 2
        if heading:
            level, title = heading
            if used > 1:
                title = lines[i + used - 2].strip()
                level = styles.setdefault(heading, len(styles) + 1)
            if paragraph:
                result[-1][1].append(tuple(paragraph))
            paragraph = None
            stack = [h for h in stack if h[0] < level] + [(level, title)]
            result.append((" > ".join(t for _, t in stack), []))
        elif stripped:
            left = start + len(line) - len(line.lstrip())
            right = start + len(line.rstrip())
            paragraph = [left, right] if paragraph is None else [paragraph[0], right]
        i += used
    if paragraph:
        result[-1][1].append(tuple(paragraph))
    return [(path, paragraphs) for path, paragraphs in result if paragraphs]


class _Section:
    """Packs the paragraphs of one section into (start, end) chunk spans."""

    def __init__(self, text, counter, budget, overlap, max_chars):
        self.text, self.count, self.budget = text, counter, budget
        self.overlap, self.max_chars = overlap, max_chars

    def pack(self, paragraphs):
        """(start, end) spans, each yielded as soon as it is complete."""
        current, tokens = [], 0
        for unit in (u for start, end in paragraphs for u in self.units(start, end)):
            if current and (unit.glued or self.too_big(current, tokens, unit)):
                yield current[0].start, current[-1].end
                tail = None if unit.glued else self.tail(current[-1])
                current, tokens = ([tail], tail.tokens) if tail else ([], 0)
                if tail and self.too_big(current, tokens, unit):
                    current, tokens = [], 0
            tokens += unit.tokens + (self.count.join if current else 0)
            current.append(unit)
        if current:
            yield current[0].start, current[-1].end

    def too_big(self, current, tokens, unit) -> bool:
        return (tokens + self.count.join + unit.tokens > self.budget
                or unit.end - current[0].start > self.max_chars)

    def units(self, start: int, end: int):
        """The paragraph as one unit if it fits, else cut into pieces that do; pieces leave
        room for the overlap so that the next chunk can still start with it."""
        if end - start <= self.max_chars:
            tokens = self.count(self.text[start:end])
            if tokens <= self.budget:
                return [_Unit(start, end, tokens)]
        return self.cut(start, end, self.budget - self.overlap)

    def cut(self, start: int, end: int, limit: int):
        """The pieces of a long paragraph, lazily: a 50 MB line is never cut all at once."""
        text, pos, glued = self.text, start, False
        chars_per_token = 4.0      # a first guess, then what the last piece measured
        while pos < end:
            stop, tokens = self.piece(pos, end, limit, chars_per_token)
            yield _Unit(pos, stop, tokens, glued)
            chars_per_token = max(1.0, (stop - pos) / max(tokens, 1))
            glued = stop < end and not text[stop].isspace()
            pos = stop
            while pos < end and text[pos].isspace():
                pos += 1

    def piece(self, pos: int, end: int, limit: int, chars_per_token: float):
        """(stop, tokens) of the next piece from `pos`: at most `limit` tokens, cut at the
        best boundary near the length estimated from characters; if it came out well under
        the limit, one longer try, since the estimate is only a guess."""
        room = min(end, pos + self.max_chars)
        target = min(room, pos + max(1, int(limit * chars_per_token)))
        best = None
        while True:
            stop = target if target == end else self.best_cut(pos, target)
            tokens = self.count(self.text[pos:stop])
            if tokens > limit and stop - pos > 1:
                if best:
                    return best
                target = pos + max(1, int((stop - pos) * limit / tokens * 0.9))
                continue
            if best or tokens >= 0.7 * limit or target >= room:
                return stop, tokens
            best = stop, tokens
            target = min(room, pos + int((stop - pos) * limit / max(tokens, 1) * 0.95))
            if target <= stop:
                return best

    def best_cut(self, pos: int, target: int) -> int:
        """Where to end a piece from `pos` near `target`: the last line end in the second
        half of the span, else the last sentence end, else the last space, else `target`."""
        low = pos + (target - pos) // 2
        window = self.text[low:target + 1]
        for pattern in CUTS:
            last = None
            for last in pattern.finditer(window):
                pass
            if last is not None:
                stop = low + last.end() - 1
                while stop > pos + 1 and self.text[stop - 1].isspace():
                    stop -= 1
                if stop > pos:
                    return stop
        return target

    def tail(self, unit: _Unit) -> _Unit | None:
        """The last sentences (or words) of `unit`, at most `overlap` tokens."""
        if self.overlap <= 0:
            return None
        if unit.tokens <= self.overlap:
            return unit
        text = self.text
        chars = int((unit.end - unit.start) / max(unit.tokens, 1) * self.overlap)
        for _ in range(4):
            low = max(unit.start, unit.end - chars)
            start = self.next_start(low, unit.end)
            if start is None:
                return None
            tokens = self.count(text[start:unit.end])
            if tokens <= self.overlap:
                return _Unit(start, unit.end, tokens)
            chars = int((unit.end - start) * self.overlap / tokens * 0.9)
        return None

    def next_start(self, low: int, end: int) -> int | None:
        """The first sentence start in low..end if it keeps at least half of it, else the
        first word start."""
        window = self.text[max(0, low - 3):end]
        base = max(0, low - 3)
        for pattern in (SENTENCE_START, WORD_START):
            for match in pattern.finditer(window):
                start = base + match.end()
                if start < low:
                    continue
                if pattern is WORD_START or start - low <= (end - low) // 2:
                    return start if start < end else None
                break
        return None


@hookimpl
def register_chunkers(register):
    register(TokenChunker)
