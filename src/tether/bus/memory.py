"""The in-process bus: one server process, any number of subscribers per channel.

It is also the local half of the Redis bus (tether.bus.redis), which keeps one inside for
delivery within its own process.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import Any


class MemorySubscription:
    def __init__(self, bus: MemoryBus, channel: str, maxsize: int, on_overflow: Callable[[], None] | None) -> None:
        self._bus = bus
        self._channel = channel
        self._maxsize = maxsize
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self._on_overflow = on_overflow

    def _offer(self, items: list[Any]) -> None:
        if self.overflowed:
            return
        if len(self._items) + len(items) > self._maxsize:
            self.overflowed = True
            self._items = []
            self.close()
            if self._on_overflow is not None:
                self._on_overflow()
        else:
            self._items.extend(items)
        _wake(self._waiter)

    async def get(self, max_wait: float) -> list[Any]:
        # One future and one timer per wait: this runs for every batch of every live stream, and
        # wait_for(Event.wait()) costs a task, an event and a timer each time.
        if not self._items and not self.overflowed:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(max_wait, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        items, self._items = self._items, []
        return items

    def close(self) -> None:
        self._bus._unsubscribe(self._channel, self)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class MemoryBus:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[MemorySubscription]] = defaultdict(set)
        self.healthy = True
        """Always: in one process every publish reaches every subscriber at once."""

    async def start(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """Nothing to release."""

    def send_control(self, message: dict[str, Any]) -> None:
        """Does nothing: control messages go to *other* workers, and a single process has none."""

    def on_control(self, handler: Callable[[dict[str, Any]], None]) -> None:
        """Never calls `handler`: no other worker can send this process a control message."""

    def subscribe(
        self, channel: str, maxsize: int, on_overflow: Callable[[], None] | None = None
    ) -> MemorySubscription:
        sub = MemorySubscription(self, channel, maxsize, on_overflow)
        self._subscribers[channel].add(sub)
        return sub

    def publish(self, channel: str, items: list[Any]) -> None:
        for sub in list(self._subscribers.get(channel, ())):
            sub._offer(items)

    def has_subscribers(self, channel: str) -> bool:
        """Whether anyone here follows `channel` (the Redis bus decodes only messages someone will read)."""
        return channel in self._subscribers

    def wake_all(self) -> None:
        """End every pending get() now, with what it has (usually []), so that its follower looks again.

        The Redis bus calls this when live delivery from other workers may have missed items, so that
        each follower re-reads the store instead of waiting out its keep-alive. A subscription that is
        not waiting at this moment is not affected.
        """
        for subs in self._subscribers.values():
            for sub in subs:
                _wake(sub._waiter)

    def _unsubscribe(self, channel: str, sub: MemorySubscription) -> None:
        subs = self._subscribers.get(channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[channel]
