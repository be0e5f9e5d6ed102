"""The error a request gets back: a one-line message and the HTTP status that fits it."""

from __future__ import annotations

from ragloop.core.errors import RagloopError


class ServeError(RagloopError):
    """A request the server refuses: `status` 400 by default, 404 for an unknown id."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
