"""Who is calling: every /v1 request is authenticated to a user id before any route sees it.

Four ways, one at a time:
- none: loopback without a token; everyone is the one user "default".
- `--token`: one shared bearer token; its holder is the user "default".
- `--users FILE`: a TOML file of `[[users]]`, each with an `id` and a `token` (or its
  `token_sha256`); each user sees only their own threads.
- `--auth module:function` (or `create_app(auth=...)`): your own function, given the
  Starlette `Request`, returning the user's id or None (401). It may be async.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import re
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tether.api.edge import route_path
from tether.api.errors import error_response
from tether.imports import import_attribute
from tether.store import DEFAULT_USER

log = logging.getLogger("tether.auth")

AuthFunction = Callable[[Request], str | Awaitable[str | None] | None]
AuthKind = Literal["none", "token", "users", "custom"]
USER_KEY = "tether.user"
"""Where the middleware leaves the caller's id in the ASGI scope."""
_USER_ID = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
"""A user id: 1-200 characters, none of them a control character (ids travel in logs and on Redis)."""


class AuthConfigError(ValueError):
    """A users file or --auth that cannot work; the message says why."""


@dataclass(frozen=True)
class Auth:
    kind: AuthKind
    authenticate: Callable[[Request], Awaitable[str | None]]

    @property
    def names_users(self) -> bool:
        """Whether callers are told apart (else everyone is the user "default")."""
        return self.kind in ("users", "custom")


def no_auth() -> Auth:
    async def everyone(request: Request) -> str:
        return DEFAULT_USER

    return Auth("none", everyone)


def token_auth(token: str) -> Auth:
    expected = hashlib.sha256(token.encode()).digest()

    async def holder(request: Request) -> str | None:
        given = _bearer(request)
        if given is None:
            return None
        return DEFAULT_USER if hmac.compare_digest(hashlib.sha256(given).digest(), expected) else None

    return Auth("token", holder)


def users_auth(path: Path) -> Auth:
    users = read_users(path)

    async def user_of(request: Request) -> str | None:
        given = _bearer(request)
        if given is None:
            return None
        digest = hashlib.sha256(given).digest()
        found = None
        for user_id, expected in users:  # every one compared: the time taken says nothing of who matched
            if hmac.compare_digest(digest, expected):
                found = user_id
        return found

    return Auth("users", user_of)


def custom_auth(function: AuthFunction) -> Auth:
    async def call(request: Request) -> str | None:
        result = function(request)
        if inspect.isawaitable(result):
            result = await result
        return result

    return Auth("custom", call)


def read_users(path: Path) -> list[tuple[str, bytes]]:
    """The users of a users file: (id, sha256 of their token)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuthConfigError(f"cannot read the users file {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AuthConfigError(f"the users file {path} is not valid TOML: {exc}") from exc
    entries = data.get("users")
    if not isinstance(entries, list) or not entries:
        raise AuthConfigError(f'the users file {path} has no users: add [[users]] tables with id = "…" and token = "…"')
    users: list[tuple[str, bytes]] = []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}, user {number}"
        if not isinstance(entry, dict):
            raise AuthConfigError(f"{where}: each user must be a [[users]] table")
        unknown = sorted(set(entry) - {"id", "token", "token_sha256"})
        if unknown:
            raise AuthConfigError(
                f"{where}: unknown key(s) {', '.join(unknown)} (a user has id, token or token_sha256)"
            )
        user_id = entry.get("id")
        if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
            raise AuthConfigError(f"{where}: id must be 1-200 characters without control characters")
        if ("token" in entry) == ("token_sha256" in entry):
            raise AuthConfigError(f"{where} ({user_id!r}): give exactly one of token and token_sha256")
        if "token" in entry:
            token = entry["token"]
            if not isinstance(token, str) or len(token) < 8:
                raise AuthConfigError(f"{where} ({user_id!r}): token must be a string of at least 8 characters")
            digest = hashlib.sha256(token.encode()).digest()
        else:
            hex_digest = entry["token_sha256"]
            if not isinstance(hex_digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", hex_digest):
                raise AuthConfigError(f"{where} ({user_id!r}): token_sha256 must be 64 hexadecimal digits")
            digest = bytes.fromhex(hex_digest)
        if any(user_id == known for known, _ in users):
            raise AuthConfigError(f"{where}: the id {user_id!r} is given twice")
        if any(digest == known for _, known in users):
            raise AuthConfigError(f"{where} ({user_id!r}): the same token is given to two users")
        users.append((user_id, digest))
    return users


def load_auth_function(spec: str) -> AuthFunction:
    """Import `module:function` for --auth."""
    target = import_attribute(spec, "--auth", AuthConfigError)
    if not callable(target):
        raise AuthConfigError(f"--auth {spec} is a {type(target).__name__}, not a function")
    return target


def _bearer(request: Request) -> bytes | None:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    return given.strip().encode()


class AuthMiddleware:
    """Every route under `protected` (/v1, and /metrics unless it is public) needs a caller: their id
    goes in the scope (`caller`), else 401."""

    def __init__(self, app: ASGIApp, auth: Auth, protected: tuple[str, ...] = ("/v1",)) -> None:
        self.app = app
        self.auth = auth
        self.protected = protected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not route_path(scope).startswith(self.protected):
            await self.app(scope, receive, send)
            return
        try:
            user = await self.auth.authenticate(Request(scope))
        except Exception:
            log.exception("the authentication function raised")
            response = error_response(500, "auth_failed", "the server's authentication function failed; see its log")
            await response(scope, receive, send)
            return
        if user is None:
            if self.auth.kind == "custom":
                message = "not authenticated"
            elif b"authorization" in dict(scope["headers"]):
                message = "wrong bearer token"
            else:
                message = "missing bearer token"
            response = error_response(401, "unauthorized", message, headers={"www-authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        if not isinstance(user, str) or not _USER_ID.fullmatch(user):
            log.error("the authentication function returned %r, not a user id (a str of 1-200 characters)", user)
            response = error_response(500, "auth_failed", "the server's authentication function returned no valid id")
            await response(scope, receive, send)
            return
        scope[USER_KEY] = user
        await self.app(scope, receive, send)


def caller(request: Request) -> str:
    """The id of the user making this request (set by AuthMiddleware)."""
    return request.scope[USER_KEY]
