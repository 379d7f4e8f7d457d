"""Exact resume: replay a log from the store, then follow its live tail from the bus.

The seam is where streams usually lose or repeat events. Here the follower
subscribes to the bus *before* it queries the store, so an event committed
after the query is in the subscription, one committed before it is in the
query's result, and one in both is dropped by its sequence number. Nothing
falls between.

A follower that falls behind while replaying just replays again (it reads
from the log at its own pace). One that falls more than `buffer` events
behind the live tail is cut off (`cut_off` is set): the connection is closed
and the client resumes from its last id, reading the log instead of memory.

A big audience is served in fewer, larger writes: after each write to its
client a live follower waits in proportion to how many follow the same
channel (see `linger`), so that one channel's followers together write at
most about WRITES_PER_SECOND times a second, whatever the run's pace. A run
with a thousand watchers then keeps its own pace, and each watcher gets the
same events a little later, several to a write. A small audience waits not
at all.

Across workers the bus may lose items (Redis restarted, a message dropped),
never invent them. So the log is the fallback: live items that skip a
sequence number make the follower read the gap from the log first; whenever
the bus has been quiet for a keep-alive interval (or wakes the follower after
a reconnect) it looks in the log for anything it missed; and while the bus is
unhealthy it polls the log every POLL seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tether.bus import Bus

FIRST_PAGE = 500
"""Events read from the log at a replay's start: small, so that the first arrives soon..."""
REPLAY_PAGE = 5_000
"""...and then this many a read, so that a long replay pays for few reads (and holds at most a
page of events in memory per connection)."""
POLL = 0.25
"""Seconds between looks at the log while the bus cannot be trusted to deliver."""
WRITES_PER_SECOND = 8_000
"""What one channel's live followers write to their clients in a second, at most, together. Each
write is a system call and a trip through the HTTP stack (30-40 µs here): about a quarter of a core."""
SHORTEST_LINGER = 0.001
"""A follower does not wait less than this between writes (a timer costs more than it saves)."""


class Follower:
    def __init__(
        self,
        *,
        bus: Bus,
        channel: str,
        read: Callable[[int, int], Awaitable[list[Any]]],
        after: int,
        buffer: int,
        keepalive: float,
        closing: asyncio.Event,
        keep: Callable[[Any], bool] | None = None,
        ends: Callable[[Any], bool] | None = None,
        over: Callable[[], Awaitable[bool]] | None = None,
        on_close: Callable[[Follower], None] | None = None,
    ) -> None:
        self._bus = bus
        self._channel = channel
        self._read = read
        self._keep = keep
        """Which items of the channel to send (None: all)."""
        self._ends = ends
        """Which item ends the stream (None: none does)."""
        self._over = over
        """Is what we follow over (deleted, or a run that has ended)? Then the stream sends what is left
        and ends. Asked once the log is replayed, and whenever the live tail is quiet."""
        self.buffer = buffer
        self._keepalive = keepalive
        self.last_seq = after
        """The last item sent (what the client resumes from)."""
        self._seen = after
        """The last item of the channel seen, sent or not (a run's stream skips other runs' events): a
        live item beyond the next one is a gap."""
        self.closing = closing
        """Set when the server shuts down: the response ends, telling the client to reconnect."""
        self.cut_off = asyncio.Event()
        """Set when the client fell too far behind the live tail; the response must close."""
        self._live = False
        self._on_close = on_close

    def close(self) -> None:
        """The response that sent this stream is done (once, however it ended)."""
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)

    async def batches(self) -> AsyncIterator[list[Any]]:
        """Batches of items in sequence order; an empty batch means "nothing new, send a keep-alive"."""
        while True:
            self._live = False
            subscription = self._bus.subscribe(self._channel, self.buffer, self._overflowed)
            try:
                async for batch in self._replay():
                    yield batch
                    if self._ended(batch):
                        return
                if self._over is not None and await self._over():
                    async for batch in self._replay():  # what was committed with its end
                        yield batch
                    return
                if subscription.overflowed:
                    continue  # the tail moved on while we replayed: replay again
                self._live = True
                loop = asyncio.get_running_loop()
                quiet_since = loop.time()
                while True:
                    items = await subscription.get(self._keepalive if self._bus.healthy else POLL)
                    if subscription.overflowed:
                        self.cut_off.set()
                        return
                    if not self._continues(items):
                        # Quiet, woken, a gap, or out of order (two workers' feed notices): the log has
                        # whatever the bus did not bring.
                        missed = await self._read(self._seen, REPLAY_PAGE)
                        items = sorted([*missed, *items], key=_seq)
                    fresh = self._fresh(items)
                    if fresh:
                        self.last_seq = fresh[-1].seq
                        yield fresh
                        if self._ended(fresh):
                            return
                        if (linger := self._bus.audience(self._channel) / WRITES_PER_SECOND) >= SHORTEST_LINGER:
                            await asyncio.sleep(linger)
                        quiet_since = loop.time()
                    elif loop.time() - quiet_since >= self._keepalive:
                        if self._over is not None and await self._over():
                            async for batch in self._replay():
                                yield batch
                            return
                        quiet_since = loop.time()
                        yield []
            finally:
                subscription.close()

    async def _replay(self) -> AsyncIterator[list[Any]]:
        limit = FIRST_PAGE
        while True:
            page = await self._read(self._seen, limit)
            if page:
                self._seen = page[-1].seq
                kept = page if self._keep is None else [item for item in page if self._keep(item)]
                if kept:
                    self.last_seq = kept[-1].seq
                    yield kept
            if len(page) < limit:
                return
            limit = REPLAY_PAGE

    def _continues(self, items: list[Any]) -> bool:
        """Whether live items carry on from the last one seen, each the next in order."""
        expected = self._seen + 1
        for item in items:
            if item.seq > expected:
                return False
            expected = max(expected, item.seq + 1)
        return bool(items)

    def _fresh(self, items: list[Any]) -> list[Any]:
        """The items not sent yet, once each, in order (what the log and the bus both brought is dropped)."""
        fresh = []
        for item in items:
            if item.seq > self._seen:
                self._seen = item.seq
                if self._keep is None or self._keep(item):
                    fresh.append(item)
        return fresh

    def _overflowed(self) -> None:
        # Called by the bus, possibly while the response is blocked sending to a stalled client.
        if self._live:
            self.cut_off.set()

    def _ended(self, batch: list[Any]) -> bool:
        return self._ends is not None and any(self._ends(item) for item in batch)


def _seq(item: Any) -> int:
    return item.seq
