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


@core_migrations()
def m005_create_ratings(db):
    # Rows are never updated in place: a re-rating is a new comparison row.
    db.executescript("""
        CREATE TABLE questions (
            id TEXT PRIMARY KEY,
            text TEXT NOT NULL,
            text_hash TEXT NOT NULL UNIQUE,        -- sha256 of the normalized text
            origin TEXT NOT NULL,                  -- file | logs | typed | import
            origin_ref TEXT,                       -- file path, ask id, ...
            created_at TEXT NOT NULL
        );
        CREATE TABLE candidates (
            id TEXT PRIMARY KEY,
            question_id TEXT NOT NULL REFERENCES questions(id),
            text TEXT NOT NULL,
            prompt TEXT NOT NULL,                  -- the exact prompt text the model saw
            messages_json TEXT NOT NULL,           -- the chat messages behind that prompt
            chunk_ids_json TEXT NOT NULL,
            scores_json TEXT NOT NULL,
            index_version INTEGER,
            generator TEXT, model_id TEXT, adapter TEXT,
            params_json TEXT NOT NULL,             -- temperature, max_new_tokens, k, mode, ...
            seed INTEGER,
            created_at TEXT NOT NULL
        );
        CREATE INDEX candidates_question ON candidates(question_id);
        CREATE TABLE comparisons (
            id TEXT PRIMARY KEY,
            question_id TEXT NOT NULL REFERENCES questions(id),
            candidate_a TEXT NOT NULL REFERENCES candidates(id),
            candidate_b TEXT NOT NULL REFERENCES candidates(id),
            left_candidate TEXT NOT NULL REFERENCES candidates(id),   -- shown on the left
            choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both-bad', 'skip')),
            rater TEXT NOT NULL,                   -- plugin name: human, judge, ...
            rater_id TEXT NOT NULL,                -- who: a person's id, or judge@version
            session TEXT,
            seconds REAL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX comparisons_question ON comparisons(question_id);
        CREATE TABLE scores (
            id TEXT PRIMARY KEY,
            comparison_id TEXT REFERENCES comparisons(id),
            candidate_id TEXT NOT NULL REFERENCES candidates(id),
            score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
            rater TEXT NOT NULL, rater_id TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE passage_judgments (
            id TEXT PRIMARY KEY,
            comparison_id TEXT REFERENCES comparisons(id),
            question_id TEXT NOT NULL REFERENCES questions(id),
            chunk_id INTEGER NOT NULL,             -- no FK: a re-index may drop the chunk
            chunk_text TEXT NOT NULL,              -- kept, so the judgment outlives the chunk
            relevant INTEGER NOT NULL CHECK (relevant IN (0, 1)),
            rater TEXT NOT NULL, rater_id TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE comments (
            id TEXT PRIMARY KEY,
            comparison_id TEXT NOT NULL REFERENCES comparisons(id),
            text TEXT NOT NULL,
            rater_id TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
    """)


@core_migrations()
def m006_create_rating_claims(db):
    # Which live rating session is generating a question's pair (kind 'pair', scope: the
    # settings fingerprint) or showing it to a rater id (kind 'rater', scope: that id); see
    # core/pipeline/rating_claims.py. A row lives only while that work is under way.
    db.execute("""
        CREATE TABLE rating_claims (
            question_hash TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('pair', 'rater')),
            scope TEXT NOT NULL,
            session TEXT NOT NULL,                 -- live while it holds locks/SESSION.lock
            pid INTEGER,
            created_at TEXT NOT NULL,
            PRIMARY KEY (question_hash, kind, scope)
        )""")


@core_migrations()
def m007_serve_create_tables(db):
    # `ragloop serve` (core/serve/feedback.py): one row per served answer, search or compare
    # (its trace id), the raw feedback given against it, and rater tokens (a hash, never the
    # token). Ratings themselves land in questions/candidates/comparisons/scores as `rate`'s.
    db.executescript("""
        CREATE TABLE serve_traces (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('ask', 'search', 'compare')),
            question TEXT NOT NULL,
            question_id TEXT REFERENCES questions(id),
            candidate_id TEXT REFERENCES candidates(id),     -- ask: the served answer
            candidate_b TEXT REFERENCES candidates(id),      -- compare: the second answer
            left_candidate TEXT,                             -- compare: the one shown as "a"
            ask_id TEXT,
            adapter TEXT,
            hits_json TEXT NOT NULL,                         -- [[chunk_id, text], ...] as shown
            cached INTEGER NOT NULL DEFAULT 0,
            user TEXT,
            created_at TEXT NOT NULL
        );
        CREATE TABLE serve_feedback (
            id TEXT PRIMARY KEY,
            trace_id TEXT NOT NULL REFERENCES serve_traces(id),
            value_json TEXT NOT NULL,                        -- the request, as given
            rater_id TEXT NOT NULL,
            adapter TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX serve_feedback_trace ON serve_feedback(trace_id);
        CREATE TABLE serve_tokens (
            name TEXT PRIMARY KEY,
            token_sha256 TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        );
    """)


@core_migrations()
def m008_rate_add_wait_seconds(db):
    # How long the rater waited for this item's answers (core/pipeline/rating.py): near zero
    # once `rate` generates the next item while the current one is on screen.
    if "wait_seconds" not in db["comparisons"].columns_dict:
        db["comparisons"].add_column("wait_seconds", float)


@core_migrations()
def m008_rate_create_rankings(db):
    # `rate --candidates best-of-N` (core/pipeline/rating_candidates.py): the provenance of
    # the comparisons it records. The N candidates in sampling order, each one's round-robin
    # score, every pairwise verdict [i, j, choice] (a: i won), and the comparisons recorded.
    db.execute("""
        CREATE TABLE IF NOT EXISTS rating_rankings (
            id TEXT PRIMARY KEY,
            question_id TEXT NOT NULL REFERENCES questions(id),
            rater TEXT NOT NULL, rater_id TEXT NOT NULL,
            session TEXT,
            n INTEGER NOT NULL,
            candidate_ids_json TEXT NOT NULL,
            scores_json TEXT NOT NULL,
            verdicts_json TEXT NOT NULL,
            comparison_ids_json TEXT NOT NULL,
            margin REAL,
            created_at TEXT NOT NULL
        )""")
