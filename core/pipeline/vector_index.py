"""The workspace's vector index: an embedder and a store, kept in step with the chunks table.

The database is the source of truth. After every change the store is saved (atomically) and
its vector count, checksum and file stamp are recorded in ``index_state`` in the same
transaction as the chunk rows. On open, a store file that disagrees (an interrupted run, a
file replaced by hand) is detected; ``reconcile`` removes vectors whose chunk is gone and
embeds chunks whose vector is missing, and ``rebuild`` re-embeds every chunk.
"""

from __future__ import annotations

import dataclasses
import json
import os

from ragloop.core import registry
from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.core.workspace import utcnow, write_transaction

DEFAULT_EMBEDDER = "sentence-transformers"
DEFAULT_STORE = "faiss"
INDEX_NAME = "default"
# For commands that build the index's embedder without taking -o (ask, rate, eval):
# `RAGLOOP_EMBEDDER_TRUST_REMOTE_CODE=1 ragloop ask ...` sets its code-running options.
TRUST_ENV = "RAGLOOP_EMBEDDER_TRUST_REMOTE_CODE"


def code_running_options(config_cls) -> set[str]:
    """Options that make a plugin run code from outside ragloop: fields declared with
    metadata {"runs_code": True}, and any field named trust_remote_code whatever it says.
    They are never saved in the workspace nor read back from it (a workspace may come from
    someone else): they must be given on the command line each time."""
    if not dataclasses.is_dataclass(config_cls):
        return set()
    return {f.name for f in dataclasses.fields(config_cls)
            if f.metadata.get("runs_code") or f.name == "trust_remote_code"}


def safe_options(config_cls, pairs) -> list[str]:
    """`key=value` pairs without the code-running ones; anything that is not a list of
    strings (a damaged or hand-made database) counts as no options."""
    if not isinstance(pairs, list) or not all(isinstance(p, str) for p in pairs):
        return []
    risky = code_running_options(config_cls)
    return [p for p in pairs if p.partition("=")[0].strip() not in risky]


def recorded_options(text) -> list:
    try:
        return json.loads(text or "[]")
    except ValueError:
        return []


def merged_options(recorded, given) -> list[str]:
    """The recorded pairs, then the given ones: a key given on the command line wins."""
    given = list(given)
    keys = {p.partition("=")[0].strip() for p in given}
    return [p for p in recorded if p.partition("=")[0].strip() not in keys] + given


def _trusted_by_environment(config_cls) -> list[str]:
    if os.environ.get(TRUST_ENV, "").strip().lower() not in ("1", "true", "yes", "on"):
        return []
    hints = {f.name: f.type for f in dataclasses.fields(config_cls)}
    return [f"{name}=true" for name in sorted(code_running_options(config_cls))
            if hints.get(name) in (bool, "bool")]


def _store_named_by_kind(store, options):
    """`-o store.kind=pgvector` names the store plugin itself (the FAISS store's own `kind`
    values are flat, ivf and auto, never a store's name)."""
    options = list(options)
    for pair in options:
        key, _, value = pair.partition("=")
        if key.strip() == "kind" and value.strip() in registry.names("store"):
            if store and store != value.strip():
                raise RagloopError(f"--store {store} and -o store.kind={value.strip()} "
                                   f"disagree; give one")
            options.remove(pair)
            return value.strip(), options
    return store, options


def embed_text(heading: str, text: str) -> str:
    """What is embedded for a chunk: its heading path gives context the text may lack."""
    return f"{heading}\n\n{text}" if heading else text


class VectorIndex:
    def __init__(self, ws, embedder: str | None = None, embedder_options=(),
                 store: str | None = None, store_options=()):
        self.ws = ws
        self.db = ws.db
        self.state = self.db["index_state"].get(INDEX_NAME) if self.db["index_state"].count_where(
            "name = ?", [INDEX_NAME]) else None
        st = self.state or {}
        self.embedder_name = embedder or st.get("embedder") or DEFAULT_EMBEDDER
        store, store_options = _store_named_by_kind(store, store_options)
        self.store_name = store or st.get("store") or DEFAULT_STORE
        cls = registry.get_embedder(self.embedder_name)
        self.store_cls = registry.get_store(self.store_name)
        # Options given now override the recorded ones key by key (same plugin only); the
        # recorded ones never include code-running options, nor are such options read back.
        same = st and self.embedder_name == st.get("embedder")
        self.embedder_options = merged_options(
            safe_options(cls.Config, recorded_options(st.get("embedder_options_json")))
            if same else [], list(embedder_options) + _trusted_by_environment(cls.Config))
        same = st and self.store_name == st.get("store")
        self.store_options = merged_options(
            safe_options(self.store_cls.Config, recorded_options(st.get("store_options_json")))
            if same else [], store_options)
        self.embedder = cls(build_config(cls.Config, self.embedder_options, self.embedder_name),
                            workspace=ws)
        self._store = None
        self._rebuilding = False      # --repair: the current embedder replaces the recorded one

    @property
    def directory(self):
        return self.ws.indexes_dir / INDEX_NAME

    @property
    def store(self):
        if self._store is None:
            cls = self.store_cls
            config = build_config(cls.Config, self.store_options, self.store_name)
            # The recorded dimension spares loading the embedder when nothing needs embedding.
            dimension = (self.state["dimension"] if self.state and not self._rebuilding
                         else self.embedder.dimension)
            self._store = cls(config, self.directory, dimension, workspace=self.ws)
        return self._store

    @property
    def version(self) -> int:
        return (self.state or {}).get("version") or 0

    def chunk_count(self) -> int:
        return self.db["chunks"].count

    def check_embedder(self) -> None:
        if self._rebuilding:
            return
        if self.state and self.state["embedder_id"] != self.embedder.id:
            raise RagloopError(
                f"the index was built with embedder {self.state['embedder_id']}, not "
                f"{self.embedder.id}; run `ragloop index --repair` to re-embed with the new one")
        if not getattr(self, "_bound", False):
            self.store.bind(self.embedder.id)     # a shared store checks its own record
            self._bound = True

    def problem(self) -> str | None:
        """Why the store file disagrees with the database, or None when they agree."""
        if not self.state:
            return "no index yet" if self.chunk_count() else None
        path = self.store.path if hasattr(self.store, "path") else None
        if path is not None and path.exists():
            stat = path.stat()
            if (stat.st_size, stat.st_mtime_ns) != (self.state["file_size"], self.state["file_mtime_ns"]):
                if self.store.file_checksum() != self.state["checksum"]:
                    return "the vector file changed since the database last recorded it"
        elif path is not None and self.state["vector_count"]:
            return "the vector file is missing"
        if len(self.store) != self.state["vector_count"] or len(self.store) != self.chunk_count():
            return (f"the vector file holds {len(self.store)} vectors, the database "
                    f"{self.chunk_count()} chunks")
        return None

    def ensure_consistent(self) -> None:
        """For readers: refuse to search an index that disagrees with the database.
        Checked once per instance: a process that searches many times pays for it once."""
        if getattr(self, "_checked", False):
            return
        self.check_embedder()
        problem = self.problem()
        if problem and problem != "no index yet":
            raise RagloopError(f"the vector index is out of step with the database ({problem}); "
                               f"run `ragloop index --repair`")
        self._checked = True

    def encode(self, texts, progress=None):
        self.check_embedder()
        return self.embedder.encode(list(texts), progress=progress)

    def record(self) -> None:
        """Save the store and record what it holds; call inside the chunk rows' transaction."""
        checksum = self.store.save()
        stat = self.store.path.stat() if hasattr(self.store, "path") else None
        self.state = {
            "name": INDEX_NAME, "embedder": self.embedder_name,
            "embedder_options_json": json.dumps(
                safe_options(type(self.embedder).Config, self.embedder_options)),
            "embedder_id": self.embedder.id, "store": self.store_name,
            "store_options_json": json.dumps(self.store_cls.recorded_options(
                safe_options(self.store_cls.Config, self.store_options))),
            "dimension": self.embedder.dimension, "vector_count": len(self.store),
            "checksum": checksum, "file_size": stat.st_size if stat else 0,
            "file_mtime_ns": stat.st_mtime_ns if stat else 0,
            "version": self.version + 1, "updated_at": utcnow(),
        }
        self.db["index_state"].upsert(self.state, pk="name")

    def reconcile(self, progress=None) -> dict:
        """Bring the store in step with the chunks table, embedding only what is missing."""
        self.check_embedder()
        try:
            stored = set(self.store.ids().tolist())
        except RagloopError:            # a corrupt file: start from an empty store
            self._drop_store_file()
            stored = set()
        in_db = {row[0] for row in self.db.execute("select id from chunks")}
        stale, missing = sorted(stored - in_db), sorted(in_db - stored)
        self.store.remove(stale)
        self._embed_rows(missing, progress)
        with write_transaction(self.db):
            self.record()
        return {"stale_removed": len(stale), "missing_embedded": len(missing)}

    def rebuild(self, progress=None) -> dict:
        """Re-embed every chunk from its text in the database (`ragloop index --repair`)."""
        self._rebuilding = True
        self._drop_store_file()
        self.store.clear()
        self.store.bind(self.embedder.id)
        ids = [row[0] for row in self.db.execute("select id from chunks order by id")]
        self._embed_rows(ids, progress)
        with write_transaction(self.db):
            self.record()
        return {"embedded": len(ids)}

    def _drop_store_file(self) -> None:
        path = getattr(self.store, "path", None)
        self._store = None
        if path is not None and path.exists():
            os.replace(path, path.with_name(path.name + ".bad"))

    def _embed_rows(self, ids, progress=None, batch: int = 512) -> None:
        for start in range(0, len(ids), batch):
            part = ids[start:start + batch]
            marks = ",".join("?" * len(part))
            rows = self.db.execute(f"select id, heading, text from chunks where id in ({marks})",
                                   part).fetchall()
            vectors = self.encode([embed_text(h, t) for _, h, t in rows])
            self.store.add([r[0] for r in rows], vectors)
            if progress:
                progress(len(rows))
