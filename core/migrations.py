"""The core's migration set: tables every workspace has. Append only, never edit."""

from sqlite_utils.migrations import Migrations

core_migrations = Migrations("ragloop.core")


@core_migrations()
def m001_create_settings(db):
    # Workspace-wide settings, such as the adapter `ragloop adapters use` picked.
    db["settings"].create({"key": str, "value_json": str, "updated_at": str},
                          pk="key", if_not_exists=True)


@core_migrations()
def m002_create_documents_and_chunks(db):
    db["documents"].create({
        "id": int, "path": str, "content_hash": str, "size": int, "mtime": float,
        "loader": str, "metadata_json": str, "warnings_json": str, "chunk_count": int,
        "indexed_at": str,
    }, pk="id", not_null={"path", "content_hash"})
    db["documents"].create_index(["path"], unique=True)
    # AUTOINCREMENT: a chunk id is never reused, so a stale vector left in the FAISS file
    # by an interrupted run can never be mistaken for a newer chunk.
    db.execute("""
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            text TEXT NOT NULL,
            heading TEXT NOT NULL DEFAULT '',
            start_char INTEGER, end_char INTEGER, start_line INTEGER, end_line INTEGER
        )""")
    db["chunks"].create_index(["document_id"])
    db["chunks"].enable_fts(["text", "heading"], create_triggers=True, tokenize="porter")


@core_migrations()
def m003_create_index_state(db):
    # One row per vector index: which embedder and store built it, and what the store file
    # held when the database last agreed with it (count + checksum), to detect a mismatch.
    db["index_state"].create({
        "name": str, "embedder": str, "embedder_options_json": str, "embedder_id": str,
        "store": str, "store_options_json": str, "dimension": int, "file_size": int,
        "file_mtime_ns": int, "vector_count": int, "checksum": str, "version": int, "updated_at": str,
    }, pk="name")


@core_migrations()
def m004_create_asks(db):
    db["asks"].create({
        "id": str, "created_at": str, "question": str, "mode": str, "k": int,
        "chunk_ids_json": str, "scores_json": str, "prompt": str, "answer": str,
        "generator": str, "model_id": str, "adapter": str, "params_json": str,
        "timings_json": str, "index_version": int, "notes_json": str,
    }, pk="id")
    db["asks"].create_index(["created_at"])
