"""Retrieval corpora built at run time from documentation on this machine that nobody here
wrote: man pages and the FAQ files Debian packages ship, each written as a folder of plain
Markdown files (one document per file, a `# title` first line) that ragloop indexes exactly
as it would a user's folder, with queries whose relevant document is known.

- `manref`: long reference pages from man1 and man8. Query: the NAME line's description
  ("list directory contents"); relevant: that page, written without its NAME section and
  titled by the page name ("ls(1)").
- `man3`: library pages from man3 (C functions, Perl modules, ...), code-heavy; the same.
- `faq`: the FAQ files under /usr/share/doc (zlib, lsof, sed, valgrind, xz, procps, ...)
  cut into entries. Query: the question; relevant: its answer, written without the question
  and titled by the FAQ and the entry's number ("zlib FAQ 4").

Queries are made mechanically, never by hand, and dropped when they cannot have one answer:
fewer than MIN_WORDS words, a description or question that several pages or entries share,
or a help2man placeholder ("manual page for foo 1.2"). Everything is deterministic: sorted
file lists and seeded sampling.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import subprocess
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
DOC_ROOT = Path("/usr/share/doc")
MIN_WORDS = 3
MIN_ANSWER_CHARS = 80
MAN_WIDTH = "100"
# Compressed page sizes kept per man corpus: the lower bound keeps stubs out, the upper one
# keeps a few giant pages (bash, perlfunc) from dominating the run time.
MAN_CORPORA = {
    "manref": {"sections": ("man1", "man8"), "min_bytes": 1500, "max_bytes": 8000,
               "docs": 110,
               "about": "long reference pages (man1, man8): query = NAME description"},
    "man3": {"sections": ("man3",), "min_bytes": 1200, "max_bytes": 8000, "docs": 120,
             "about": "library pages (man3), code-heavy: query = NAME description"},
}
FAQ_LIMIT = 300
# (file under DOC_ROOT, how its entries are marked, label, only entries that ask "?")
FAQ_SOURCES = (
    ("base-files/FAQ", "qa", "base-files", False),
    ("xz-utils/faq.txt.gz", "qa", "XZ Utils", False),
    ("man-db/FAQ", "setext", "man-db", False),
    ("procps/FAQ.gz", "outdented", "procps", False),
    ("zlib1g-dev/FAQ.gz", "numbered", "zlib", False),
    ("valgrind/FAQ.txt.gz", "numbered", "Valgrind", False),
    ("lsof/00FAQ.gz", "numbered", "lsof", True),
    ("sed/sedfaq.txt.gz", "numbered", "sed", True),
    ("ncurses-base/FAQ", "stars", "ncurses", False),
)
CORPUS_NAMES = ("manref", "man3", "faq")


@dataclass
class Query:
    qid: str
    text: str
    relevant: list[str]          # document file names


@dataclass
class Corpus:
    name: str
    about: str
    folder: Path
    documents: int
    queries: list[Query] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "about": self.about, "folder": str(self.folder),
                "documents": self.documents, "notes": self.notes,
                "queries": [asdict(q) for q in self.queries]}

    @classmethod
    def from_dict(cls, data: dict) -> "Corpus":
        return cls(data["name"], data["about"], Path(data["folder"]), data["documents"],
                   [Query(**q) for q in data["queries"]], data.get("notes", []))


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def normalized(text: str) -> str:
    return " ".join(words(text))


def write_document(folder: Path, filename: str, title: str, body: str) -> None:
    (folder / filename).write_text(f"# {title}\n\n{body.strip()}\n", encoding="utf-8")


def safe_filename(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", stem).strip("._") or "doc"


def read_maybe_gzip(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


# ---- man pages ---------------------------------------------------------------------------

def parse_lexgrog(output: str) -> dict[str, set[str]]:
    """lexgrog's `FILE: "name - description"` lines as {file: {description, ...}}."""
    found: dict[str, set[str]] = {}
    for line in output.splitlines():
        path, sep, rest = line.partition(': "')
        if not sep or not rest.endswith('"'):
            continue
        _, dash, description = rest[:-1].partition(" - ")
        if dash and description.strip():
            found.setdefault(path, set()).add(" ".join(description.split()))
    return found


def whatis(files: list[Path], batch: int = 2000) -> dict[str, set[str]]:
    """NAME descriptions of many pages at once with man-db's own parser (fast: no render)."""
    if shutil.which("lexgrog") is None:
        raise SystemExit("lexgrog (from man-db) is needed to read man page descriptions")
    found: dict[str, set[str]] = {}
    for start in range(0, len(files), batch):
        part = [str(f) for f in files[start:start + batch]]
        out = subprocess.run(["lexgrog", *part], capture_output=True, text=True,
                             errors="replace").stdout
        found.update(parse_lexgrog(out))
    return found


def is_link(path: Path) -> bool:
    """A `.so other.3` page only points at another one."""
    try:
        head = read_maybe_gzip(path)[:200] if path.stat().st_size < 400 else ""
    except (OSError, EOFError, gzip.BadGzipFile):
        return True
    return head.lstrip().startswith(".so ")


def usable_description(description: str) -> bool:
    return len(words(description)) >= MIN_WORDS and "manual page for" not in description.lower()


def page_title(path: Path) -> str:
    """`ls.1.gz` → `ls(1)`; `Archive::Tar.3perl.gz` → `Archive::Tar(3perl)`."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    stem, _, section = name.rpartition(".")
    return f"{stem}({section})"


def render_man(path: Path) -> str:
    """The page as man shows it on a 100-column terminal, without hyphenation or
    justification (which would split and space words differently in every page)."""
    env = {**os.environ, "MANWIDTH": MAN_WIDTH, "MAN_KEEP_FORMATTING": "",
           "LC_ALL": "C.UTF-8"}
    try:
        out = subprocess.run(["man", "--nj", "--nh", "-l", str(path)], capture_output=True,
                             text=True, errors="replace", env=env, timeout=60).stdout
    except subprocess.TimeoutExpired:
        return ""
    return re.sub(r".\x08", "", out)           # overstrike, should a pager setting leak in


def split_man_page(rendered: str) -> tuple[str, str]:
    """(the NAME section's text, the rest as Markdown): the running header and footer
    dropped, each section title (a line at column 0) made a `##` heading."""
    lines = rendered.rstrip().splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if len(lines) < 3:
        return "", ""
    lines = lines[1:-1]                     # "LS(1)  User Commands  LS(1)" and the footer
    name, body, section = [], [], None
    for line in lines:
        if line and not line[0].isspace():
            section = line.strip()
            if section.upper() != "NAME":
                body.append(f"\n## {section}\n")
            continue
        if section is not None and section.upper() == "NAME":
            name.append(line.strip())
        else:
            body.append(line.rstrip())
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(body)).strip()
    return " ".join(" ".join(name).split()), text


def name_description(name_text: str) -> str:
    """`ls - list directory contents` → `list directory contents`."""
    for dash in (" - ", " \u2010 ", " \u2013 ", " \u2014 "):
        if dash in name_text:
            return name_text.split(dash, 1)[1].strip()
    return ""


def man_candidates(sections, min_bytes: int, max_bytes: int) -> list[Path]:
    files = []
    for section in sections:
        folder = MAN_ROOT / section
        if folder.is_dir():
            files += [p for p in sorted(folder.iterdir())
                      if p.is_file() and min_bytes <= p.stat().st_size <= max_bytes]
    return [p for p in files if not is_link(p)]


def shared_descriptions(descriptions: dict[str, set[str]]) -> set[str]:
    """Descriptions (normalized) that more than one page gives."""
    seen: dict[str, int] = {}
    for found in descriptions.values():
        for d in {normalized(x) for x in found}:
            seen[d] = seen.get(d, 0) + 1
    return {d for d, n in seen.items() if n > 1}


def build_man_corpus(name: str, out: Path, docs: int, seed: int, progress=None) -> Corpus:
    spec = MAN_CORPORA[name]
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(name, spec["about"], folder, 0)
    # Uniqueness is judged against every English page in sections 1-8, not only the pool.
    every = sorted(p for s in range(1, 9) if (MAN_ROOT / f"man{s}").is_dir()
                   for p in (MAN_ROOT / f"man{s}").iterdir() if p.is_file())
    known = whatis(every)
    shared = shared_descriptions(known)
    pool = [p for p in man_candidates(spec["sections"], spec["min_bytes"], spec["max_bytes"])
            if len(known.get(str(p), ())) == 1]
    pool = [p for p in pool if usable_description(next(iter(known[str(p)])))
            and normalized(next(iter(known[str(p)]))) not in shared]
    random.Random(f"{seed}:{name}").shuffle(pool)
    corpus.notes.append(f"{len(pool)} pages with a unique, usable description in "
                        f"{'+'.join(spec['sections'])} between {spec['min_bytes']} and "
                        f"{spec['max_bytes']} bytes compressed; {docs} sampled")
    titles: set[str] = set()
    with ThreadPoolExecutor(max_workers=4) as pool_exec:
        # rendered a few at a time in sampled order; pages that fail are replaced by the next
        position = 0
        while corpus.documents < docs and position < len(pool):
            batch = pool[position:position + max(4, docs - corpus.documents)]
            position += len(batch)
            for path, rendered in zip(batch, pool_exec.map(render_man, batch)):
                if corpus.documents >= docs:
                    break
                name_text, body = split_man_page(rendered)
                description = name_description(name_text)
                title = page_title(path)
                if (not usable_description(description) or len(body) < MIN_ANSWER_CHARS
                        or normalized(description) in shared or title in titles):
                    continue
                titles.add(title)
                filename = safe_filename(title.replace("(", ".").rstrip(")")) + ".md"
                write_document(folder, filename, title, body)
                corpus.documents += 1
                corpus.queries.append(Query(f"{name}-{corpus.documents}", description,
                                            [filename]))
                if progress and corpus.documents % 25 == 0:
                    progress(f"{name}: {corpus.documents}/{docs} pages rendered")
    return corpus


# ---- FAQ files ---------------------------------------------------------------------------

@dataclass
class FaqEntry:
    number: str                 # "4", "3.43.5.2", or the entry's position when unnumbered
    questions: list[str]
    answer: str


NUMBERED = re.compile(r" {0,2}(\d{1,2}(?:\.\d{1,2})*)\.?[ \t]+(\S.*)$")
SEPARATOR = re.compile(r"\s*([-=_~*#+])\1{5,}\s*$")


def _tidy(lines: list[str]) -> str:
    """An answer's lines: separators dropped, common indentation removed, and a `#` at the
    start of a line moved off column 0 so that only the title is a Markdown heading."""
    kept = [line.rstrip().expandtabs(8) for line in lines if not SEPARATOR.match(line)]
    text = textwrap.dedent("\n".join(kept)).strip()
    text = re.sub(r"(?m)^#", " #", text)
    return re.sub(r"\n{3,}", "\n\n", text)


def _question(lines: list[str], start: int, first: str) -> tuple[str, int]:
    """A question from its first line on: continuation lines up to a blank line or up to
    the one ending with `?`, at most three lines. Returns (question, next line index)."""
    parts, i = [first.strip()], start + 1
    while not parts[-1].endswith("?") and i < len(lines) and lines[i].strip() \
            and len(parts) < 3 and not NUMBERED.match(lines[i]):
        parts.append(lines[i].strip())
        i += 1
    return " ".join(" ".join(parts).split()), i


def parse_numbered(text: str) -> list[FaqEntry]:
    """Entries headed `N.` / `N.N` / `N.N.N ...` at (nearly) column 0. A table of contents
    comes first: a number met again keeps its last entry, and a run of numbered lines is
    never an answer (it would hold the questions the queries ask)."""
    lines = text.splitlines()
    # a heading follows a blank line or a separator: a wrapped line of an answer that
    # happens to start with "3.79.1" does not
    heads = [(i, m) for i, line in enumerate(lines) if (m := NUMBERED.match(line))
             and (i == 0 or not lines[i - 1].strip() or SEPARATOR.match(lines[i - 1]))]
    by_number: dict[str, FaqEntry] = {}
    for n, (i, match) in enumerate(heads):
        question, body_start = _question(lines, i, match.group(2))
        stop = heads[n + 1][0] if n + 1 < len(heads) else len(lines)
        body = lines[body_start:stop]
        filled = [line for line in body if line.strip()]
        if filled and sum(bool(NUMBERED.match(line)) for line in filled) * 2 >= len(filled):
            continue            # a run of numbered lines is a table of contents, not an answer
        by_number[match.group(1)] = FaqEntry(match.group(1), [question], _tidy(body))
    return list(by_number.values())


def parse_qa(text: str) -> list[FaqEntry]:
    """`Q:`/`Q.` questions and `A:`/`A.` answers; several questions in a row share the
    answer after them."""
    entries, questions, answer, state = [], [], [], None
    lines = text.splitlines()

    def close():
        if questions and answer:
            entries.append(FaqEntry(str(len(entries) + 1), list(questions), _tidy(answer)))

    i = 0
    while i < len(lines):
        line = lines[i]
        mark = re.match(r"([QA])[:.]\s+(.*)$", line)
        if mark and mark.group(1) == "Q":
            if state == "A":
                close()
                questions, answer = [], []
            q, i = _question(lines, i, mark.group(2))
            questions.append(q)
            state = "Q"
            continue
        if mark:
            state = "A"
            answer = [" " * (len(line) - len(mark.group(2))) + mark.group(2)]
        elif state == "A":
            if re.match(r"\*\s", line):
                close()         # a section line ("* Other questions:") ends the answer
                questions, answer, state = [], [], None
            else:
                answer.append(line)
        i += 1
    if state == "A":
        close()
    return entries


def _entries_at(lines: list[str], heads: list[int], skip: int) -> list[FaqEntry]:
    """One entry per question line in `heads`: its answer starts `skip` lines below it
    (past an underline, if any) and runs to the next question."""
    entries = []
    for n, i in enumerate(heads):
        stop = heads[n + 1] if n + 1 < len(heads) else len(lines)
        entries.append(FaqEntry(str(n + 1), [" ".join(lines[i].split())],
                                _tidy(lines[i + skip:stop])))
    return entries


def parse_setext(text: str) -> list[FaqEntry]:
    """Questions underlined with `===`; the answer runs to the next one."""
    lines = text.splitlines()
    heads = [i for i in range(len(lines) - 1) if lines[i].strip()
             and re.fullmatch(r"=+", lines[i + 1].strip() or "x")]
    return _entries_at(lines, heads, skip=2)


def parse_outdented(text: str) -> list[FaqEntry]:
    """Questions at column 0, answers indented under them."""
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if line.strip() and not line[0].isspace()]
    return _entries_at(lines, heads, skip=1)


def parse_stars(text: str) -> list[FaqEntry]:
    """Entries between `********` lines: the first paragraph states the problem, the rest
    answers it. The text before the first line of stars is a preamble."""
    blocks = re.split(r"(?m)^\*{4,}\s*$", text)[1:]
    entries = []
    for block in blocks:
        paragraphs = re.split(r"\n\s*\n", block.strip(), maxsplit=1)
        if len(paragraphs) == 2:
            entries.append(FaqEntry(str(len(entries) + 1), [" ".join(paragraphs[0].split())],
                                    _tidy(paragraphs[1].splitlines())))
    return entries


PARSERS = {"numbered": parse_numbered, "qa": parse_qa, "setext": parse_setext,
           "outdented": parse_outdented, "stars": parse_stars}


def faq_entries(sources=FAQ_SOURCES, root: Path = DOC_ROOT):
    """(label, entry, needs '?') for every entry of every FAQ file present."""
    for rel, style, label, ask in sources:
        path = root / rel
        if path.is_file():
            for entry in PARSERS[style](read_maybe_gzip(path)):
                yield label, entry, ask


def build_faq_corpus(out: Path, limit: int, seed: int, sources=FAQ_SOURCES,
                     root: Path = DOC_ROOT) -> Corpus:
    """Every entry with an answer becomes a document (those whose question is dropped stay
    as distractors); up to `limit` usable questions, sampled with the seed, are queries."""
    folder = out / "faq"
    folder.mkdir(parents=True, exist_ok=True)
    corpus = Corpus("faq", "FAQ files under /usr/share/doc: query = question, relevant = "
                    "its answer", folder, 0)
    entries = [(label, e, ask) for label, e, ask in faq_entries(sources, root)
               if len(e.answer) >= MIN_ANSWER_CHARS]
    counts: dict[str, int] = {}
    for _, e, _ in entries:
        for q in {normalized(q) for q in e.questions}:
            counts[q] = counts.get(q, 0) + 1
    candidates, used = [], set()
    for label, entry, ask in entries:
        filename = safe_filename(f"{label}-faq-{entry.number}") + ".md"
        while filename in used:
            filename = filename[:-3] + "_.md"
        used.add(filename)
        write_document(folder, filename, f"{label} FAQ {entry.number}", entry.answer)
        corpus.documents += 1
        for q in entry.questions:
            if (len(words(q)) >= MIN_WORDS and counts[normalized(q)] == 1
                    and (not ask or "?" in q)):
                candidates.append((q, filename, label))
    sources_seen = sorted({label for label, _, _ in entries})
    corpus.notes.append(f"{corpus.documents} entries from {len(sources_seen)} FAQ files "
                        f"({', '.join(sources_seen)}); {len(candidates)} usable questions")
    corpus.queries = [Query(f"faq-{n + 1}", q, [f])
                      for n, (q, f) in enumerate(sample_questions(candidates, limit, seed))]
    return corpus


def sample_questions(candidates: list[tuple[str, str, str]], limit: int, seed: int):
    """At most `limit` (question, file) pairs, no FAQ giving more than half of them (lsof's
    alone has ~300), sampled with the seed and kept in their original order."""
    rng = random.Random(f"{seed}:faq")
    cap = max(1, limit // 2)
    chosen: list[int] = []
    for label in sorted({c[2] for c in candidates}):
        mine = [i for i, c in enumerate(candidates) if c[2] == label]
        chosen += mine if len(mine) <= cap else rng.sample(mine, cap)
    if len(chosen) > limit:
        chosen = rng.sample(sorted(chosen), limit)
    return [candidates[i][:2] for i in sorted(chosen)]


# ---- all of them -------------------------------------------------------------------------

def default_size(name: str) -> int:
    return FAQ_LIMIT if name == "faq" else MAN_CORPORA[name]["docs"]


def build_corpora(out: Path, names=CORPUS_NAMES, sizes: dict | None = None, seed: int = 0,
                  progress=None) -> list[Corpus]:
    """Build (or reuse, when `out` holds the same build) each named corpus under `out`.
    `sizes` gives pages (man corpora) or questions (faq) per corpus."""
    sizes = sizes or {}
    corpora = []
    for name in names:
        size = int(sizes.get(name, default_size(name)))
        stamp = out / f"{name}.json"
        key = {"name": name, "size": size, "seed": seed, "version": 2,
               "spec": MAN_CORPORA.get(name) or FAQ_SOURCES}
        key = json.loads(json.dumps(key))          # as it reads back: tuples become lists
        if stamp.is_file():
            saved = json.loads(stamp.read_text())
            if saved.get("key") == key:
                corpora.append(Corpus.from_dict(saved["corpus"]))
                continue
        if (out / name).exists():
            shutil.rmtree(out / name)
        if progress:
            progress(f"building corpus {name} ({size} {'questions' if name == 'faq' else 'pages'})")
        corpus = (build_faq_corpus(out, size, seed) if name == "faq"
                  else build_man_corpus(name, out, size, seed, progress))
        stamp.write_text(json.dumps({"key": key, "corpus": corpus.to_dict()}, indent=1))
        corpora.append(corpus)
    return corpora
