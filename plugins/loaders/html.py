"""HTML loader: the visible text, with headings rewritten as Markdown `#` lines.

Headings become "## X" lines so that the chunker, which understands Markdown headings, gives
every chunk of a page its heading path; the <title> becomes the top heading when the page has
no <h1>. <pre> blocks become ``` fences, list items "- " lines, table rows "a | b" lines.
Script, style and other invisible elements are dropped. Uses only the stdlib parser.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from ragloop.core import Document, Loader, SkipFile, hookimpl
from ragloop.plugins.loaders.text import read_text

HEADINGS = {f"h{n}": n for n in range(1, 7)}
INVISIBLE = {"script", "style", "noscript", "template", "svg", "math", "iframe", "object"}
# Elements that end the paragraph around them; everything else is inline.
BLOCKS = {"p", "div", "section", "article", "header", "footer", "nav", "aside", "main",
          "ul", "ol", "dl", "table", "blockquote", "figure", "figcaption", "form", "fieldset",
          "details", "summary", "address", "hr", "body", "html", *HEADINGS}
LINES = {"li", "dt", "dd", "tr", "br", "caption"}    # a new line, same paragraph
SPACE = re.compile(r"\s+")


class _Extractor(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []       # paragraphs, joined by blank lines at the end
        self.lines: list[str] = []        # lines of the paragraph being built
        self.inline: list[str] = []       # text of the line being built
        self.prefix = ""                  # "## " inside a heading, "- " inside a list item
        self.hidden = 0                   # depth inside invisible elements
        self.in_title = False
        self.in_head = False              # </head> is optional: <body> ends it too
        self.title_parts: list[str] = []
        self.pre = 0
        self.h1 = []                      # texts of the <h1> headings

    def end_line(self) -> None:
        raw = "".join(self.inline)
        self.inline = []
        text = raw.strip("\n") if self.pre else SPACE.sub(" ", raw).strip()
        if text:
            self.lines.append(self.prefix + text)
            if not self.prefix.startswith("#"):
                self.prefix = ""

    def end_block(self) -> None:
        self.end_line()
        if self.lines:
            self.blocks.append("\n".join(self.lines))
            self.lines = []

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.in_title = True
        elif tag == "head":
            self.in_head = True
        elif tag == "body":
            self.in_head = False
        elif tag in INVISIBLE:
            self.hidden += 1
        elif tag in HEADINGS:
            self.end_block()
            self.prefix = "#" * HEADINGS[tag] + " "
        elif tag == "pre":
            self.end_block()
            self.pre += 1
        elif tag in BLOCKS:
            self.end_block()
        elif tag == "br" and self.prefix.startswith("#"):
            self.inline.append(" ")       # a heading stays on one line
        elif tag in LINES:
            self.end_line()
            if tag == "li":
                self.prefix = "- "
        elif tag in ("td", "th") and self.inline:
            self.inline.append(" | ")

    def handle_startendtag(self, tag, attrs):
        if tag == "br":
            self.handle_starttag(tag, attrs)
        elif tag in BLOCKS:
            self.end_block()

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        elif tag == "head":
            self.in_head = False
        elif tag in INVISIBLE:
            self.hidden = max(0, self.hidden - 1)
        elif tag in HEADINGS:
            if tag == "h1":
                self.h1.append(SPACE.sub(" ", "".join(self.inline)).strip())
            self.end_block()
            self.prefix = ""
        elif tag == "pre":
            # fenced, so that the chunker does not take a "# comment" line for a heading
            self.end_line()
            if self.lines:
                self.blocks.append("```\n" + "\n".join(self.lines) + "\n```")
                self.lines = []
            self.pre = max(0, self.pre - 1)
        elif tag in BLOCKS:
            self.end_block()
        elif tag in LINES:
            self.end_line()

    def handle_data(self, data):
        if self.in_title:
            self.title_parts.append(data)
        elif not self.hidden and not self.in_head:
            self.inline.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """(text, title) of an HTML page."""
    parser = _Extractor()
    parser.feed(html)
    parser.close()
    parser.end_block()
    title = SPACE.sub(" ", "".join(parser.title_parts)).strip()
    blocks = parser.blocks
    if title and not parser.h1:
        blocks = [f"# {title}", *blocks]
    elif title and title not in parser.h1:
        blocks = [title, *blocks]
    return "\n\n".join(blocks) + ("\n" if blocks else ""), title


class HtmlLoader(Loader):
    name = "html"
    description = "HTML pages as text without markup; title and headings kept as # lines."
    extensions = (".html", ".htm", ".xhtml")

    def load(self, path: Path) -> Document:
        doc = read_text(Path(path))
        try:
            doc.text, title = html_to_text(doc.text)
        except Exception as exc:   # the stdlib parser is lenient; this is a last resort
            raise SkipFile(f"malformed HTML ({type(exc).__name__}: {exc})") from None
        if title:
            doc.metadata["title"] = title
        return doc


@hookimpl
def register_loaders(register):
    register(HtmlLoader)
