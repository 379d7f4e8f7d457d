"""Every error is JSON `{error: {code, message}}` with the right status, whoever raised it."""

from __future__ import annotations

import asyncio
import contextlib
import re
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.errors import TetherError


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TetherError)
    async def tether_error(request: Request, exc: TetherError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return error_response(400, "invalid_json", "the request body is not valid JSON")
        details = "; ".join(_describe(p) for p in problems)
        return error_response(422, "invalid_request", details or "the request does not match the schema")

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the exception's traceback after this answer.
        return error_response(500, "internal_error", "the server failed to answer this request; see its log")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
            # FastAPI's "error parsing the body": JSON nested deeper than Python's parser goes.
            return error_response(400, "invalid_json", "the request body is nested too deeply to parse")
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
            # FastAPI's "error parsing the body": a JSON body that is not even UTF-8 text.
            return error_response(400, "invalid_json", f"the request body is not valid JSON: {exc.__cause__}")
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        headers = exc.headers
        allow = _path_methods(request) if exc.status_code == 405 else None
        if allow is not None:
            headers = {**(headers or {}), "Allow": allow}
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)


def _path_methods(request: Request) -> str | None:
    """Every method the request's path is served with (Starlette's 405 names its first route's alone),
    asked of each route as the router would; None if no route of this app serves the path."""
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    served = [
        method
        for method in ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]
    return ", ".join(served) or None


def _describe(problem: dict) -> str:
    where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body") or "body"
    return f"{where}: {problem.get('msg', 'invalid')}"


MESSAGE_ROUTE = re.compile(r"/v1/threads/[^/]+/runs$")
"""The route that takes a message with attachments (POST; under any prefix the app is mounted at)."""


class BodyLimitMiddleware:
    """413 for request bodies over the limit, whether they announce their length or not.

    A message (`MESSAGE_ROUTE`) may be larger, `message_bytes`: it may carry attachments. A body
    without a Content-Length is read (up to the limit) before the app sees it: an error raised while
    the app reads would be turned into a generic 400 by the body parser.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, message_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message_bytes = max(max_bytes, message_bytes or 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        if scope["method"] == "POST" and MESSAGE_ROUTE.search(scope["path"]):
            limit = self.message_bytes
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                await self._too_large(scope, receive, send, limit)
            else:
                await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body at all
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > limit:
                await self._too_large(scope, receive, send, limit, unread=message.get("more_body", False))
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int, *, unread: bool = True) -> None:
        # Read (and drop) the rest of a body of reasonable size before answering: closing the
        # connection with unread bytes makes the kernel send a reset, and the client then loses
        # the 413 and sees only a broken connection.
        # A client that waits for "100 Continue" has sent nothing, and gets none: no drain.
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        small_enough = not declared.isdigit() or int(declared) <= DRAIN_BYTES
        if unread and small_enough and headers.get(b"expect", b"").lower() != b"100-continue":
            # Bounded in time too: a client that announces a body and never sends it gets its 413.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_SECONDS):
                    await _drain(receive, DRAIN_BYTES)
        response = error_response(
            413,
            "body_too_large",
            f"the request body is larger than {limit} bytes",
            headers={"connection": "close"},
        )
        await response(scope, receive, send)


DRAIN_BYTES = 1 << 20
"""How much of a refused body is read and dropped before the 413; a larger one is cut off."""
DRAIN_SECONDS = 2.0
"""How long the server waits for the refused body before it answers anyway."""


async def _drain(receive: Receive, limit: int) -> None:
    drained = 0
    while drained <= limit:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        drained += len(message.get("body", b""))
