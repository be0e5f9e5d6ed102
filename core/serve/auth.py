"""Tokens for `ragloop serve`: a shared `--token`, or one token per rater made by `ragloop
serve token add NAME`, of which the workspace keeps only the sha256 (a token is 32 random
bytes, so a plain hash cannot be reversed by guessing). Feedback sent with a rater's token is
attributed to that rater's name.

Whether a server asks for tokens is decided when it starts (a `--token`, or rater tokens in
the workspace); tokens added or removed while it runs count within a few seconds.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time

from ragloop.core.errors import RagloopError
from ragloop.core.serve.errors import ServeError
from ragloop.core.workspace import utcnow, write_transaction

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SHARED_RATER = "token"          # the rater id of feedback sent with the shared --token
ANONYMOUS = "anonymous"         # without tokens and without an X-User header
RELOAD_SECONDS = 2.0


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise RagloopError(f"rater name {name!r} is not allowed; use letters, digits, "
                           f". _ @ - (up to 64), starting with a letter or digit")
    return name


def add_token(ws, name: str) -> str:
    """A new token for rater `name` (shown once; only its hash is stored)."""
    check_name(name)
    token = secrets.token_urlsafe(32)
    with write_transaction(ws.db):
        if ws.db["serve_tokens"].count_where("name = ?", [name]):
            raise RagloopError(f"rater {name!r} has a token already; remove it first with "
                               f"`ragloop serve token remove {name}`")
        ws.db["serve_tokens"].insert({"name": name, "token_sha256": digest(token),
                                      "created_at": utcnow()})
    return token


def list_tokens(ws) -> list[dict]:
    return list(ws.db.query("select name, created_at from serve_tokens order by name"))


def remove_token(ws, name: str) -> None:
    with write_transaction(ws.db):
        if not ws.db["serve_tokens"].count_where("name = ?", [name]):
            raise RagloopError(f"no token for rater {name!r}; see `ragloop serve token list`")
        ws.db["serve_tokens"].delete_where("name = ?", [name])


def user_header(value: str | None) -> str | None:
    """The X-User header, when it is a usable name."""
    return value if value and NAME_RE.match(value) else None


class Auth:
    def __init__(self, db_path, shared: str | None = None):
        self._db_path = str(db_path)
        self._shared = digest(shared) if shared else None
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._tokens: dict[str, str] = {}
        self._reload()
        self.enabled = bool(self._shared or self._tokens)

    def _reload(self) -> None:
        conn = sqlite3.connect(f"file:{self._db_path}?mode=ro", uri=True, timeout=5)
        try:
            self._tokens = dict(conn.execute("select token_sha256, name from serve_tokens"))
        finally:
            conn.close()
        self._loaded_at = time.monotonic()

    def rater(self, authorization: str | None, user: str | None) -> str:
        """The rater id of a request; ServeError 401 when a token is needed and not good."""
        if not self.enabled:
            return user_header(user) or ANONYMOUS
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ServeError("this server needs a token: send Authorization: Bearer TOKEN",
                             401)
        hashed = digest(token.strip())
        if self._shared and secrets.compare_digest(hashed, self._shared):
            return SHARED_RATER
        with self._lock:
            if time.monotonic() - self._loaded_at > RELOAD_SECONDS:
                self._reload()
            name = self._tokens.get(hashed)
        if name is None:
            raise ServeError("the token is not valid; ask for one made by "
                             "`ragloop serve token add NAME`", 401)
        return name
