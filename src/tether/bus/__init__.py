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
    healthy: bool
    """True while live delivery is complete: whatever any worker publishes reaches this process's
    subscribers. False while it may be missing items (the Redis bus lost its connection): followers
    must then look in the store themselves, since the bus may not tell them of new items."""

    async def start(self) -> None:
        """Connect, before anything subscribes or publishes; raises if live delivery cannot be set up."""
        ...

    async def close(self) -> None:
        """Stop delivering and release connections. Idempotent."""
        ...

    def subscribe(self, channel: str, maxsize: int, on_overflow: Callable[[], None] | None = None) -> Subscription:
        """Follow a channel; `on_overflow` is called (once) when the buffer of `maxsize` items overflows."""
        ...

    def audience(self, channel: str) -> int:
        """How many subscriptions follow `channel` in this process."""
        ...

    def publish(self, channel: str, items: list[Any]) -> None:
        """Deliver committed items to the channel's subscribers in every worker, in order.

        Never blocks and never raises. Across workers delivery may be lossy (a follower that misses
        items reads them from the store by sequence number) but never wrong.
        """
        ...

    def send_control(self, message: dict[str, Any]) -> None:
        """Send a JSON-serialisable message to every other worker; never blocks.

        Best effort and at most once: a worker that is disconnected at the time never sees it.
        """
        ...

    def on_control(self, handler: Callable[[dict[str, Any]], None]) -> None:
        """Call `handler` on the event loop with each control message from another worker.

        The message is what the sender passed, plus "from": the sender's worker id.
        """
        ...


def thread_channel(thread_id: str) -> str:
    return f"thread:{thread_id}"


FEED_CHANNEL = "feed"
