"""The in-process bus: one shared list per channel, read by many, trimmed behind the slowest."""

from __future__ import annotations

import asyncio
import random

from tether.bus.memory import TRIM_EVERY, MemoryBus


async def test_every_subscriber_gets_every_item_once_in_order_at_its_own_pace() -> None:
    bus = MemoryBus()
    subs = [bus.subscribe("c", 10_000) for _ in range(50)]
    received: list[list[int]] = [[] for _ in subs]
    rng = random.Random(7)
    published = 0
    for _ in range(400):
        batch = list(range(published, published + rng.randint(1, 5)))
        bus.publish("c", batch)
        published += len(batch)
        for sub, got in zip(subs, received, strict=True):
            if rng.random() < 0.3:  # each reads now and then: some fall far behind, then catch up
                got += await sub.get(0)
    for sub, got in zip(subs, received, strict=True):
        got += await sub.get(0)
        assert got == list(range(published))


async def test_what_all_have_read_is_dropped_and_a_channel_without_subscribers_is_gone() -> None:
    bus = MemoryBus()
    subs = [bus.subscribe("c", 1_000) for _ in range(3)]
    for n in range(10 * TRIM_EVERY):
        bus.publish("c", [n])
        for sub in subs:
            assert await sub.get(0) == [n]
    assert len(bus._channels["c"].items) <= TRIM_EVERY  # not 640: nobody needs them any more
    for sub in subs:
        sub.close()
    assert bus.audience("c") == 0 and "c" not in bus._channels
    bus.publish("c", ["nobody reads this"])  # kept nowhere
    assert "c" not in bus._channels


async def test_a_subscriber_further_behind_than_its_buffer_is_cut_off_and_the_others_go_on() -> None:
    bus = MemoryBus()
    cut: list[str] = []
    stalled = bus.subscribe("c", 100, lambda: cut.append("stalled"))
    reader = bus.subscribe("c", 100, lambda: cut.append("reader"))
    waiting = asyncio.create_task(stalled.get(30))  # cut off while it waits: it is woken with nothing
    await asyncio.sleep(0)
    got = []
    for n in range(300):
        bus.publish("c", [n])
        got += await reader.get(0)
    assert cut == ["stalled"] and stalled.overflowed and not reader.overflowed
    assert await asyncio.wait_for(waiting, 1) == []  # its first item woke it, then it had nothing to give
    assert got == list(range(300))
    assert bus.audience("c") == 1
    assert len(bus._channels["c"].items) <= 2 * TRIM_EVERY  # the stalled one holds nothing back


async def test_a_publish_wakes_the_subscribers_that_wait_and_only_them() -> None:
    bus = MemoryBus()
    waiting = [asyncio.create_task(bus.subscribe("c", 10).get(30)) for _ in range(3)]
    idle = bus.subscribe("c", 10)
    await asyncio.sleep(0)
    assert len(bus._channels["c"].waiting) == 3
    bus.publish("c", ["x", "y"])
    assert await asyncio.wait_for(asyncio.gather(*waiting), 1) == [["x", "y"]] * 3
    assert not bus._channels["c"].waiting
    assert await idle.get(0) == ["x", "y"]
    late = bus.subscribe("c", 10)  # what was published before it subscribed is not its business
    assert await late.get(0) == []


async def test_a_wake_up_reaches_the_subscribers_of_its_channel_waiting_or_not() -> None:
    bus = MemoryBus()
    waiting = asyncio.create_task(bus.subscribe("c", 10).get(30))
    busy = bus.subscribe("c", 10)  # not in get() at the time: busy writing to its client
    elsewhere = bus.subscribe("d", 10)
    await asyncio.sleep(0)
    bus.wake("c")
    assert await asyncio.wait_for(waiting, 1) == []
    assert await asyncio.wait_for(busy.get(30), 1) == []  # the wake-up was kept for it
    again = asyncio.create_task(busy.get(30))  # and used up: this one waits
    await asyncio.sleep(0)
    assert not again.done()
    again.cancel()
    assert elsewhere.woken is False
    bus.wake_all()
    assert await asyncio.wait_for(elsewhere.get(30), 1) == []
