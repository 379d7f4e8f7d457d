"""The edge a hostile web page meets: which Host names are served, which Origins may change
anything, and the headers that keep the UI from being framed or fed foreign scripts.

A loopback server without a token is reachable by every page the user opens. Two attacks matter:
- DNS rebinding: a page on evil.example re-points its own name at 127.0.0.1 and then reads the API
  as same-origin. Its requests carry `Host: evil.example`, so only known names are served (421).
- Cross-site requests: any page may POST to 127.0.0.1 (a "simple" request needs no preflight).
  Browsers name the page in `Origin`, so a state-changing request from another origin is refused
  (403) unless that origin is allowed (`--cors-origins`, which also turns CORS on for it).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.api.errors import error_response

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UI_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # Answers may show pictures from the web, never scripts; attachments are shown from blob: URLs
        # (fetched with the signed-in user's token, which an <img src> could not send).
        "img-src 'self' data: blob: https:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
FRAMES_ONLY = "frame-ancestors 'none'"
"""For pages that are not the UI (FastAPI's /docs loads its scripts from a CDN)."""


class HostCheckMiddleware:
    """Serve only requests whose `Host` is a name this server is known by; 421 for the rest.

    Known: the loopback names, the address the server is bound to, any IP address when it is bound
    to all of them (a rebinding page cannot send an IP as its Host: it sends its own name), and the
    names in `--allowed-hosts` (`*.example.com` for its subdomains; `*` alone turns the check off).
    """

    def __init__(self, app: ASGIApp, bound_host: str, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.any_host = "*" in allowed
        self.names = LOOPBACK_NAMES | {bound_host.lower().strip("[]")} | {a.lower() for a in allowed if "*" not in a}
        self.suffixes = tuple(a.lower()[1:] for a in allowed if a.startswith("*.") and len(a) > 2)
        self.any_address = bound_host in ("0.0.0.0", "::", "")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.any_host or self._known(Headers(scope=scope).get("host", "")):
            await self.app(scope, receive, send)
            return
        response = error_response(
            421,
            "misdirected_request",
            "this server does not answer to that Host name; add it with --allowed-hosts if it is yours",
        )
        await response(scope, receive, send)

    def _known(self, host: str) -> bool:
        name = _host_name(host)
        if name is None:
            return False
        if name in self.names or name.endswith(self.suffixes):
            return True
        if self.any_address:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                return False
            return True
        return False


class OriginCheckMiddleware:
    """Refuse a state-changing request that a page of another origin sent (403 `cross_origin`).

    A request without `Origin` is not from a browser page (curl, the Python client) and passes; a
    browser sends it on every cross-origin request that could change something.
    """

    def __init__(self, app: ASGIApp, allowed_origins: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = {origin.rstrip("/").lower() for origin in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in STATE_CHANGING:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or self._allowed(origin.lower(), headers.get("host", "").lower()):
            await self.app(scope, receive, send)
            return
        response = error_response(
            403,
            "cross_origin",
            f"a page from {origin[:100]} may not change anything here; allow its origin with --cors-origins",
        )
        await response(scope, receive, send)

    def _allowed(self, origin: str, host: str) -> bool:
        if origin in self.allowed:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == host and bool(host)


class SecurityHeadersMiddleware:
    """Headers on every response: no MIME sniffing, no referrer, no framing; the UI's pages also get a
    Content-Security-Policy that allows only the server's own scripts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        policy = FRAMES_ONLY if path.startswith(("/docs", "/redoc")) else UI_POLICY

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("referrer-policy", "no-referrer")
                headers.setdefault("x-frame-options", "DENY")
                headers.setdefault("content-security-policy", policy)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _host_name(host: str) -> str | None:
    """The name in a Host header, lowercased, without its port or IPv6 brackets; None if malformed."""
    host = host.strip().lower()
    if not host:
        return None
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else None
    name, _, port = host.partition(":")
    if port and not port.isdigit():
        return None
    return name or None


def route_path(scope: Scope) -> str:
    """The path inside this app, when it is mounted under a prefix of another."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
