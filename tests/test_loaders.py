"""The built-in loaders on real files of every type, and on the bad inputs the issue lists."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ragloop.core.components import Document, SkipFile
from ragloop.core.registry import entries

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "corpus"


def loader(ext: str):
    """The loader the orchestrator would pick for an extension: through the hook, as it does."""
    for entry in entries("loader").values():
        if ext in entry.cls.extensions:
            return entry.cls()
    raise LookupError(ext)


def load(tmp_path: Path, name: str, data: bytes | str) -> Document:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return loader(path.suffix).load(path)


def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A minimal valid PDF: one Helvetica text line per string, one page per list."""
    def esc(s):
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    font = 3 + 2 * len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects = ["<< /Type /Catalog /Pages 2 0 R >>",
               f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>"]
    for i, lines in enumerate(pages):
        stream = "BT /F1 11 Tf 14 TL 56 780 Td " + " ".join(f"({esc(x)}) Tj T*" for x in lines) + " ET"
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources "
                       f"<< /Font << /F1 {font} 0 R >> >> /Contents {4 + 2 * i} 0 R >>")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    if title:
        objects.append(f"<< /Title ({esc(title)}) >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref = len(out)
    info = f" /Info {len(objects)} 0 R" if title else ""
    out += (f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n"
            + "".join(f"{o:010d} 00000 n \n" for o in offsets)
            + f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\n"
              f"startxref\n{xref}\n%%EOF\n").encode()
    return out


def test_the_hook_gives_each_extension_exactly_one_loader():
    claimed = {}
    for entry in entries("loader").values():
        for ext in entry.cls.extensions:
            assert ext not in claimed, f"{ext} claimed by {claimed.get(ext)} and {entry.name}"
            claimed[ext] = entry.name
    wanted = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".rst": "rst",
              ".html": "html", ".htm": "html", ".pdf": "pdf", ".jsonl": "jsonl"}
    assert {ext: claimed.get(ext) for ext in wanted} == wanted


@pytest.mark.parametrize("name", ["notes.txt", "guide.md", "guide.rst"])
def test_plain_text_formats_are_kept_as_written(tmp_path, name):
    text = "Title\n=====\n\n# Install\n\nRun `ferrule init` — it asks for a password.\n"
    doc = load(tmp_path, name, text)
    assert (doc.text, doc.warnings, doc.path) == (text, [], str(tmp_path / name))


def test_a_utf8_byte_order_mark_is_dropped(tmp_path):
    assert load(tmp_path, "bom.md", "\ufeff# Title\n").text == "# Title\n"
    assert load(tmp_path, "bom.jsonl", '\ufeff{"text": "ok"}\n').text == "ok"


@pytest.mark.parametrize("name", ["a.txt", "a.md", "a.rst", "a.html", "a.pdf", "a.jsonl"])
def test_an_empty_file_is_an_empty_document(tmp_path, name):
    doc = load(tmp_path, name, b"")
    assert doc.text == ""


@pytest.mark.parametrize("name", ["a.txt", "a.md", "a.rst", "a.html", "a.jsonl"])
def test_a_binary_file_is_skipped_with_a_reason(tmp_path, name):
    with pytest.raises(SkipFile, match="binary file"):
        load(tmp_path, name, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))


@pytest.mark.parametrize("name, data", [
    ("latin1.txt", "café au lait\n".encode("latin-1")),
    ("latin1.html", "<p>café</p>".encode("latin-1")),
    ("latin1.jsonl", '{"text": "café"}\n'.encode("latin-1")),
])
def test_undecodable_bytes_are_replaced_and_reported(tmp_path, name, data):
    doc = load(tmp_path, name, data)
    assert "caf\ufffd" in doc.text
    assert doc.warnings == ["1 undecodable bytes replaced (file is not valid UTF-8)"]


def test_html_keeps_title_and_headings_and_drops_invisible_parts(tmp_path):
    html = """<!doctype html><html><head><title>Ferrule &amp; friends</title>
    <style>h2 { color: red }</style><script>var s = "<h1>not text</h1>";</script></head>
    <body><nav>Docs</nav><h2>Install <em>on</em> Linux</h2><p>Run   the
    installer.<br>Then reboot &lt;now&gt;.</p><ul><li>one</li><li>two</li></ul>
    <h3>Debian</h3><pre>apt install ferrule\n  --yes</pre><table><tr><td>a</td><td>b</td></tr></table></body></html>"""
    doc = load(tmp_path, "page.html", html)
    assert doc.text == ("# Ferrule & friends\n\nDocs\n\n## Install on Linux\n\n"
                        "Run the installer.\nThen reboot <now>.\n\n- one\n- two\n\n"
                        "### Debian\n\n```\napt install ferrule\n  --yes\n```\n\na | b\n")
    assert doc.metadata == {"title": "Ferrule & friends"}


def test_html_title_is_not_a_second_top_heading_when_the_page_has_an_h1(tmp_path):
    doc = load(tmp_path, "page.htm", "<title>Site: Guide</title><h1>Guide</h1><p>x</p>")
    assert doc.text == "Site: Guide\n\n# Guide\n\nx\n"
    doc = load(tmp_path, "same.htm", "<title>Guide</title><h1>Guide</h1><p>x</p>")
    assert doc.text == "# Guide\n\nx\n"


def test_pdf_text_of_every_page_with_page_offsets(tmp_path):
    pdf = make_pdf([["Ferrule travel policy (draft)", "Trains first."], ["Page two."]],
                   title="Travel")
    doc = load(tmp_path, "policy.pdf", pdf)
    assert doc.text == "Ferrule travel policy (draft)\nTrains first.\n\nPage two."
    assert doc.metadata == {"pages": 2, "page_starts": [0, 45], "title": "Travel"}
    assert doc.text[45:].startswith("Page two")
    assert doc.warnings == []


@pytest.mark.parametrize("data, reason", [
    (make_pdf([["hello"]])[:200], "malformed PDF"),
    (b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage", "malformed PDF"),
    (b"<html>not a pdf</html>", "not a PDF file"),
])
def test_a_malformed_pdf_is_skipped_with_a_one_line_reason(tmp_path, data, reason):
    with pytest.raises(SkipFile) as caught:
        load(tmp_path, "broken.pdf", data)
    assert str(caught.value).startswith(reason)
    assert "\n" not in str(caught.value)


def test_pdf_with_a_damaged_cross_reference_loads_with_a_warning(tmp_path):
    pdf = make_pdf([["Still readable."]]).replace(b"startxref\n", b"startxref\n9")
    doc = load(tmp_path, "damaged.pdf", pdf)
    assert doc.text == "Still readable."
    assert any(w.startswith("pypdf: ") for w in doc.warnings)


def test_jsonl_records_become_paragraphs_and_fields_metadata(tmp_path):
    lines = [json.dumps({"id": 1, "title": "Reset a password", "text": "Use key rotate.",
                         "tags": ["keys"]}),
             "{this is not json",
             "",
             json.dumps(["a", "list"]),
             json.dumps({"id": 3, "body": "no text field"}),
             json.dumps({"id": 4, "text": "Untitled record.\n"})]
    doc = load(tmp_path, "faq.jsonl", "\n".join(lines) + "\n")
    assert doc.text == "# Reset a password\n\nUse key rotate.\n\nUntitled record."
    records = doc.metadata["records"]
    assert [(r["line"], r["fields"]) for r in records] == [
        (1, {"id": 1, "title": "Reset a password", "tags": ["keys"]}), (6, {"id": 4})]
    assert [doc.text[r["start_char"]:r["end_char"]] for r in records] == [
        "Use key rotate.", "Untitled record."]
    assert [w.split(":")[0] for w in doc.warnings] == ["line 2", "line 4", "line 5"]
    assert "invalid JSON" in doc.warnings[0] and '"text"' in doc.warnings[2]


def test_jsonl_without_a_usable_line_is_skipped(tmp_path):
    with pytest.raises(SkipFile, match=r"no usable JSONL line \(2 bad; first: line 1: invalid"):
        load(tmp_path, "bad.jsonl", '{"text": \n{"title": "no text"}\n')


def test_jsonl_warnings_are_capped(tmp_path):
    doc = load(tmp_path, "noisy.jsonl", '{"text": "ok"}\n' + "oops\n" * 25)
    assert doc.text == "ok"
    assert len(doc.warnings) == 11 and doc.warnings[-1] == "15 more bad lines skipped"


@pytest.mark.parametrize("name, wrap", [
    ("huge.txt", lambda body: body),
    ("huge.html", lambda body: "<p>" + body + "</p>"),
    ("huge.jsonl", lambda body: json.dumps({"text": body})),
])
def test_a_50_mb_single_line_file_loads_in_reasonable_time(tmp_path, name, wrap):
    body = "ferrule " * (50 * 1024 * 1024 // 8)
    path = tmp_path / name
    path.write_text(wrap(body))
    started = time.perf_counter()
    doc = loader(path.suffix).load(path)
    elapsed = time.perf_counter() - started
    assert len(doc.text) >= len(body) - 1
    assert elapsed < 10, f"{name}: {elapsed:.1f}s for 50 MB"


CORPUS_FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file())


def test_the_corpus_mixes_formats():
    kinds = {p.suffix for p in CORPUS_FILES}
    assert {".md", ".txt", ".rst", ".html", ".jsonl", ".pdf"} <= kinds
    assert 30 <= len(CORPUS_FILES) <= 60
    assert sum(p.stat().st_size for p in CORPUS_FILES) < 300_000


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.relative_to(CORPUS).as_posix())
def test_every_corpus_file_loads_cleanly(path):
    doc = loader(path.suffix).load(path)
    assert doc.warnings == []
    assert len(doc.text.strip()) > 400
    assert "<" not in doc.text or path.suffix != ".html"


def test_every_question_points_at_a_corpus_file():
    rows = [json.loads(line) for line in (CORPUS.parent / "questions.jsonl").read_text().splitlines()]
    assert len(rows) >= 60
    assert all(set(r) == {"question", "source", "answer"} and r["answer"] for r in rows)
    assert {r["source"] for r in rows} <= {p.relative_to(CORPUS).as_posix() for p in CORPUS_FILES}
    assert len({r["question"] for r in rows}) == len(rows)
