"""Server-sent events: a follower's batches as `id:`/`data:` frames, with keep-alives.

The response ends when the follower ends (a run's terminal event), when the
client disconnects, when the server shuts down (with a final comment, so the
client reconnects), or when the follower is cut off for falling behind; in the
last case the connection is closed even if a send is blocked on a client that
stopped reading, so a stalled client holds no memory and slows no run.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tether.engine.streams import Follower

log = logging.getLogger("tether.stream")

KEEPALIVE = b": keep-alive\n\n"
SHUTDOWN = b": server shutting down; reconnect with Last-Event-ID\n\n"
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, follower: Follower, name: str, preamble: bytes = b"") -> None:
        # Not Response.__init__: the body is produced by __call__, not given up front.
        self.status_code = 200
        self.background = None
        self.follower = follower
        self.name = name
        self.preamble = preamble

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        pump = asyncio.create_task(self._pump(send))
        disconnect = asyncio.create_task(_wait_for_disconnect(receive))
        cut_off = asyncio.create_task(self.follower.cut_off.wait())
        closing = asyncio.create_task(self.follower.closing.wait())
        watchers = (pump, disconnect, cut_off, closing)
        try:
            await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            self.follower.close()
        if pump.done() and not pump.cancelled() and pump.exception() is not None:
            raise pump.exception()  # type: ignore[misc]
        if closing.done() and not closing.cancelled() and not (pump.done() and not pump.cancelled()):
            # A client that reads gets this at once; one that does not is not waited for long.
            try:
                await asyncio.wait_for(send({"type": "http.response.body", "body": SHUTDOWN, "more_body": False}), 1)
            except TimeoutError:
                pass
            return
        if cut_off.done() and not cut_off.cancelled():
            log.warning(
                "%s: client fell more than %d events behind and was cut off; it can resume from Last-Event-ID %d",
                self.name,
                self.follower.buffer,
                self.follower.last_seq,
            )

    async def _pump(self, send: Send) -> None:
        if self.preamble:
            await send({"type": "http.response.body", "body": self.preamble, "more_body": True})
        async for batch in self.follower.batches():
            body = b"".join(item.sse() for item in batch) if batch else KEEPALIVE
            await send({"type": "http.response.body", "body": body, "more_body": True})
        if self.follower.cut_off.is_set():
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
