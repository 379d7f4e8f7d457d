"""The in-process bus: one server process, any number of subscribers per channel.

It is also the local half of the Redis bus (tether.bus.redis), which keeps one inside for
delivery within its own process.

A publish must not cost the producer once per subscriber: a run with a thousand watchers would
wait for its audience at every commit. So each channel keeps one list of what was published,
shared by its subscribers, each of which only remembers how far it has read; a publish appends
once and wakes only the subscribers waiting at that moment. Now and then (see Channel._trim)
what all have read is dropped, and a subscriber more than its buffer behind is cut off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

TRIM_EVERY = 64
"""Items published between two trims of a channel's list, at least (more with more subscribers)."""


class MemorySubscription:
    def __init__(self, channel: Channel, maxsize: int, on_overflow: Callable[[], None] | None) -> None:
        self._channel = channel
        self.position = channel.end
        """The channel's index of the next item this subscription reads."""
        self.maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self.woken = False
        """Set by Channel.wake(): the next get() returns at once, so that its follower looks in the store."""
        self._on_overflow = on_overflow

    async def get(self, max_wait: float) -> list[Any]:
        # One future and one timer per wait: wait_for(Event.wait()) would cost a task, an event and a
        # timer each time.
        channel = self._channel
        if self.position == channel.end and not self.overflowed and not self.woken:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            channel.waiting.add(self)
            timer = loop.call_later(max_wait, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                channel.waiting.discard(self)
                self._waiter = None
        self.woken = False
        if self.overflowed:
            return []
        items = channel.items[self.position - channel.start :]
        self.position = channel.end
        return items

    def behind(self) -> int:
        """How many published items this subscription has not read yet."""
        return self._channel.end - self.position

    def close(self) -> None:
        self._channel.unsubscribe(self)

    def _overflow(self) -> None:
        self.overflowed = True
        self.close()
        _wake(self._waiter)
        if self._on_overflow is not None:
            self._on_overflow()


class Channel:
    """What was published on one channel and not yet read by all, from index `start` to `end`."""

    def __init__(self, bus: MemoryBus, name: str) -> None:
        self._bus = bus
        self._name = name
        self.items: list[Any] = []
        self.start = 0
        self.subscribers: set[MemorySubscription] = set()
        self.waiting: set[MemorySubscription] = set()
        self._trim_at = TRIM_EVERY

    @property
    def end(self) -> int:
        return self.start + len(self.items)

    def publish(self, items: list[Any]) -> None:
        self.items.extend(items)
        if self.waiting:
            waiting, self.waiting = self.waiting, set()
            for sub in waiting:
                _wake(sub._waiter)
        if len(self.items) >= self._trim_at:
            self._trim()

    def _trim(self) -> None:
        # Cut off the subscribers further behind than their buffer, then drop what all the others have
        # read. Each trim looks at every subscriber, so trims are as far apart (in items) as there are
        # subscribers: the cost per item published stays constant.
        for sub in [sub for sub in self.subscribers if sub.behind() > sub.maxsize]:
            sub._overflow()
        oldest = min((sub.position for sub in self.subscribers), default=self.end)
        del self.items[: oldest - self.start]
        self.start = oldest
        self._trim_at = len(self.items) + max(TRIM_EVERY, len(self.subscribers))

    def wake(self) -> None:
        """End every subscriber's pending or next get() now, with what it has (often [])."""
        for sub in self.subscribers:
            sub.woken = True
        waiting, self.waiting = self.waiting, set()
        for sub in waiting:
            _wake(sub._waiter)

    def unsubscribe(self, sub: MemorySubscription) -> None:
        self.subscribers.discard(sub)
        self.waiting.discard(sub)
        if not self.subscribers and self._bus._channels.get(self._name) is self:
            del self._bus._channels[self._name]


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class MemoryBus:
    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}
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
        found = self._channels.get(channel)
        if found is None:
            found = self._channels[channel] = Channel(self, channel)
        sub = MemorySubscription(found, maxsize, on_overflow)
        found.subscribers.add(sub)
        return sub

    def publish(self, channel: str, items: list[Any]) -> None:
        found = self._channels.get(channel)
        if found is not None:
            found.publish(items)

    def audience(self, channel: str) -> int:
        """How many follow `channel` here (the Redis bus decodes only messages someone will read)."""
        found = self._channels.get(channel)
        return len(found.subscribers) if found is not None else 0

    def channels(self) -> list[str]:
        """The channels that someone follows here."""
        return list(self._channels)

    def wake(self, channel: str) -> None:
        """Make each subscriber of `channel` return from its pending or next get() at once.

        The Redis bus calls this when live delivery from other workers may have missed items, so that
        each follower re-reads the store instead of waiting out its keep-alive. A subscriber that is
        not waiting (it is busy writing to its client) returns at once from its next get(), so that a
        wake-up is never lost between two waits.
        """
        found = self._channels.get(channel)
        if found is not None:
            found.wake()

    def wake_all(self) -> None:
        """wake() every channel."""
        for found in self._channels.values():
            found.wake()
