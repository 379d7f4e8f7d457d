"""Authentication functions for tests (loaded with --auth tests.auth:NAME)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request


def by_header(request: Request) -> str | None:
    """The user named by a header: what a proxy in front of Tether that signs users in might pass on."""
    return request.headers.get("x-user")


async def by_header_async(request: Request) -> str | None:
    await asyncio.sleep(0)
    return request.headers.get("x-user")


def broken(request: Request) -> str | None:
    raise RuntimeError("the session store is down")


def not_an_id(request: Request) -> object:
    return 42
