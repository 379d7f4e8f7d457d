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


class Unprocessable(TetherError):
    """Well-formed input that cannot be used as it is (edited tool arguments the tool refuses)."""

    status = 422
    code = "unprocessable"


class Conflict(TetherError):
    status = 409
    code = "conflict"


class Unavailable(TetherError):
    status = 503
    code = "unavailable"


class Gone(TetherError):
    status = 410
    code = "gone"


class TooLarge(TetherError):
    status = 413
    code = "too_large"


class UnsupportedMediaType(TetherError):
    """Content of a type the server does not take (an attachment's media type)."""

    status = 415
    code = "unsupported_media_type"


class TooMany(TetherError):
    """A limit on how much one user may have at once (queued runs, open streams) or per minute."""

    status = 429
    code = "too_many_requests"
