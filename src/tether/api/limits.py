"""A request rate per user (`--rate-limit`): a token bucket each, refilled over the minute.

It sits behind authentication, so a user is their id: one user's burst cannot slow another's, and
a caller without credentials is refused (401) before it costs anything here.
"""

from __future__ import annotations

import math
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from tether.api.auth import USER_KEY
from tether.api.errors import error_response


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, per_minute: int) -> None:
        self.app = app
        self.capacity = float(per_minute)
        self.refill = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        """user → (tokens, when counted)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get(USER_KEY) if scope["type"] == "http" else None
        if user is None:
            await self.app(scope, receive, send)
            return
        wait = self._take(user)
        if wait > 0:
            response = error_response(
                429,
                "rate_limited",
                f"more than {self.capacity:g} requests a minute (--rate-limit); try again in {math.ceil(wait)}s",
                headers={"retry-after": str(math.ceil(wait))},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _take(self, user: str) -> float:
        """Take a token; 0 if there was one, else the seconds until there is."""
        now = time.monotonic()
        tokens, then = self._buckets.get(user, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.refill)
        if len(self._buckets) > 100_000:  # many users idle: full buckets need no memory
            self._buckets = {u: b for u, b in self._buckets.items() if b[0] < self.capacity}
        if tokens < 1:
            self._buckets[user] = (tokens, now)
            return (1 - tokens) / self.refill
        self._buckets[user] = (tokens - 1, now)
        return 0.0
