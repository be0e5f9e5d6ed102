"""PDF loader (pypdf): the text of every page, pages separated by blank lines.

`metadata["page_starts"]` holds the character offset where each page's text begins, so a
chunk's page is `bisect_right(page_starts, chunk.start_char)`. A file pypdf cannot open
is skipped with a one-line reason; a page it cannot read is a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ragloop.core import Document, Loader, SkipFile, hookimpl

MAX_PARSER_WARNINGS = 5


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Collect(logging.Handler):
    """pypdf reports recoverable damage through logging; keep it as document warnings."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        message = " ".join(record.getMessage().split())
        if message not in self.messages:
            self.messages.append(message)


class PdfLoader(Loader):
    name = "pdf"
    description = "PDF files: the text layer of each page (pypdf); page offsets in metadata."
    extensions = (".pdf",)

    def load(self, path: Path) -> Document:
        path = Path(path)
        doc = Document(path=str(path), text="")
        with open(path, "rb") as f:
            head = f.read(1024)
        if not head:
            return doc
        if b"%PDF-" not in head:
            raise SkipFile("not a PDF file (no %PDF- header)")
        logger = logging.getLogger("pypdf")
        collect = _Collect()
        logger.addHandler(collect)
        propagate, logger.propagate = logger.propagate, False
        try:
            self._read(path, doc)
        finally:
            logger.removeHandler(collect)
            logger.propagate = propagate
        doc.warnings += [f"pypdf: {m}" for m in collect.messages[:MAX_PARSER_WARNINGS]]
        return doc

    def _read(self, path: Path, doc: Document) -> None:
        from pypdf import PdfReader

        try:
            reader = PdfReader(path)
            if reader.is_encrypted and not reader.decrypt(""):
                raise SkipFile("encrypted PDF (needs a password)")
            pages = list(reader.pages)
        except SkipFile:
            raise
        except Exception as exc:
            raise SkipFile(f"malformed PDF ({_one_line(exc)})") from None
        texts, starts, offset, failed = [], [], 0, 0
        for number, page in enumerate(pages, 1):
            try:
                text = (page.extract_text() or "").strip()
            except Exception as exc:
                doc.warnings.append(f"page {number}: text not extracted ({_one_line(exc)})")
                failed, text = failed + 1, ""
            starts.append(offset)
            texts.append(text)
            offset += len(text) + 2
        if pages and failed == len(pages):
            raise SkipFile(f"malformed PDF (no page could be read; {doc.warnings[0]})")
        doc.text = "\n\n".join(texts)
        if pages and not doc.text.strip():
            doc.warnings.append("no text layer (a scanned PDF?); nothing to index")
        doc.metadata["pages"] = len(pages)
        doc.metadata["page_starts"] = starts
        try:
            title = reader.metadata.title if reader.metadata else None
        except Exception:
            title = None
        if title:
            doc.metadata["title"] = " ".join(str(title).split())


@hookimpl
def register_loaders(register):
    register(PdfLoader)
