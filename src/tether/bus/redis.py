"""The Redis bus: live fan-out between worker processes that share one database.

The database is the source of truth: every event has a gap-free per-thread seq and every feed
notice a gap-free global seq, and a follower that misses something reads it from the store. So
Redis only has to be fast and never wrong; it may be lossy. That is why this is plain pub/sub
(Redis Streams would duplicate the database's job) and why nothing here ever retries a message.

Each worker holds one pub/sub connection that PSUBSCRIBEs to every thread channel with a single
pattern and SUBSCRIBEs to the feed and the control channel. A new follower therefore costs no
round trip and cannot race its own subscription against its replay from the database: the
worker already receives everything, and it decodes only what some local subscription follows.

Within a process, delivery goes through a MemoryBus at once; Redis carries the same items to the
other workers, and a worker ignores its own messages when they come back.

A thread's events go to Redis only while another worker follows that thread (with one worker, or
when every reader is on the writer's worker, Redis costs nothing). Each worker announces the thread
channels its clients follow on the control channel: when a channel gains its first local follower,
every ANNOUNCE_EVERY seconds after that, and when another worker says hello (at its start and after
each reconnect). An announcement holds for three intervals. A follower never waits on this: it
reads the store after subscribing, and a worker that learns of a new follower sends that channel a
nudge (an empty message) through its one FIFO publisher, after anything it had published before;
the nudge makes the follower read the store again, and so finds any event that was committed before
the announcement arrived and therefore not published. After the nudge, every commit is published.

Losses are made visible, so that followers re-read the store instead of waiting for a next item
that may never come:
- while the pub/sub connection is down, `healthy` is False; when it goes down and again when it is
  back (re-subscribed), every local subscription is woken (its pending get() returns early);
- when this worker's publisher drops messages (Redis down or too slow, its queue full), it sends a
  resync notice on the control channel once it can publish again, and every other worker wakes
  its subscriptions.

Health is checked with a PING on the pub/sub connection whenever it has been quiet for
PING_INTERVAL, and the connection counts as lost when nothing at all (no message, no pong) has
come for DEAD_AFTER. redis-py's health_check_interval is not used: it sends PINGs but never fails
when the reply does not come, so a hung server or a silent network cut would go unnoticed (a
killed server is noticed anyway: its socket is closed). Its connection retries are turned off
too, since a silent reconnect would re-subscribe and hide the gap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tether.bus import FEED_CHANNEL
from tether.bus.memory import MemoryBus, MemorySubscription
from tether.events import Event, FeedItem

log = logging.getLogger("tether.bus")

THREAD_PREFIX = "thread:"
CONTROL_CHANNEL = "control"
RESYNC = "tether.bus.resync"
"""The `type` of the control message a worker sends after it dropped messages (never given to handlers)."""
FOLLOW = "tether.bus.follow"
"""The `type` of an announcement: "channels" that the sender's clients follow, for "ttl" seconds."""
HELLO = "tether.bus.hello"
"""The `type` of the message by which a worker that (re)connected asks the others to announce."""


class RedisUnavailable(RuntimeError):
    """Redis could not be reached when the bus started."""


class RedisBus:
    """Live delivery through Redis pub/sub, for several workers sharing one database.

    `prefix` is put before every Redis channel name: pub/sub is not scoped by database number,
    so it is what keeps deployments (and tests) apart. `worker_id` must be unique per worker.
    Use it from one event loop: publish() and send_control() are plain calls on that loop.
    `max_queued` bounds the messages waiting for Redis; beyond it the oldest are dropped.
    """

    CONNECT_TIMEOUT = 3.0
    """For connecting and subscribing, at start and on each reconnect attempt."""
    COMMAND_TIMEOUT = 5.0
    """For a PUBLISH (or a pipeline of them) to be answered."""
    PING_INTERVAL = 0.25
    """A quiet pub/sub connection is PINGed this often."""
    DEAD_AFTER = 1.0
    """A pub/sub connection that has sent nothing (not even a pong) for this long is lost."""
    BACKOFF_MIN = 0.1
    BACKOFF_MAX = 2.0
    STABLE_AFTER = 10.0
    """A connection that lasted this long resets the reconnect backoff (a flapping one does not)."""
    MAX_BATCH = 1_000
    FLUSH_TIMEOUT = 1.0
    """How long close() lets the publisher send what is queued."""
    CHANNELS_PER_ANNOUNCEMENT = 500

    def __init__(
        self, url: str, *, prefix: str, worker_id: str, max_queued: int = 10_000, announce_every: float = 10.0
    ) -> None:
        if not worker_id or not all("!" <= c <= "~" for c in worker_id):
            # It ends the payload's first line, and Redis accepts only such names for CLIENT SETNAME.
            raise ValueError(f"worker_id must be printable ASCII without spaces, not {worker_id!r}")
        self.healthy = False
        """True while the pub/sub connection is up and subscribed; False while live delivery from
        other workers may be missing items."""
        self._worker_id = worker_id
        self._where = _redact(url)
        self._prefix = prefix
        self._prefix_len = len(prefix.encode())
        self._nudge = worker_id + "\n"
        """A payload of no items: the origin line alone (see the wire format below)."""
        self._own = self._nudge.encode()
        self._thread_pattern = _glob_escape(prefix) + THREAD_PREFIX + "*"
        self._feed_key = prefix + FEED_CHANNEL
        self._control_key = prefix + CONTROL_CHANNEL
        self._feed_key_b = self._feed_key.encode()
        self._control_key_b = self._control_key.encode()
        self._resync = json.dumps({"from": worker_id, "type": RESYNC})
        self._hello = json.dumps({"from": worker_id, "type": HELLO})
        self._announce_every = announce_every
        self._followed_elsewhere: dict[str, dict[str, float]] = {}
        """Thread channel -> the other workers that follow it -> when their announcement expires."""
        self._memory = MemoryBus()
        self._handlers: list[Callable[[dict[str, Any]], None]] = []
        self._queue: deque[tuple[str, str]] = deque(maxlen=max_queued)
        self._queued = asyncio.Event()
        self._resync_needed = False
        self._troubled = False
        """The publisher has dropped messages since it last caught up (warned once, at the start)."""
        self._dropped = 0
        self._client = Redis.from_url(
            url,
            socket_connect_timeout=self.CONNECT_TIMEOUT,
            socket_timeout=self.COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 0, supported_errors=()),
            client_name=f"tether:{worker_id}",
        )
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._announcer: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Connect and subscribe; returns once Redis has confirmed the subscriptions."""
        if self._reader is not None or self._closed:
            raise RuntimeError("RedisBus.start() may be called once, before close()")
        try:
            self._pubsub = await self._subscribe()
        except Exception as error:
            await self._client.connection_pool.disconnect()
            raise RedisUnavailable(f"Redis at {self._where} is unavailable: {_reason(error)}") from error
        self.healthy = True
        self._enqueue(self._control_key, self._hello)
        self._reader = asyncio.create_task(self._read_forever(), name=f"tether-bus-reader:{self._worker_id}")
        self._publisher = asyncio.create_task(self._publish_forever(), name=f"tether-bus-publisher:{self._worker_id}")
        self._announcer = asyncio.create_task(self._announce_forever(), name=f"tether-bus-announcer:{self._worker_id}")
        log.info("worker %s: live delivery through redis at %s", self._worker_id, self._where)

    async def close(self) -> None:
        """Send what is queued (for up to FLUSH_TIMEOUT), stop both tasks, close the connections."""
        if self._closed:
            return
        self._closed = True
        self.healthy = False
        self._queued.set()
        if self._publisher is not None:
            await asyncio.wait({self._publisher}, timeout=self.FLUSH_TIMEOUT)
            await _stop(self._publisher)
        for task in (self._reader, self._announcer):
            if task is not None:
                await _stop(task)
        await self._discard_pubsub()
        await self._client.aclose()

    def subscribe(
        self, channel: str, maxsize: int, on_overflow: Callable[[], None] | None = None
    ) -> MemorySubscription:
        first = channel.startswith(THREAD_PREFIX) and not self._memory.audience(channel)
        subscription = self._memory.subscribe(channel, maxsize, on_overflow)
        if first:
            self._announce([channel])
        return subscription

    def audience(self, channel: str) -> int:
        return self._memory.audience(channel)

    def publish(self, channel: str, items: list[Event] | list[FeedItem]) -> None:
        """Deliver to local subscribers now, and queue the items for the other workers."""
        self._memory.publish(channel, items)
        if not items or self._closed or not (channel == FEED_CHANNEL or self.followed_elsewhere(channel)):
            return
        try:
            payload = encode(self._worker_id, channel, items)
        except Exception:
            # Never raise into the journal: local delivery happened; the other workers will resync.
            log.exception("worker %s: cannot send %d items of %s to redis", self._worker_id, len(items), channel)
            self._drop(1, "an item cannot be framed")
            return
        self._enqueue(self._prefix + channel, payload)

    def send_control(self, message: dict[str, Any]) -> None:
        """Send `message` to every other worker, best effort; TypeError if it is not JSON-serialisable."""
        if "from" in message:
            raise ValueError('a control message may not set "from": the bus sets it')
        self._enqueue(self._control_key, json.dumps({"from": self._worker_id, **message}))

    def on_control(self, handler: Callable[[dict[str, Any]], None]) -> None:
        self._handlers.append(handler)

    def followed_elsewhere(self, channel: str) -> bool:
        """Whether another worker has announced, and not let expire, that its clients follow `channel`."""
        followers = self._followed_elsewhere.get(channel)
        if not followers:
            return False
        if max(followers.values()) > time.monotonic():
            return True
        del self._followed_elsewhere[channel]
        return False

    # Presence

    def _announce(self, channels: list[str]) -> None:
        ttl = 3 * self._announce_every
        step = self.CHANNELS_PER_ANNOUNCEMENT
        for start in range(0, len(channels), step):
            chunk = channels[start : start + step]
            self._enqueue(
                self._control_key, json.dumps({"from": self._worker_id, "type": FOLLOW, "channels": chunk, "ttl": ttl})
            )

    def _announce_all(self) -> None:
        self._announce([channel for channel in self._memory.channels() if channel.startswith(THREAD_PREFIX)])

    async def _announce_forever(self) -> None:
        while True:
            await asyncio.sleep(self._announce_every)
            self._announce_all()
            for channel in list(self._followed_elsewhere):
                self.followed_elsewhere(channel)  # forgets the channel if every announcement expired

    def _on_follow(self, worker: str, channels: list[str], ttl: float) -> None:
        now = time.monotonic()
        for channel in channels:
            if not channel.startswith(THREAD_PREFIX):
                continue
            followers = self._followed_elsewhere.setdefault(channel, {})
            if followers.get(worker, 0.0) <= now:
                # New to us: what we committed before now was not published; the nudge, sent after it
                # all, makes that worker's followers read it from the store.
                self._enqueue(self._prefix + channel, self._nudge)
            followers[worker] = now + ttl

    # Publishing

    def _enqueue(self, key: str, payload: str) -> None:
        if self._closed:
            return
        queue = self._queue
        if len(queue) == queue.maxlen:
            self._drop(1, "redis is too slow or unreachable and the publish queue is full")  # the oldest goes
        queue.append((key, payload))
        self._queued.set()

    def _drop(self, count: int, reason: str) -> None:
        self._dropped += count
        self._resync_needed = True
        self._queued.set()  # the resync notice is due even if nothing else is published
        if not self._troubled:
            self._troubled = True
            log.warning(
                "worker %s: dropping messages for redis at %s (%s); other workers will re-read the database",
                self._worker_id,
                self._where,
                reason,
            )

    async def _publish_forever(self) -> None:
        """The one publisher: FIFO, so each channel's messages keep their order."""
        queue = self._queue
        backoff = self.BACKOFF_MIN
        while True:
            if not queue and not self._resync_needed:
                if self._closed:
                    return
                self._queued.clear()
                await self._queued.wait()
                continue
            batch = [queue.popleft() for _ in range(min(len(queue), self.MAX_BATCH))]
            count = len(batch)
            if self._resync_needed:
                self._resync_needed = False
                batch.insert(0, (self._control_key, self._resync))
                self._announce_all()  # in case an announcement was among what was dropped
            try:
                await self._send(batch)
            except Exception as error:
                # At most once: what was in flight is dropped, never sent twice.
                self._drop(count, _reason(error))
                if self._closed:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.BACKOFF_MAX)
                continue
            backoff = self.BACKOFF_MIN
            if self._troubled and not queue and not self._resync_needed:
                log.info(
                    "worker %s: publishing to redis again; %d messages were dropped",
                    self._worker_id,
                    self._dropped,
                )
                self._troubled = False
                self._dropped = 0

    async def _send(self, batch: list[tuple[str, str]]) -> None:
        if len(batch) == 1:
            await self._client.publish(*batch[0])
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for key, payload in batch:
                pipe.publish(key, payload)
            await pipe.execute()

    # Receiving

    async def _subscribe(self) -> PubSub:
        pubsub = self._client.pubsub()
        try:
            async with asyncio.timeout(self.CONNECT_TIMEOUT):
                await pubsub.psubscribe(self._thread_pattern)
                await pubsub.subscribe(self._feed_key, self._control_key)
                confirmed = 0
                while confirmed < 3:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    if message["type"] in ("psubscribe", "subscribe"):
                        confirmed += 1
                    else:
                        self._dispatch(message)
        except BaseException:
            await _aclose_quietly(pubsub)
            raise
        return pubsub

    async def _read_forever(self) -> None:
        """The one reader: deliver what comes; on a lost connection, reconnect with backoff."""
        loop = asyncio.get_running_loop()
        backoff = self.BACKOFF_MIN
        while True:
            connected_at = loop.time()
            reason = "unknown"
            assert self._pubsub is not None
            try:
                await self._listen(self._pubsub)
            except Exception as error:
                reason = _reason(error)
            self.healthy = False
            log.warning(
                "worker %s: redis at %s unreachable (%s); live delivery falls back to polling the database",
                self._worker_id,
                self._where,
                reason,
            )
            self._memory.wake_all()
            await self._discard_pubsub()
            if loop.time() - connected_at > self.STABLE_AFTER:
                backoff = self.BACKOFF_MIN
            while True:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.BACKOFF_MAX)
                try:
                    self._pubsub = await self._subscribe()
                    break
                except Exception as error:
                    log.debug("worker %s: redis still unreachable: %s", self._worker_id, _reason(error))
            # Idle publishing connections may date from before the outage (a restarted server closed them):
            # each would cost one dropped message to find out. Drop them now; in-use ones are left alone.
            await self._client.connection_pool.disconnect(inuse_connections=False)
            self.healthy = True
            self._enqueue(self._control_key, self._hello)  # announcements sent meanwhile were lost
            self._announce_all()
            log.info("worker %s: redis at %s reachable again; live delivery resumed", self._worker_id, self._where)
            self._memory.wake_all()

    async def _listen(self, pubsub: PubSub) -> None:
        """Read until the connection fails or stays silent for DEAD_AFTER despite PINGs."""
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        while True:
            message = await pubsub.get_message(timeout=self.PING_INTERVAL)
            now = loop.time()
            if message is None and now - heard > self.DEAD_AFTER:
                # After a stalled event loop a timeout can win the race against data that has
                # already arrived: look once more, briefly, before giving up on the connection.
                message = await pubsub.get_message(timeout=0.05)
                if message is None:
                    raise TimeoutError(f"no reply to PING for {now - heard:.1f} s")
            if message is not None:
                heard = now
                self._dispatch(message)
            elif now - pinged >= self.PING_INTERVAL:
                pinged = now
                await pubsub.ping()

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        try:
            if kind == "pmessage":
                self._deliver(message["channel"], message["data"])
            elif kind == "message":
                if message["channel"] == self._control_key_b:
                    self._on_control_message(message["data"])
                elif message["channel"] == self._feed_key_b:
                    self._deliver(message["channel"], message["data"])
        except Exception:
            log.exception("worker %s: dropped a malformed message on %r", self._worker_id, message.get("channel"))

    def _deliver(self, key: bytes, payload: bytes) -> None:
        if payload.startswith(self._own):
            return  # ours: delivered locally when published
        channel = key[self._prefix_len :].decode()
        if not self._memory.audience(channel):
            return
        if payload.endswith(b"\n"):
            self._memory.wake(channel)  # a nudge: look in the store
        else:
            self._memory.publish(channel, decode(channel, payload))

    def _on_control_message(self, payload: bytes) -> None:
        message = json.loads(payload)
        if not isinstance(message, dict):
            raise ValueError(f"a control message must be a JSON object, not {payload[:100]!r}")
        if message.get("from") == self._worker_id:
            return
        kind = message.get("type")
        if kind == RESYNC:
            self._memory.wake_all()
            return
        if kind == FOLLOW:
            self._on_follow(message["from"], message["channels"], float(message["ttl"]))
            return
        if kind == HELLO:
            self._announce_all()
            return
        for handler in list(self._handlers):
            try:
                handler(message)
            except Exception:
                log.exception("worker %s: control handler %r failed on %r", self._worker_id, handler, message)

    async def _discard_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await _aclose_quietly(pubsub)


# The wire format. A payload is the origin worker's id, then one line per item, its fields separated
# by tabs: an Event as seq, run_id, type, data (its thread_id is in the channel name); a FeedItem as
# seq, thread_id, run_id ("" for None), user_id, data. `data` is compact JSON text, and JSON escapes every
# control character inside strings, so it never holds a raw tab or newline; ids and event types
# are plain words. encode() checks the counts anyway, so a stray tab can never shift a field.
# A nudge is the origin line alone ("w1\n"): no item payload ends with a newline.


def encode(origin: str, channel: str, items: list[Event] | list[FeedItem]) -> str:
    """The payload for `items` published on `channel` by worker `origin`; ValueError if unframeable."""
    if channel == FEED_CHANNEL:
        lines = [f"{i.seq}\t{i.thread_id}\t{i.run_id or ''}\t{i.user_id}\t{i.data}" for i in items]
        tabs = 4
    else:
        lines = [f"{e.seq}\t{e.run_id}\t{e.type}\t{e.data}" for e in items]
        tabs = 3
    payload = origin + "\n" + "\n".join(lines)
    if payload.count("\n") != len(items) or payload.count("\t") != tabs * len(items):
        raise ValueError("a field holds a raw tab or newline")
    return payload


def decode(channel: str, payload: bytes) -> list[Event] | list[FeedItem]:
    """The items of a payload received on `channel` (a Tether channel name); ValueError if malformed."""
    lines = payload.decode().split("\n")[1:]  # not splitlines(): JSON may hold a raw U+2028
    if channel == FEED_CHANNEL:
        feed: list[FeedItem] = []
        for line in lines:
            seq, thread_id, run_id, user_id, data = line.split("\t")
            feed.append(FeedItem(int(seq), thread_id, run_id or None, data, user_id))
        return feed
    thread_id = channel.removeprefix(THREAD_PREFIX)
    events: list[Event] = []
    for line in lines:
        seq, run_id, type_, data = line.split("\t")
        events.append(Event(thread_id, int(seq), run_id, type_, data))
    return events


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


async def _aclose_quietly(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()
    except Exception as error:
        log.debug("closing a redis pub/sub connection: %s", _reason(error))


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis glob pattern (a prefix with * or ? must not match others)."""
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)
