"""The Redis bus, against real Redis: delivery across workers, isolation, overflow, outages.

Each test uses its own random channel prefix on the shared Redis at 127.0.0.1:6379 (pub/sub is
not scoped by database number); the outage tests run a private redis-server they can kill.
Without Redis the tests skip on a laptop and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from tether.bus import FEED_CHANNEL, thread_channel
from tether.bus import redis as redis_bus
from tether.bus.memory import MemorySubscription
from tether.bus.redis import RedisBus, RedisUnavailable, decode, encode
from tether.events import Event, FeedItem

from .services import PrivateRedis, answers_ping, free_port, require_that

SHARED_HOST, SHARED_PORT = "127.0.0.1", 6379
SHARED_URL = f"redis://{SHARED_HOST}:{SHARED_PORT}/0"
MakeBus = Callable[..., Awaitable[RedisBus]]


def event(seq: int, thread_id: str = "thr_1", data: str | None = None) -> Event:
    return Event(thread_id, seq, "run_1", "TEXT_MESSAGE_CONTENT", data or json.dumps({"delta": f"é {seq} ☃"}))


async def eventually(condition: Callable[[], bool], within: float, what: str) -> float:
    """Poll until `condition` holds; the time it took. Fails after `within` seconds."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            pytest.fail(f"not within {within} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def collect(sub: MemorySubscription, count: int, within: float = 10) -> list[Any]:
    """What `sub` receives until it has at least `count` items."""
    items: list[Any] = []
    deadline = time.monotonic() + within
    while len(items) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"received {len(items)} of {count} items within {within} s")
        items.extend(await sub.get(0.2))
    return items


async def followed(writer: RedisBus, channel: str) -> None:
    """Wait until `writer` knows that another worker follows `channel` (only then does it publish there)."""
    await eventually(
        lambda: writer.followed_elsewhere(channel), 10, f"the announcement of {channel} reaches the writer"
    )


async def pending_get(sub: MemorySubscription, max_wait: float) -> asyncio.Task[list[Any]]:
    """A get() that is waiting (its waiter is set) when this returns."""
    task = asyncio.create_task(sub.get(max_wait))
    await asyncio.sleep(0)
    assert not task.done()
    return task


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid4().hex}:"


@pytest.fixture
async def buses(prefix: str) -> AsyncIterator[MakeBus]:
    """Start RedisBus instances (by default on the shared Redis, with the test's prefix); closed at the end."""
    started: list[RedisBus] = []

    async def make(worker_id: str, *, url: str = SHARED_URL, prefix: str = prefix, **kwargs: Any) -> RedisBus:
        if url == SHARED_URL:
            require_that(answers_ping(SHARED_PORT), f"no Redis at {SHARED_URL}")
        bus = RedisBus(url, prefix=prefix, worker_id=worker_id, **kwargs)
        await bus.start()
        started.append(bus)
        return bus

    yield make
    for bus in started:
        await bus.close()


def test_wire_format_round_trip() -> None:
    tricky = json.dumps({"delta": 'tab\there\nnewline \u2028 \u2029 \x85 naïve 日本 🎉 \\ "q"'}, ensure_ascii=False)
    events = [event(1), event(2, data=tricky), Event("thr_1", 3, "run_2", "RUN_FINISHED", "{}")]
    payload = encode("w1", thread_channel("thr_1"), events)
    assert payload.split("\n")[0] == "w1"
    assert decode(thread_channel("thr_1"), payload.encode()) == events

    feed = [FeedItem(7, "thr_1", "run_1", '{"type":"run.started"}', "alice"), FeedItem(8, "thr_2", None, tricky, "b ☃")]
    assert decode(FEED_CHANNEL, encode("w1", FEED_CHANNEL, feed).encode()) == feed

    with pytest.raises(ValueError):
        encode("w1", thread_channel("thr_1"), [event(4, data='{"a":"raw\ttab"}')])
    with pytest.raises(ValueError):
        decode(thread_channel("thr_1"), b"w1\n1\trun_1\tTYPE")


async def test_events_reach_the_other_worker_in_order_and_the_publisher_once(buses: MakeBus) -> None:
    a, b = await buses("a"), await buses("b")
    channel = thread_channel("thr_1")
    on_a, on_b = a.subscribe(channel, 10_000), b.subscribe(channel, 10_000)
    await followed(a, channel)
    await followed(b, channel)
    events = [event(seq) for seq in range(1, 2001)]
    for start in range(0, 2000, 10):
        a.publish(channel, events[start : start + 10])
        if start % 50 == 0:
            await asyncio.sleep(0)  # the publisher sends what has queued: pipelines of varied sizes
    assert await collect(on_b, 2000) == events

    # b publishes after all of a's messages went through Redis, so an echo of them would reach a first.
    marker = event(2001)
    b.publish(channel, [marker])
    assert await collect(on_a, 2001) == [*events, marker]
    assert await on_b.get(0) == [marker]  # delivered to b's own subscriber at once, not again from Redis


async def test_feed_and_control_cross_workers_and_stay_within_their_prefix(buses: MakeBus) -> None:
    a, b = await buses("a"), await buses("b")
    other_prefix = f"test:{uuid4().hex}:"
    other, other_peer = await buses("c", prefix=other_prefix), await buses("d", prefix=other_prefix)
    feed_b, thread_b = b.subscribe(FEED_CHANNEL, 100), b.subscribe(thread_channel("thr_1"), 100)
    await followed(a, thread_channel("thr_1"))
    feed_other, thread_other = other.subscribe(FEED_CHANNEL, 100), other.subscribe(thread_channel("thr_1"), 100)
    to_a: list[dict[str, Any]] = []
    to_b: list[dict[str, Any]] = []
    to_other: list[dict[str, Any]] = []
    a.on_control(to_a.append)
    b.on_control(to_b.append)
    other.on_control(to_other.append)

    items = [
        FeedItem(1, "thr_1", "run_1", '{"type":"run.started","threadId":"thr_1","runId":"run_1"}', "default"),
        FeedItem(
            2,
            "thr_2",
            None,
            json.dumps({"type": "thread.created", "title": "naïve ☃ \u2028"}, ensure_ascii=False),
            "default",
        ),
    ]
    a.publish(FEED_CHANNEL, items)
    a.publish(thread_channel("thr_1"), [event(1)])
    a.send_control({"type": "run.cancel", "runId": "run_1"})
    assert await collect(feed_b, 2) == items
    assert await collect(thread_b, 1) == [event(1)]
    await eventually(lambda: bool(to_b), 10, "b gets a's control message")
    assert to_b == [{"from": "a", "type": "run.cancel", "runId": "run_1"}]

    b.send_control({"type": "ack"})  # sent after a's own message went round: that one would reach a first
    await eventually(lambda: bool(to_a), 10, "a gets b's control message")
    assert to_a == [{"from": "b", "type": "ack"}]

    # The same barrier on the other prefix: its peer's message comes after anything a's could have.
    other_peer.send_control({"type": "barrier"})
    await eventually(lambda: bool(to_other), 10, "the other prefix gets its peer's message")
    assert to_other == [{"from": "d", "type": "barrier"}]
    assert await feed_other.get(0) == []
    assert await thread_other.get(0) == []


async def test_a_thread_that_no_other_worker_follows_is_not_sent_to_redis(buses: MakeBus, prefix: str) -> None:
    observer = Redis.from_url(SHARED_URL)
    seen = observer.pubsub()
    await seen.psubscribe(prefix + "*")
    await seen.get_message(timeout=5)  # the confirmation
    try:
        a = await buses("a")
        await buses("b")  # a peer, which follows nothing
        on_a = a.subscribe(thread_channel("local"), 10)  # followed on a's own worker only
        a.publish(thread_channel("local"), [event(1, "local")])
        a.publish(FEED_CHANNEL, [FeedItem(1, "local", "run_1", "{}", "default")])  # the feed always goes
        a.send_control({"type": "barrier"})  # after whatever a had sent before
        channels: list[bytes] = []
        while True:
            message = await seen.get_message(timeout=5)
            assert message is not None, f"only {channels} went through redis"
            channels.append(message["channel"])
            if message["channel"].endswith(b"control") and json.loads(message["data"])["type"] == "barrier":
                break
        assert (prefix + FEED_CHANNEL).encode() in channels
        assert not [c for c in channels if b"thread:" in c], channels
        assert await on_a.get(0) == [event(1, "local")]  # delivered locally all the same
    finally:
        await seen.aclose()
        await observer.aclose()


async def test_a_new_follower_elsewhere_is_nudged_to_read_what_was_not_sent(buses: MakeBus) -> None:
    a, b = await buses("a"), await buses("b")
    channel = thread_channel("thr_1")
    on_b = b.subscribe(channel, 10)
    a.publish(channel, [event(1)])  # before b's announcement can have reached a: not sent, committed all the same
    assert not a.followed_elsewhere(channel)
    assert await asyncio.wait_for(on_b.get(30), 10) == []  # nudged at once: its follower reads the store
    await followed(a, channel)
    a.publish(channel, [event(2)])
    assert await collect(on_b, 1) == [event(2)]

    # A nudge for a subscriber that is busy elsewhere (not in get()) is kept for its next get().
    busy = b.subscribe(thread_channel("busy"), 10)
    await followed(a, thread_channel("busy"))
    got: list[dict[str, Any]] = []
    b.on_control(got.append)
    a.send_control({"type": "barrier"})  # sent after the nudge, through the same FIFO publisher
    await eventually(lambda: bool(got), 10, "b gets a's barrier")
    assert await asyncio.wait_for(busy.get(30), 1) == []


async def test_a_late_worker_hears_of_followers_at_once(buses: MakeBus) -> None:
    b = await buses("b")  # renews its announcements every 10 s
    channel = thread_channel("thr_1")
    b.subscribe(channel, 10)
    a = await buses("a")  # started after the announcement: its hello asks for it again
    # Sooner than b's first renewal (10 s after b started) could tell it.
    await eventually(lambda: a.followed_elsewhere(channel), 8, "a hears of b's follower")


async def test_announcements_are_renewed_while_followed_and_expire_after(buses: MakeBus) -> None:
    a, b = await buses("a"), await buses("b", announce_every=0.3)  # b's announcements hold for 0.9 s
    channel = thread_channel("thr_1")
    on_b = b.subscribe(channel, 10)
    await followed(a, channel)
    for _ in range(10):  # still followed two announcement lifetimes later: renewed
        await asyncio.sleep(0.2)
        assert a.followed_elsewhere(channel)
    on_b.close()
    await eventually(lambda: not a.followed_elsewhere(channel), 10, "b's announcement expires once nobody follows")


async def test_a_prefix_with_glob_characters_matches_only_itself(buses: MakeBus) -> None:
    base = f"test:{uuid4().hex}:"
    starred, starred_peer = await buses("a", prefix=base + "a*"), await buses("b", prefix=base + "a*")
    plain, plain_peer = await buses("c", prefix=base + "ab"), await buses("d", prefix=base + "ab")
    on_starred, on_plain = starred.subscribe(thread_channel("x"), 10), plain_peer.subscribe(thread_channel("x"), 10)
    await followed(plain, thread_channel("x"))
    await followed(starred_peer, thread_channel("x"))
    plain.publish(thread_channel("x"), [event(1, "x")])  # its channel matches an unescaped `…a*thread:*`
    assert await collect(on_plain, 1) == [event(1, "x")]
    starred_peer.publish(thread_channel("x"), [event(2, "x")])
    assert await collect(on_starred, 1) == [event(2, "x")]


async def test_only_channels_followed_here_are_decoded(buses: MakeBus, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []

    def counting_decode(channel: str, payload: bytes) -> Any:
        decoded.append(channel)
        return decode(channel, payload)

    monkeypatch.setattr(redis_bus, "decode", counting_decode)
    a, b, c = await buses("a"), await buses("b"), await buses("c")
    on_b, on_c = b.subscribe(thread_channel("followed"), 10), c.subscribe(thread_channel("elsewhere"), 10)
    await followed(a, thread_channel("followed"))
    await followed(a, thread_channel("elsewhere"))
    a.publish(thread_channel("elsewhere"), [event(1, "elsewhere")])  # reaches b too (one pattern), unread there
    a.publish(thread_channel("followed"), [event(1, "followed")])
    assert await collect(on_b, 1) == [event(1, "followed")]
    assert await collect(on_c, 1) == [event(1, "elsewhere")]
    assert sorted(decoded) == [thread_channel("elsewhere"), thread_channel("followed")]  # once each


async def test_a_flooded_subscriber_overflows_as_with_the_memory_bus(buses: MakeBus) -> None:
    a, b = await buses("a"), await buses("b")
    channel = thread_channel("thr_1")
    overflows: list[str] = []
    on_a = a.subscribe(channel, 50, lambda: overflows.append("a"))
    on_b = b.subscribe(channel, 50, lambda: overflows.append("b"))
    await followed(a, channel)
    for start in range(0, 100, 10):
        a.publish(channel, [event(seq) for seq in range(start + 1, start + 11)])
    await eventually(lambda: on_b.overflowed, 10, "b's subscription overflows")
    assert on_a.overflowed
    assert sorted(overflows) == ["a", "b"]
    assert await asyncio.wait_for(on_b.get(30), 1) == []


async def test_dropped_messages_make_the_other_workers_look_again(
    buses: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tether.bus")
    a, b = await buses("a", max_queued=2), await buses("b")
    busy = thread_channel("busy")
    on_busy = b.subscribe(busy, 100)
    quiet = b.subscribe(thread_channel("quiet"), 100)
    await followed(a, busy)
    await followed(a, thread_channel("quiet"))
    await asyncio.wait_for(quiet.get(30), 10)  # a's nudge for its new follower
    waiting = await pending_get(quiet, 30)

    for seq in range(1, 6):
        a.publish(busy, [event(seq, "busy")])  # before the publisher runs: the queue keeps the last two
    assert await asyncio.wait_for(waiting, 10) == []  # woken by a's resync notice, long before 30 s
    assert await collect(on_busy, 2) == [event(4, "busy"), event(5, "busy")]

    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "worker a: dropping" in warned[0] and "queue is full" in warned[0]
    await eventually(
        lambda: any("worker a: publishing to redis again" in r.getMessage() for r in caplog.records),
        10,
        "a logs that it publishes again",
    )


async def test_an_item_that_cannot_be_framed_is_delivered_locally_and_resynced(buses: MakeBus) -> None:
    a, b = await buses("a"), await buses("b")
    channel = thread_channel("thr_1")
    on_a, on_b = a.subscribe(channel, 10), b.subscribe(channel, 10)
    await followed(a, channel)
    await asyncio.wait_for(on_b.get(30), 10)  # a's nudge for its new follower
    waiting = await pending_get(on_b, 30)
    bad = event(1, data='{"raw":"\t"}')  # a raw tab, as no JSON encoder would write
    a.publish(channel, [bad])  # does not raise
    assert await on_a.get(0) == [bad]
    assert await asyncio.wait_for(waiting, 10) == []  # not delivered wrong, but woken to look in the database


async def test_redis_restart(private_redis: PrivateRedis, buses: MakeBus, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tether.bus")
    await private_redis.start()
    a, b = await buses("a", url=private_redis.url), await buses("b", url=private_redis.url)
    channel = thread_channel("thr_1")
    on_a, on_b = a.subscribe(thread_channel("quiet"), 100), b.subscribe(channel, 10_000)
    b.subscribe(thread_channel("outage"), 10_000)  # so that a queues what it publishes there
    for writer, followed_channel in ((a, channel), (a, thread_channel("outage")), (b, thread_channel("quiet"))):
        await followed(writer, followed_channel)
    a.publish(channel, [event(1)])
    assert await collect(on_b, 1) == [event(1)]
    waiting = await pending_get(on_b, 30)

    private_redis.kill()
    await eventually(lambda: not a.healthy and not b.healthy, 2, "both buses notice the lost connection")
    assert await asyncio.wait_for(waiting, 1) == []  # woken at once, to fall back to the database

    started = time.perf_counter()
    for seq in range(2, 2002):
        a.publish(thread_channel("outage"), [event(seq, "outage")])  # neither blocks nor raises
    assert time.perf_counter() - started < 1
    assert await on_a.get(0) == []  # the lost connection's wake-up, kept for it since it was not waiting
    # Pending while Redis is down; only the reconnection can wake them (nothing is published on these).
    waiting_a, waiting_b = await pending_get(on_a, 30), await pending_get(on_b, 30)

    await private_redis.start()
    await eventually(lambda: a.healthy and b.healthy, 10, "both buses reconnect")
    assert await asyncio.wait_for(waiting_a, 5) == []
    assert await asyncio.wait_for(waiting_b, 5) == []

    a.publish(channel, [event(2002)])
    assert await collect(on_b, 1) == [event(2002)]
    for worker in "ab":
        messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"worker {worker}: redis")]
        assert sum("unreachable" in m and "polling the database" in m for m in messages) == 1, messages
        assert sum("reachable again" in m for m in messages) == 1, messages


async def test_a_hung_redis_is_noticed_without_traffic(private_redis: PrivateRedis, buses: MakeBus) -> None:
    await private_redis.start()
    a = await buses("a", url=private_redis.url)
    # Silence alone is not an outage: an idle, answering server keeps the bus healthy (its PINGs get replies).
    quiet_until = time.monotonic() + 2.5 * a.DEAD_AFTER
    while time.monotonic() < quiet_until:
        assert a.healthy
        await asyncio.sleep(0.05)
    private_redis.pause()  # the connection stays open, but nothing answers: only the PINGs can tell
    took = await eventually(lambda: not a.healthy, 5, "the bus notices a server that stopped answering")
    assert took < 3
    private_redis.resume()
    await eventually(lambda: a.healthy, 15, "the bus reconnects once the server answers again")


async def test_start_without_redis_fails_promptly_and_says_where() -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    bus = RedisBus(url, prefix="test:", worker_id="a")
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as raised:
        await bus.start()
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert url.replace("secret", "***") in message
    assert "secret" not in message
    await bus.close()


async def test_close_leaves_no_task_and_no_open_connection() -> None:
    require_that(answers_ping(SHARED_PORT), f"no Redis at {SHARED_URL}")
    worker_id = f"close-{uuid4().hex}"
    observer = Redis.from_url(SHARED_URL)
    gc.collect()  # earlier tests' garbage in this process: its warnings are not this bus's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bus = RedisBus(SHARED_URL, prefix=f"test:{uuid4().hex}:", worker_id=worker_id)
        await bus.start()
        bus.publish(thread_channel("thr_1"), [event(1)])
        bus.send_control({"type": "bye"})
        for _ in range(250):  # the publisher connects when it first has something to send
            if len(await _clients_named(observer, f"tether:{worker_id}")) >= 2:
                break
            await asyncio.sleep(0.02)
        assert len(await _clients_named(observer, f"tether:{worker_id}")) == 2  # pub/sub and publisher
        await bus.close()
        await bus.close()  # idempotent
        assert not bus.healthy
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
        del bus
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    names: list[str] = []

    async def poll() -> None:
        names[:] = await _clients_named(observer, f"tether:{worker_id}")

    deadline = time.monotonic() + 5
    await poll()
    while names and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        await poll()
    await observer.aclose()
    assert names == [], "Redis still sees the closed bus's connections"


async def _clients_named(client: Redis, name: str) -> list[str]:
    return [c["name"] for c in await client.client_list() if c.get("name") == name]


def test_worker_ids_are_single_words() -> None:
    with pytest.raises(ValueError):
        RedisBus(SHARED_URL, prefix="test:", worker_id="two words")
    with pytest.raises(ValueError):
        RedisBus(SHARED_URL, prefix="test:", worker_id="")
    with pytest.raises(ValueError):
        RedisBus(SHARED_URL, prefix="test:", worker_id="wörker")
