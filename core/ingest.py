"""`ragloop index` and `remove`: files → loaders → filters → chunker → embedder → store.

Unchanged files (same content hash) are skipped before anything is loaded. Work is done in
batches; each batch's chunk rows, vectors and index record are written together, so Ctrl-C
between batches loses only the batch in flight and a re-run continues from there.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import registry
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


def discover(paths, glob: str | None = None) -> list[Path]:
    """Every file under `paths` (recursively, hidden ones skipped), optionally by glob."""
    files = []
    for raw in paths:
        root = Path(raw).expanduser()
        if not root.exists():
            raise RagloopError(f"no such file or folder: {raw}")
        if root.is_file():
            files.append(root.resolve())
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath, name)
                rel = path.relative_to(root).as_posix()
                if glob and not (fnmatch.fnmatch(rel, glob) or fnmatch.fnmatch(name, glob)):
                    continue
                files.append(path.resolve())
    return sorted(set(files))


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def loaders_by_extension(ws) -> dict[str, object]:
    table = {}
    for entry in registry.entries("loader").values():
        for ext in entry.cls.extensions:
            table.setdefault(ext.lower(), entry.cls(workspace=ws))
    return table


def build_filters(names, ws):
    chain = []
    for name in names:
        cls = registry.get_filter(name)
        if "documents" not in cls.applies_to:
            raise RagloopError(f"filter {name!r} does not apply to documents "
                               f"(it applies to {', '.join(cls.applies_to)})")
        chain.append(cls(workspace=ws))
    return chain


class Indexer:
    def __init__(self, ws, *, chunker: str = DEFAULT_CHUNKER, chunker_options=(), filters=(),
                 embedder=None, embedder_options=(), store=None, store_options=()):
        self.ws = ws
        self.db = ws.db
        self.index = VectorIndex(ws, embedder, embedder_options, store, store_options)
        cls = registry.get_chunker(chunker)
        self.chunker = cls(build_config(cls.Config, chunker_options, chunker), workspace=ws)
        self.filters = build_filters(filters, ws)
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
        for f in self.filters:
            result = f.apply([{"path": key, "text": document.text, "metadata": document.metadata}])
            if not result.kept:
                self.report.skipped.append((key, f"filter {f.name}: {result.removed[0][1]}"))
                return
            document.text = result.kept[0]["text"]
        chunks = self.chunker.chunk(document, self.index.embedder.count_tokens)
        stat = path.stat()
        row = {"path": key, "content_hash": digest, "size": stat.st_size, "mtime": stat.st_mtime,
               "loader": loader.name, "metadata_json": json.dumps(document.metadata, default=str),
               "warnings_json": json.dumps(document.warnings), "chunk_count": len(chunks),
               "indexed_at": utcnow()}
        self._batch.append((row, chunks, old[0] if old else None))
        self._batch_chunks += len(chunks)
        if self._batch_chunks >= BATCH_CHUNKS:
            self.flush(progress)

    def flush(self, progress=None) -> None:
        """Embed the batch, then write rows, vectors and the index record together."""
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
