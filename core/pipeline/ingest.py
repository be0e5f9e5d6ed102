"""`ragloop index` and `remove`: files → loaders → filters → chunker → embedder → store.

Unchanged files (same content hash) are skipped before anything is loaded. Work is done in
batches; each batch's chunk rows, vectors and index record are written together, so Ctrl-C
between batches loses only the batch in flight and a re-run continues from there. A huge
document is chunked lazily and committed in pieces; its row is marked partial until the
last one is in. The chunker settings are the index's: recorded, reused, and when new ones
are named every document is marked stale and re-chunked.

With `--filter`, every changed file is loaded first and the chain runs over all of them
at once (dedup must compare them with each other and with the documents already
indexed); only what it keeps is chunked and embedded. A file it rejects is reported as
skipped, and an older indexed version of that file is removed.
"""

from __future__ import annotations

import dataclasses
import errno
import fnmatch
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ragloop.core import registry
from ragloop.core.components import SkipFile
from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.core.pipeline import filtering
from ragloop.core.pipeline.vector_index import (
    INDEX_NAME,
    VectorIndex,
    code_running_options,
    embed_text,
)
from ragloop.core.workspace import utcnow, write_transaction

DEFAULT_CHUNKER = "tokens"
BATCH_CHUNKS = 256
# A document with more chunks is committed in pieces of this many, so that Ctrl-C keeps
# what was done and a re-run continues from there; past BIG_DOCUMENT_CHARS the command
# shows how far through the document it is.
DOC_PIECE_CHUNKS = 1024
BIG_DOCUMENT_CHARS = 1_000_000
# content_hash prefixes of a document not fully indexed as the settings say: some of its
# pieces committed, or chunked with settings the index no longer has. Neither is unchanged.
PARTIAL = "partial:"
STALE = "stale:"
CHUNKING_SETTING = f"index.{INDEX_NAME}.chunker"


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
    rechunked: str | None = None         # how the chunker settings changed, when they did
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


def _recorded_chunking(ws) -> dict | None:
    try:
        found = ws.get_setting(CHUNKING_SETTING)
    except ValueError:
        return None
    if (isinstance(found, dict) and isinstance(found.get("name"), str)
            and isinstance(found.get("options"), dict)):
        return found
    return None


def _chunker_for(ws, name: str | None, given):
    """(chunker, its settings, how they differ from the index's or None).

    Chunking belongs to the index, like its embedder: without --chunker or chunker
    options the recorded settings are used (an index that records none was chunked with
    the defaults). Options given apply over the recorded ones of the same chunker, and if
    the result differs while documents are indexed, every document is re-chunked."""
    recorded = _recorded_chunking(ws)
    effective = recorded or {"name": DEFAULT_CHUNKER, "options": {}}
    chosen = name or effective["name"]
    cls = registry.get_chunker(chosen)
    base = {}
    if chosen == effective["name"] and dataclasses.is_dataclass(cls.Config):
        keep = {f.name for f in dataclasses.fields(cls.Config)} - code_running_options(cls.Config)
        base = {k: v for k, v in effective["options"].items() if k in keep}
    config = build_config(cls.Config, given, chosen, **base)
    options = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {}
    options = {k: v for k, v in json.loads(json.dumps(options, default=str)).items()
               if k not in code_running_options(cls.Config)}
    chunking = {"name": chosen, "options": options}
    change = None
    if recorded != chunking and ws.db["documents"].count:
        before = recorded or {"name": DEFAULT_CHUNKER, "options": _defaults(effective["name"])}
        change = _describe_change(before, chunking) if (name or given) else None
    return cls(config, workspace=ws), chunking, recorded, change


def _defaults(name: str) -> dict:
    cls = registry.get_chunker(name)
    config = cls.Config()
    return json.loads(json.dumps(dataclasses.asdict(config) if dataclasses.is_dataclass(config)
                                 else {}, default=str))


def _describe_change(before: dict, after: dict) -> str | None:
    if before["name"] != after["name"]:
        return f"chunker {before['name']} to {after['name']}"
    old, new = before["options"], after["options"]
    diffs = [f"{k} {old.get(k)} to {new.get(k)}" for k in sorted(set(old) | set(new))
             if old.get(k) != new.get(k)]
    return ", ".join(diffs) or None


class _Doc:
    """A document on its way into the index. A huge one is committed in pieces: its row
    holds PARTIAL + its hash until the last piece is in, so a re-run never takes it for
    unchanged, and continues after the chunks already committed."""

    def __init__(self, row: dict, digest: str, old_id, doc_id=None, seq: int = 0,
                 replaces: bool = False):
        self.row, self.digest, self.old_id = row, digest, old_id
        self.doc_id, self.seq, self.replaces = doc_id, seq, replaces


class _Restart(Exception):
    """Resuming a partly committed document found other chunks than those committed."""


class Indexer:
    def __init__(self, ws, *, chunker: str | None = None, chunker_options=(), filters=(),
                 filter_options=(), embedder=None, embedder_options=(), store=None,
                 store_options=()):
        self.ws = ws
        self.db = ws.db
        self.index = VectorIndex(ws, embedder, embedder_options, store, store_options)
        self.chunker, self.chunking, self._recorded_chunking, self._chunking_change = (
            _chunker_for(ws, chunker, chunker_options))
        # Filters need every new document at once (dedup compares them), so with a chain
        # the files are loaded first and chunked only after the chain has run, in flush().
        self.filters = filtering.build_chain(ws, filters, "documents", filter_options)
        self._pending: list[tuple] = []          # (path, digest, old, loader, document)
        self.loaders = loaders_by_extension(ws)
        self.report = IndexReport()
        # Named explicitly, an embedder is checked against the index at once; otherwise only
        # when something needs embedding, so an unchanged re-index never loads the model.
        self._explicit_embedder = bool(embedder or embedder_options)
        self._batch: list[tuple[_Doc, list, bool]] = []      # (document, chunks, last piece)
        self._batch_chunks = 0

    # -- the pieces a command drives, so it can show progress between them --------------

    def prepare(self, repair: bool = False, progress=None, prune_roots=()) -> None:
        """Rebuild on --repair, else mend an index left out of step by an interrupted run;
        then, when the chunker settings given differ from the index's, mark every document
        for re-chunking (recorded with the settings, so an interrupted run still finishes)."""
        if repair:
            self.report.reconciled = self.index.rebuild(progress)
        else:
            if self._explicit_embedder:
                self.index.check_embedder()
            if self.index.problem():
                self.report.reconciled = self.index.reconcile(progress)
        if self.chunking == self._recorded_chunking:
            return
        change = self._chunking_change
        if change:
            roots = [str(Path(r).expanduser().resolve()) for r in prune_roots]
            gone = [p for p in self.known() if not Path(p).is_file()
                    and not any(_under(p, r) for r in roots)]
            if gone:
                raise RagloopError(
                    f"cannot re-chunk the index for the new chunker settings ({change}): "
                    f"{len(gone)} indexed file(s) are gone, e.g. {gone[0]}; drop them with "
                    f"`ragloop remove PATH` (or index --prune) first")
        with write_transaction(self.db):
            if change:
                self.db.execute(
                    f"update documents set content_hash = '{STALE}' || replace(content_hash, "
                    f"'{PARTIAL}', '') where content_hash not like '{STALE}%'")
            self.ws.set_setting(CHUNKING_SETTING, self.chunking)
        self._recorded_chunking = self.chunking
        self.report.rechunked = change

    def known(self) -> dict[str, tuple[int, str]]:
        return {r[0]: (r[1], r[2]) for r in self.db.execute(
            "select path, id, content_hash from documents")}

    def unfinished(self, seen, prune_roots=()) -> list[Path]:
        """Indexed documents not yet (re)chunked as they should be and not among `seen`: a
        huge document cut off mid-way, or one left by an interrupted re-chunk. Files that
        are gone and that --prune will drop are left to it."""
        roots = [str(Path(r).expanduser().resolve()) for r in prune_roots]
        return [Path(p) for p, (_, digest) in sorted(self.known().items())
                if p not in seen and digest.startswith((PARTIAL, STALE))
                and (Path(p).exists() or not any(_under(p, r) for r in roots))]

    def add_file(self, path: Path, known: dict, progress=None, document_progress=None) -> None:
        """Index one file. `document_progress(path, done_chars, total_chars)` is called as a
        document of more than BIG_DOCUMENT_CHARS is chunked, embedded and committed."""
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
        self._add_document(path, digest, old, loader, document, progress, document_progress)

    def _add_document(self, path: Path, digest, old, loader, document, progress=None,
                      document_progress=None) -> None:
        info = path.stat()
        row = {"path": str(path), "content_hash": digest, "size": info.st_size,
               "mtime": info.st_mtime, "loader": loader.name,
               "metadata_json": json.dumps(document.metadata, default=str),
               "warnings_json": json.dumps(document.warnings), "chunk_count": 0,
               "indexed_at": utcnow()}
        committed = None
        if old and old[1] == PARTIAL + digest:
            committed = [tuple(r) for r in self.db.execute(
                "select start_char, end_char from chunks where document_id = ? order by seq",
                [old[0]])]
        try:
            self._chunk_and_queue(row, digest, old, committed, document, progress,
                                  document_progress)
        except _Restart:        # other settings cut it differently: replace it whole
            self._chunk_and_queue(row, digest, old, None, document, progress,
                                  document_progress)

    def _chunk_and_queue(self, row, digest, old, committed, document, progress,
                         document_progress) -> None:
        if committed is not None:       # continue after the pieces already committed
            doc = _Doc(row, digest, None, doc_id=old[0], seq=len(committed))
        else:
            doc = _Doc(row, digest, old[0] if old else None,
                       replaces=bool(old) and not old[1].startswith(PARTIAL))
        total = len(document.text)
        report = document_progress if document_progress and total > BIG_DOCUMENT_CHARS else None
        produce = getattr(self.chunker, "iter_chunks", None) or self.chunker.chunk
        piece, skip, produced = [], committed or [], 0
        for chunk in produce(document, self.index.embedder.count_tokens):
            produced += 1
            if report:          # the end is reported once the last piece is committed
                report(row["path"], min(chunk.end_char, total - 1), total)
            if produced <= len(skip):
                if (chunk.start_char, chunk.end_char) != skip[produced - 1]:
                    raise _Restart
                continue
            piece.append(chunk)
            if len(piece) >= DOC_PIECE_CHUNKS:
                self._queue(doc, piece, last=False)
                piece = []
                self.flush(progress)
        if produced < len(skip):
            raise _Restart
        self._queue(doc, piece, last=True)
        if self._batch_chunks >= BATCH_CHUNKS or doc.doc_id is not None:
            self.flush(progress)        # a document begun in pieces is finished at once
        if report:
            report(row["path"], total, total)

    def _queue(self, doc: _Doc, chunks: list, last: bool) -> None:
        self._batch.append((doc, chunks, last))
        self._batch_chunks += len(chunks)

    def flush(self, progress=None) -> None:
        """Embed the batch, then write rows, vectors and the index record together."""
        if self._pending:
            self._run_filters(progress)
        if not self._batch:
            return
        texts = [embed_text(c.heading, c.text) for _, chunks, _ in self._batch for c in chunks]
        vectors = self.index.encode(texts, progress=progress) if texts else None
        # A store shared by several workspaces numbers the chunks, so ids never collide
        # between them; otherwise SQLite does.
        given = iter(self.index.store.new_ids(len(texts)) or ()) if texts else iter(())
        with write_transaction(self.db):
            stale_ids, new_ids = [], []
            for doc, chunks, last in self._batch:
                if doc.doc_id is None:
                    if doc.old_id is not None:
                        stale_ids += [r[0] for r in self.db.execute(
                            "select id from chunks where document_id = ?", [doc.old_id])]
                        self.db.execute("delete from documents where id = ?", [doc.old_id])
                    row = {**doc.row, "content_hash": doc.digest if last else PARTIAL + doc.digest}
                    doc.doc_id = self.db["documents"].insert(row).last_pk
                for c in chunks:
                    cur = self.db.execute(
                        "insert into chunks (id, document_id, seq, text, heading, start_char, "
                        "end_char, start_line, end_line) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [next(given, None), doc.doc_id, doc.seq, c.text, c.heading,
                         c.start_char, c.end_char, c.start_line, c.end_line])
                    new_ids.append(cur.lastrowid)
                    doc.seq += 1
                done = {"chunk_count": doc.seq}
                if last:
                    done.update(content_hash=doc.digest, indexed_at=utcnow())
                    (self.report.updated if doc.replaces else self.report.added).append(
                        doc.row["path"])
                self.db["documents"].update(doc.doc_id, done)
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
        with write_transaction(self.db):
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
