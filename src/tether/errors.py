"""Errors the engine raises on purpose. The API turns each into `{error: {code, message}}`."""

from __future__ import annotations


class TetherError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(TetherError):
    status = 400
    code = "bad_request"


class NotFound(TetherError):
    status = 404
    code = "not_found"


class Conflict(TetherError):
    status = 409
    code = "conflict"


class Unavailable(TetherError):
    status = 503
    code = "unavailable"
