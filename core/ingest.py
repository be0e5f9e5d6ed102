"""`ragloop index` and `remove`: files → loaders → filters → chunker → embedder → store.

Unchanged files (same content hash) are skipped before anything is loaded. Work is done in
batches; each batch's chunk rows, vectors and index record are written together, so Ctrl-C
between batches loses only the batch in flight and a re-run continues from there.

With `--filter`, every changed file is loaded first and the chain runs over all of them
at once (dedup must compare them with each other and with the documents already
indexed); only what it keeps is chunked and embedded. A file it rejects is reported as
skipped, and an older indexed version of that file is removed.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from . import filtering, registry
from .config import build_config
from .errors import RagloopError
from .kinds import SkipFile
from .vector_index import VectorIndex, deferred_interrupt, embed_text
from .workspace import utcnow

DEFAULT_CHUNKER = "tokens"
BATCH_CHUNKS = 256


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)    # (path, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    chunks_embedded: int = 0
    reconciled: dict | None = None
    filters: dict | None = None          # the filter chain's report, when one ran


def discover(paths, glob: str | None = None, skipped: list | None = None) -> list[Path]:
    """Every file under `paths` (recursively, hidden ones skipped), optionally by glob.

    The walk keeps its own stack, so no folder depth exhausts Python's recursion limit.
    What cannot be indexed (a symlink loop, an unreadable folder) is left out with a reason
    appended to `skipped` as (path, reason); symlinked folders are not followed. A path
    given here that is not a regular file or folder (a FIFO, socket or device) is refused."""
    files = []
    for raw in paths:
        root = Path(raw).expanduser()
        mode = _stat_root(root, raw)
        if stat.S_ISREG(mode):
            files.append(root.resolve())
            continue
        if not stat.S_ISDIR(mode):
            raise RagloopError(f"{raw} is {_kind(mode)}, not a file or folder; only regular "
                               f"files are indexed")
        for path in _walk(root, skipped):
            rel = path.relative_to(root).as_posix()
            if glob and not (fnmatch.fnmatch(rel, glob) or fnmatch.fnmatch(path.name, glob)):
                continue
            try:
                files.append(path.resolve())
            except (RuntimeError, OSError) as exc:     # 3.11 raises RuntimeError on a loop
                if skipped is not None:
                    skipped.append((str(path), _resolve_problem(exc)))
    return sorted(set(files))


def _stat_root(root: Path, raw) -> int:
    try:
        return root.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RagloopError(f"{raw} is a symlink loop; give a file or folder") from None
        if isinstance(exc, FileNotFoundError):
            raise RagloopError(f"no such file or folder: {raw}") from None
        raise RagloopError(f"cannot read {raw} ({exc.strerror})") from None


def _walk(root: Path, skipped):
    """Non-folder entries under `root`, depth first, hidden names left out."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if skipped is not None:
                skipped.append((str(folder), f"cannot read folder ({exc.strerror})"))
            continue
        folders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()           # follows symlinks, as os.walk does
                real_dir = is_dir and entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = real_dir = False
            if real_dir:
                folders.append(Path(entry.path))
            elif not is_dir:
                yield Path(entry.path)
        stack += reversed(folders)


def _resolve_problem(exc) -> str:
    if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP:
        return "symlink loop"
    return f"cannot resolve ({getattr(exc, 'strerror', None) or exc})"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    # O_NONBLOCK: a file swapped for a FIFO after it was checked must not hang the run
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def loaders_by_extension(ws) -> dict[str, object]:
    table = {}
    for entry in registry.entries("loader").values():
        for ext in entry.cls.extensions:
            table.setdefault(ext.lower(), entry.cls(workspace=ws))
    return table


def indexed_documents(ws, exclude=(), loaders=None) -> list[dict]:
    """Every indexed document as a filter record ({"path", "text", "metadata"}), in path
    order, with the text the index holds: chunks laid at their offsets (overlaps once),
    section titles put back where they start, since chunk texts leave heading lines out.

    With `loaders` (extension -> loader), a file still on disk unchanged is read again
    instead, so its text is exactly what a new file's would be when they are compared."""
    exclude = set(exclude)
    docs = {r[0]: r[1:] for r in ws.db.execute(
        "select id, path, metadata_json, content_hash from documents order by path")
        if r[1] not in exclude}
    records = []
    for doc_id, (path, meta, digest) in docs.items():
        text = _reload(Path(path), digest, loaders) if loaders else None
        if text is None:
            text = _rebuild(ws.db.execute("select text, heading, start_char, end_char from chunks "
                                          "where document_id = ? order by seq", [doc_id]))
        records.append({"path": path, "text": text, "metadata": json.loads(meta or "{}")})
    return records


def _reload(path: Path, digest: str, loaders) -> str | None:
    loader = loaders.get(path.suffix.lower())
    try:
        if loader is None or file_hash(path) != digest:
            return None
        return loader.load(path).text
    except (OSError, SkipFile):
        return None


def _rebuild(chunks) -> str:
    parts, end, path = [], 0, []
    for text, heading, start, stop in chunks:
        titles = heading.split(" > ") if heading else []
        same = 0
        while same < min(len(path), len(titles)) and path[same] == titles[same]:
            same += 1
        if titles[same:]:
            parts.append(("\n" if parts else "") + "\n".join(titles[same:]) + "\n")
            end = max(end, start)
        elif parts and start > end:
            parts.append("\n")
        path = titles
        parts.append(text[end - start:] if start < end else text)
        end = max(end, stop)
    return "".join(parts)


class Indexer:
    def __init__(self, ws, *, chunker: str = DEFAULT_CHUNKER, chunker_options=(), filters=(),
                 filter_options=(), embedder=None, embedder_options=(), store=None,
                 store_options=()):
        self.ws = ws
        self.db = ws.db
        self.index = VectorIndex(ws, embedder, embedder_options, store, store_options)
        cls = registry.get_chunker(chunker)
        self.chunker = cls(build_config(cls.Config, chunker_options, chunker), workspace=ws)
        # Filters need every new document at once (dedup compares them), so with a chain
        # the files are loaded first and chunked only after the chain has run, in flush().
        self.filters = filtering.build_chain(ws, filters, "documents", filter_options)
        self._pending: list[tuple] = []          # (path, digest, old, loader, document)
        self.loaders = loaders_by_extension(ws)
        self.report = IndexReport()
        # Named explicitly, an embedder is checked against the index at once; otherwise only
        # when something needs embedding, so an unchanged re-index never loads the model.
        self._explicit_embedder = bool(embedder or embedder_options)
        self._batch: list[tuple[dict, list, int | None]] = []   # (doc row, chunks, old doc id)
        self._batch_chunks = 0

    # -- the pieces a command drives, so it can show progress between them --------------

    def prepare(self, repair: bool = False, progress=None) -> None:
        """Rebuild on --repair; otherwise mend an index left out of step by an interrupted run."""
        if repair:
            self.report.reconciled = self.index.rebuild(progress)
            return
        if self._explicit_embedder:
            self.index.check_embedder()
        if self.index.problem():
            self.report.reconciled = self.index.reconcile(progress)

    def known(self) -> dict[str, tuple[int, str]]:
        return {r[0]: (r[1], r[2]) for r in self.db.execute(
            "select path, id, content_hash from documents")}

    def add_file(self, path: Path, known: dict, progress=None) -> None:
        key = str(path)
        try:
            mode = os.stat(path).st_mode
            if not stat.S_ISREG(mode):
                # reading a FIFO would wait for a writer forever; only regular files are read
                self.report.skipped.append((key, f"{_kind(mode)}, not a regular file"))
                return
            digest = file_hash(path)
        except OSError as exc:
            self.report.skipped.append((key, f"cannot read ({exc.strerror})"))
            return
        old = known.get(key)
        if old and old[1] == digest:
            self.report.unchanged.append(key)
            return
        loader = self.loaders.get(path.suffix.lower())
        if loader is None:
            exts = ", ".join(sorted(e for e in self.loaders if e))
            self.report.skipped.append((key, f"no loader for {path.suffix or 'this file'} "
                                             f"(loaders read {exts})"))
            return
        try:
            document = loader.load(path)
        except SkipFile as exc:
            self.report.skipped.append((key, str(exc)))
            return
        except OSError as exc:
            self.report.skipped.append((key, f"cannot read ({exc.strerror})"))
            return
        self.report.warnings += [(key, w) for w in document.warnings]
        if not document.text.strip():
            self.report.skipped.append((key, "empty file"))
            return
        if self.filters:
            self._pending.append((path, digest, old, loader, document))
            return
        self._add_document(path, digest, old, loader, document, progress)

    def _add_document(self, path: Path, digest, old, loader, document, progress=None) -> None:
        key = str(path)
        chunks = self.chunker.chunk(document, self.index.embedder.count_tokens)
        info = path.stat()
        row = {"path": key, "content_hash": digest, "size": info.st_size, "mtime": info.st_mtime,
               "loader": loader.name, "metadata_json": json.dumps(document.metadata, default=str),
               "warnings_json": json.dumps(document.warnings), "chunk_count": len(chunks),
               "indexed_at": utcnow()}
        self._batch.append((row, chunks, old[0] if old else None))
        self._batch_chunks += len(chunks)
        if self._batch_chunks >= BATCH_CHUNKS:
            self.flush(progress)

    def flush(self, progress=None) -> None:
        """Embed the batch, then write rows, vectors and the index record together."""
        if self._pending:
            self._run_filters(progress)
        if not self._batch:
            return
        texts = [embed_text(c.heading, c.text) for _, chunks, _ in self._batch for c in chunks]
        vectors = self.index.encode(texts, progress=progress) if texts else None
        with deferred_interrupt(), self.db.atomic():
            stale_ids = []
            new_ids = []
            for row, chunks, old_id in self._batch:
                if old_id is not None:
                    stale_ids += [r[0] for r in self.db.execute(
                        "select id from chunks where document_id = ?", [old_id])]
                    self.db.execute("delete from documents where id = ?", [old_id])
                    self.report.updated.append(row["path"])
                else:
                    self.report.added.append(row["path"])
                doc_id = self.db["documents"].insert(row).last_pk
                for seq, c in enumerate(chunks):
                    cur = self.db.execute(
                        "insert into chunks (document_id, seq, text, heading, start_char, end_char,"
                        " start_line, end_line) values (?, ?, ?, ?, ?, ?, ?, ?)",
                        [doc_id, seq, c.text, c.heading, c.start_char, c.end_char,
                         c.start_line, c.end_line])
                    new_ids.append(cur.lastrowid)
            self.index.store.remove(stale_ids)
            if new_ids:
                self.index.store.add(new_ids, vectors)
            self.index.record()
        self.report.chunks_embedded += len(texts)
        self._batch, self._batch_chunks = [], 0

    def _run_filters(self, progress=None) -> None:
        """Run the chain over the loaded files, then chunk and batch what it kept. Dedup
        filters also see the indexed documents, except older versions of these files."""
        pending, self._pending = self._pending, []
        records = [{"path": str(p[0]), "text": p[4].text, "metadata": p[4].metadata}
                   for p in pending]
        new_paths = {r["path"] for r in records}
        others = [p for (p,) in self.db.execute("select path from documents") if p not in new_paths]
        context = ()
        if others and any(getattr(f, "compares", False) for f in self.filters):
            context = indexed_documents(self.ws, exclude=new_paths, loaders=self.loaders)
        # Removing every new file is normal when they repeat indexed ones (a re-run keeps
        # offering a skipped copy); it is an error only when the index would stay empty.
        kept, chain = filtering.run_chain(self.filters, records, "documents", context=context,
                                          allow_empty=bool(others))
        self.report.filters = chain.to_dict()
        self.report.warnings += [(f"filter {s.name}", n) for s in chain.steps for n in s.notes]
        why = {r["path"]: f"filter {name}: {reason}" for r, name, reason in chain.removed}
        kept_by_path = {r["path"]: r for r in kept}
        stale = []
        for path, digest, old, loader, document in pending:
            record = kept_by_path.get(str(path))
            if record is None:
                self.report.skipped.append((str(path), why.get(str(path), "filtered out")))
                if old:   # a changed file the chain now rejects must not stay as it was
                    stale.append(str(path))
                continue
            document.text = record["text"]
            self._add_document(path, digest, old, loader, document, progress)
        if stale:
            self.remove_documents(stale)

    def prune(self, roots, seen: set[str]) -> None:
        """Drop documents under `roots` whose files are gone."""
        resolved = [str(Path(r).expanduser().resolve()) for r in roots]
        gone = [path for path in self.known()
                if path not in seen and any(_under(path, r) for r in resolved)
                and not Path(path).exists()]
        if gone:
            self.remove_documents(gone)

    def remove_documents(self, paths: list[str]) -> None:
        with deferred_interrupt(), self.db.atomic():
            for path in paths:
                ids = [r[0] for r in self.db.execute(
                    "select c.id from chunks c join documents d on d.id = c.document_id "
                    "where d.path = ?", [path])]
                self.index.store.remove(ids)
                self.db.execute("delete from documents where path = ?", [path])
                self.report.removed.append(path)
            self.index.record()


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def documents_under(ws, raw_paths) -> list[str]:
    """Stored document paths equal to or inside each given path (which may no longer exist)."""
    stored = [r[0] for r in ws.db.execute("select path from documents")]
    found = []
    for raw in raw_paths:
        root = str(Path(raw).expanduser().resolve())
        matched = [p for p in stored if _under(p, root)]
        if not matched:
            raise RagloopError(f"no indexed document at or under {raw}; see `ragloop search` "
                               f"or `ragloop info` for what is indexed")
        found += matched
    return sorted(set(found))
