"""Plain-text loaders: .txt (and files without an extension), Markdown and reStructuredText.

Markdown and reST are kept as written: the chunker reads their heading lines itself, so no
markup is stripped here.
"""

from __future__ import annotations

from pathlib import Path

from ragloop.core import Document, Loader, SkipFile, hookimpl


def read_text(path: Path) -> Document:
    """Decode as UTF-8, replacing undecodable bytes and saying how many there were."""
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise SkipFile("binary file (contains NUL bytes)")
    text = data.decode("utf-8", errors="replace")
    # a byte-order mark would hide a first-line "# Title" or JSON object from the parsers
    doc = Document(path=str(path), text=text[1:] if text.startswith("\ufeff") else text)
    bad = text.count("\ufffd") - data.decode("utf-8", errors="ignore").count("\ufffd")
    if bad:
        doc.warnings.append(f"{bad} undecodable bytes replaced (file is not valid UTF-8)")
    return doc


class TextLoader(Loader):
    name = "text"
    description = "Plain text files, decoded as UTF-8."
    extensions = (".txt", ".text", "")

    def load(self, path: Path) -> Document:
        return read_text(Path(path))


class MarkdownLoader(TextLoader):
    name = "markdown"
    description = "Markdown files, kept as written so that the chunker sees the # headings."
    extensions = (".md", ".markdown")


class RstLoader(TextLoader):
    name = "rst"
    description = "reStructuredText files, kept as written so that the chunker sees the headings."
    extensions = (".rst", ".rest")


@hookimpl
def register_loaders(register):
    register(TextLoader)
    register(MarkdownLoader)
    register(RstLoader)
