"""The Bus: live fan-out of committed events to the connections that follow them.

The bus carries only what the store has already committed (durable before
visible), so a subscriber that misses something can always read it from the
log. Each subscription has a bounded buffer: a subscriber that falls too far
behind is marked `overflowed` instead of growing memory or slowing the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Subscription(Protocol):
    overflowed: bool

    async def get(self, max_wait: float) -> list[Any]:
        """Everything buffered so far, waiting up to `max_wait` seconds for at least one item.

        Returns [] on timeout or once the subscription has overflowed.
        """
        ...

    def close(self) -> None: ...


class Bus(Protocol):
    def subscribe(self, channel: str, maxsize: int, on_overflow: Callable[[], None] | None = None) -> Subscription:
        """Follow a channel; `on_overflow` is called (once) when the buffer of `maxsize` items overflows."""
        ...

    def publish(self, channel: str, items: list[Any]) -> None: ...


def thread_channel(thread_id: str) -> str:
    return f"thread:{thread_id}"


FEED_CHANNEL = "feed"
