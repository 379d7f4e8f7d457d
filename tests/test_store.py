"""The store on both databases, through its own code: fencing, the run queue, one live run per
thread, checkpoints stored as deltas (and the migration to them), and the feed's order with
concurrent writers."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.app import open_store
from tether.config import Settings
from tether.events import Event
from tether.store import DEFAULT_USER, Checkpoint, FeedNotice, Lease, LeaseLost, Run, Store, Thread, WriteBatch
from tether.store.db import Execute
from tether.store.migrations import MIGRATIONS
from tether.store.sqlite import SQLiteStore


@pytest.fixture
async def open_stores(tmp_path: Path, engines: Callable[[Path], dict[str, Any]]) -> AsyncIterator:
    """open_stores(n) → n stores on one database, as n workers would have (SQLite: one)."""
    opened: list[Store] = []
    data_dir = tmp_path / "data"

    async def make(n: int = 1) -> list[Store]:
        for _ in range(n):
            store = open_store(Settings(data_dir=data_dir, **engines(data_dir)))
            await store.open()
            opened.append(store)
        return opened[-n:]

    yield make
    for store in opened:
        await store.close()


async def a_thread(store: Store) -> Thread:
    thread = Thread(id=f"thr_{uuid.uuid4().hex}", title=None, created_at=time.time(), updated_at=time.time())
    await store.create_thread(thread)
    return thread


def a_run(thread: Thread) -> Run:
    return Run(
        id=f"run_{uuid.uuid4().hex}",
        thread_id=thread.id,
        status="queued",
        input="hi",
        multitask="reject",
        model=None,
        created_at=time.time(),
    )


async def test_a_commit_under_a_lost_lease_writes_nothing(open_stores):
    (store,) = await open_stores()
    thread = await a_thread(store)
    run = a_run(thread)
    assert await store.create_run(run) is None
    (first,) = await store.claim_runs("w1", 30, 10)
    assert first.mode == "start" and first.run.worker == "w1"
    await store.expire_leases("nobody")  # as if w1 froze past its lease
    (second,) = await store.claim_runs("w2", 30, 10)
    assert second.mode == "takeover" and second.previous_worker == "w1"
    assert second.run.lease_epoch == first.run.lease_epoch + 1
    stale = WriteBatch(
        events=[Event(thread.id, 1, run.id, "RUN_STARTED", "{}")],
        run_updates=[(run.id, {"status": "completed"})],
        leases={run.id: Lease(run.id, "w1", first.run.lease_epoch)},
    )
    with pytest.raises(LeaseLost) as lost:
        await store.write(stale)
    assert lost.value.run_ids == [run.id]
    assert await store.read_events(thread.id, 0, 10) == []
    assert (await store.get_run(run.id)).status == "running"
    stale.leases = {run.id: Lease(run.id, "w2", second.run.lease_epoch)}
    await store.write(stale)
    assert [e.seq for e in await store.read_events(thread.id, 0, 10)] == [1]


async def test_the_queue_gives_each_thread_one_live_run_in_order(open_stores):
    (store,) = await open_stores()
    thread = await a_thread(store)
    first, second = a_run(thread), a_run(thread)
    assert await store.create_run(first) is None
    assert await store.create_run(second) is None
    blocked = a_run(thread)
    assert (await store.create_run(blocked, unless_active=True)).id == first.id  # reject: nothing inserted
    claims = await store.claim_runs("w1", 30, 10)
    assert [c.run.id for c in claims] == [first.id]  # the second waits for its turn
    assert await store.claim_runs("w2", 30, 10) == []
    assert [r.ordinal for r in await store.list_runs(thread.id)] == [1, 2]
    await store.write(WriteBatch(run_updates=[(first.id, {"status": "completed", "worker": None})]))
    assert [c.run.id for c in await store.claim_runs("w2", 30, 10)] == [second.id]


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
async def test_concurrent_claimers_never_claim_one_run_twice(open_stores):
    stores = await open_stores(4)
    threads = [await a_thread(stores[0]) for _ in range(30)]
    for thread in threads:
        await stores[0].create_run(a_run(thread))
    claimed = await asyncio.gather(*[store.claim_runs(f"w{i}", 30, 8) for i, store in enumerate(stores)])
    ids = [c.run.id for claims in claimed for c in claims]
    assert len(ids) == len(set(ids)) == 30


def history(n: int) -> list[bytes]:
    return [json.dumps({"kind": "request", "n": i, "text": "x" * 200}).encode() for i in range(n)]


async def test_checkpoints_store_what_they_add_and_read_back_whole(open_stores):
    (store,) = await open_stores()
    thread = await a_thread(store)
    previous: list[bytes] = []
    shapes = [history(n) for n in range(1, 200, 3)]
    shapes.insert(30, shapes[29][:10])  # a rewind (retry) in the middle
    for messages in shapes:
        batch = WriteBatch(checkpoints=[Checkpoint(thread.id, None, messages, time.time(), follows=previous)])
        await store.write(batch)
        previous = messages
        latest = await store.latest_checkpoint(thread.id)
        assert latest is not None and latest.messages == messages
        read = await store.get_checkpoint(latest.id)  # from the database, not the store's memory
        assert read is not None and read.messages == messages
    stored = sum(len(m) for m in shapes[-1])
    on_disk = await stored_checkpoint_bytes(store)
    assert on_disk < 3 * stored, f"{on_disk} bytes of checkpoints for a {stored}-byte history"
    first = await store.get_checkpoint(latest.id - len(shapes) + 1)
    assert first is not None and first.messages == shapes[0]


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
async def test_a_worker_reads_the_checkpoint_another_worker_wrote_after_its_own(open_stores):
    here, there = await open_stores(2)
    thread = await a_thread(here)
    mine = history(5)
    await here.write(WriteBatch(checkpoints=[Checkpoint(thread.id, None, mine, time.time())]))
    assert (await here.latest_checkpoint(thread.id)).messages == mine  # kept in memory from here on
    theirs = history(8)
    await there.write(WriteBatch(checkpoints=[Checkpoint(thread.id, None, theirs, time.time(), follows=mine)]))
    assert (await here.latest_checkpoint(thread.id)).messages == theirs
    assert (await here.thread_snapshot(thread.id)).checkpoint.messages == theirs
    rewound = mine[:2]
    await here.write(WriteBatch(checkpoints=[Checkpoint(thread.id, None, rewound, time.time(), follows=theirs)]))
    assert (await there.latest_checkpoint(thread.id)).messages == rewound
    await there.delete_thread(thread.id)
    assert await here.latest_checkpoint(thread.id) is None


async def test_a_kept_checkpoint_is_a_copy_of_its_own(open_stores):
    (store,) = await open_stores()
    thread = await a_thread(store)
    messages = history(3)
    await store.write(WriteBatch(checkpoints=[Checkpoint(thread.id, None, messages, time.time())]))
    messages.append(b"changed by its writer")
    first = await store.latest_checkpoint(thread.id)
    first.messages.clear()
    assert (await store.latest_checkpoint(thread.id)).messages == history(3)


def said(*texts: str) -> list[bytes]:
    """A history of user prompts and model answers, in turn, as checkpoints store it."""
    return [
        json.dumps(
            {"parts": [{"content": text, "part_kind": "user-prompt"}], "kind": "request"}
            if i % 2 == 0
            else {"parts": [{"content": text, "part_kind": "text"}], "kind": "response"},
            separators=(",", ":"),
        ).encode()
        for i, text in enumerate(texts)
    ]


async def test_the_search_index_follows_each_thread_s_latest_history(open_stores):
    (store,) = await open_stores()
    thread, other = await a_thread(store), await a_thread(store)
    await store.update_thread(thread.id, title="Quarterly café")
    long_answer = " ".join(f"word{i}" for i in range(5000))  # indexed in rows of 2,000 words
    shapes = [
        said("alpha question"),
        said("alpha question", "beta answer"),
        said("alpha question", "beta answer", "delta please", long_answer),
        said("alpha question", "gamma answer"),  # a rewind: what came after the first message goes
    ]
    previous: list[bytes] = []
    found: list[dict[str, list[str]]] = []
    for messages in shapes:
        checkpoint = Checkpoint(thread.id, None, messages, time.time(), follows=previous)
        await store.write(WriteBatch(checkpoints=[checkpoint]))
        previous = messages
        words = ("alpha", "beta", "gamma", "delta", "word4999", "word0 word1", "quarterly caf", "ALPHA QUEST")
        found.append({w: [t.id for t in await store.list_threads(DEFAULT_USER, 10, query=w)] for w in words})
    mine = [thread.id]
    assert found[0] == {"alpha": mine, "beta": [], "gamma": [], "delta": [], "word4999": [], "word0 word1": [],
                        "quarterly caf": mine, "ALPHA QUEST": mine}  # fmt: skip
    assert found[1]["beta"] == mine
    assert (found[2]["delta"], found[2]["word4999"], found[2]["word0 word1"]) == (mine, mine, mine)
    assert found[3] == {**found[0], "gamma": mine}
    await store.update_thread(thread.id, title="Renamed")
    assert await store.list_threads(DEFAULT_USER, 10, query="quarterly") == []
    assert [t.id for t in await store.list_threads(DEFAULT_USER, 10, query="renamed")] == mine
    await store.update_thread(other.id, title="alpha too")
    assert {t.id for t in await store.list_threads(DEFAULT_USER, 10, query="alpha")} == {thread.id, other.id}
    await store.delete_thread(thread.id)
    assert [t.id for t in await store.list_threads(DEFAULT_USER, 10, query="alpha")] == [other.id]
    rows = await store.db.fetch("SELECT COUNT(*) FROM thread_text WHERE thread_id = ?", (thread.id,))  # type: ignore[attr-defined]
    assert rows[0][0] == 0


async def stored_checkpoint_bytes(store: Store) -> int:
    rows = await store.db.fetch("SELECT SUM(LENGTH(messages)) FROM checkpoints")  # type: ignore[attr-defined]
    return rows[0][0]


@pytest.mark.sqlite_only
async def test_a_version_3_database_is_migrated_with_its_checkpoints_as_deltas(tmp_path: Path):
    path = tmp_path / "tether.db"
    full = [
        [{"parts": [{"content": f"m{i}", "part_kind": "user-prompt"}], "kind": "request"} for i in range(n)]
        for n in (1, 2, 3, 2)
    ]
    with sqlite3.connect(path) as db:
        for migration in MIGRATIONS[:3]:
            db.executescript(migration.sqlite)
        db.execute("PRAGMA user_version = 3")
        db.execute("INSERT INTO threads (id, created_at, updated_at) VALUES ('t', 1, 1)")
        db.execute(
            "INSERT INTO runs (id, thread_id, status, input, multitask, created_at) "
            "VALUES ('r1', 't', 'completed', 'a', 'reject', 1), ('r2', 't', 'running', 'b', 'reject', 2)"
        )
        db.execute("INSERT INTO feed (seq, thread_id, data) VALUES (1, 't', '{}'), (2, 't', '{}')")
        for i, messages in enumerate(full):
            db.execute(
                "INSERT INTO checkpoints (thread_id, run_id, created_at, messages) VALUES ('t', 'r1', ?, ?)",
                (i, json.dumps(messages).encode()),
            )
    store = SQLiteStore(path)
    await store.open()
    try:
        latest = await store.latest_checkpoint("t")
        assert latest is not None and json.loads(latest.json()) == full[-1]
        for offset, messages in enumerate(full):
            assert json.loads((await store.get_checkpoint(offset + 1)).json()) == messages
        assert [r.ordinal for r in await store.list_runs("t")] == [1, 2]
        assert await store.last_feed_seq() == 2
        (claim,) = await store.claim_runs("w", 10, 10)  # left running by a dead process: recovered
        assert claim.run.id == "r2" and claim.mode == "takeover"
        # Made before users and agents existed: the thread and its feed belong to the user "default",
        # and the thread is answered by the server's first agent (no name stored).
        (thread,) = await store.list_threads(DEFAULT_USER, 10)
        assert (thread.id, thread.user_id, thread.agent) == ("t", "default", None)
        assert {item.user_id for item in await store.read_feed(0, 10)} == {"default"}
        # Made before the search index existed: indexed by the migration, from its latest history.
        assert [t.id for t in await store.list_threads(DEFAULT_USER, 10, query="m1")] == ["t"]
        assert await store.list_threads(DEFAULT_USER, 10, query="m2") == []  # rewound away before
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.integers(1, 5), min_size=4, max_size=12), pages=st.integers(1, 7))
def test_a_feed_follower_sees_every_item_once_in_order_with_concurrent_writers(
    tmp_path: Path, engines: Callable[[Path], dict[str, Any]], batches: list[int], pages: int
):
    """Writers on four connections commit feed notices at once; a reader that reads `after` its last
    seq (resuming on another worker's store each time, as a reconnecting client may) gets each notice
    once, in seq order, with no seq skipped: feed numbers follow commit order, so nothing can commit
    behind the reader. (With numbers from a sequence, a later number can commit first.)"""
    asyncio.run(feed_scenario(Settings(data_dir=tmp_path, **engines(tmp_path)), batches, pages))


async def feed_scenario(settings: Settings, batches: list[int], pages: int) -> None:
    stores = [open_store(settings) for _ in range(4)]
    for store in stores:
        await store.open()
    try:
        start = await stores[0].last_feed_seq()
        thread = await a_thread(stores[0])
        written: list[str] = []

        async def writer(store: Store, w: int) -> None:
            for b, size in enumerate(batches):
                notices = [FeedNotice(thread.id, None, json.dumps({"w": w, "b": b, "i": i})) for i in range(size)]
                written.extend(n.data for n in notices)
                await store.write(WriteBatch(feed=notices))

        seen: list[Any] = []

        async def reader() -> None:
            after, reads = start, 0
            while len(seen) < 4 * sum(batches):
                page = await stores[reads % 4].read_feed(after, 1 + reads % pages)
                reads += 1
                seen.extend(page)
                if page:
                    after = page[-1].seq

        await asyncio.wait_for(asyncio.gather(reader(), *[writer(s, w) for w, s in enumerate(stores)]), 60)
        assert [item.seq for item in seen] == list(range(start + 1, start + 1 + len(written)))
        assert sorted(item.data for item in seen) == sorted(written)
    finally:
        for store in stores:
            await store.close()


@pytest.mark.sqlite_only  # the follower's logic; the bus and the log are the same on both engines
async def test_a_follower_fills_what_the_bus_lost_and_orders_what_it_mixed(tmp_path: Path):
    """What Redis may do to live items (drop one, deliver two workers' out of order), done by hand
    on the in-process bus: the follower reads the log and sends every item once, in order."""
    from tether.bus import thread_channel
    from tether.bus.memory import MemoryBus
    from tether.engine.streams import Follower

    store = SQLiteStore(tmp_path / "tether.db")
    await store.open()
    bus = MemoryBus()
    log = [Event("thr_f", seq, "run_f", "TEXT_MESSAGE_CONTENT", json.dumps({"n": seq})) for seq in range(1, 10)]
    try:
        await store.write(WriteBatch(events=log[:3]))
        follower = Follower(
            bus=bus,
            channel=thread_channel("thr_f"),
            read=lambda after, limit: store.read_events("thr_f", after, limit),
            after=0,
            buffer=100,
            keepalive=30,
            closing=asyncio.Event(),
        )
        batches = follower.batches()
        assert [e.seq for e in await anext(batches)] == [1, 2, 3]  # the replay
        await store.write(WriteBatch(events=log[3:9]))
        bus.publish(thread_channel("thr_f"), [log[3], log[5]])  # 5 was lost on the way
        assert [e.seq for e in await asyncio.wait_for(anext(batches), 5)] == [4, 5, 6, 7, 8, 9]
        bus.publish(thread_channel("thr_f"), [log[4], log[8], log[7]])  # late and out of order: all sent already
        extra = [Event("thr_f", 10, "run_f", "RUN_FINISHED", "{}"), Event("thr_f", 11, "run_f", "RUN_STARTED", "{}")]
        await store.write(WriteBatch(events=extra))
        bus.publish(thread_channel("thr_f"), [extra[1], extra[0]])
        assert [e.seq for e in await asyncio.wait_for(anext(batches), 5)] == [10, 11]
        await batches.aclose()
    finally:
        await store.close()


async def test_a_cancelled_write_keeps_the_connection_until_its_thread_is_done(tmp_path: Path):
    """A transaction on the writer's thread runs on after its caller is cancelled; a group commit on
    the loop must not use the connection meanwhile."""
    import threading

    store = SQLiteStore(tmp_path / "t.db")
    await store.open()
    try:
        thread = await a_thread(store)
        release = threading.Event()

        def slow() -> Any:
            yield Execute("UPDATE threads SET title = 'slow' WHERE id = ?", (thread.id,))
            release.wait(5)  # on the writer's thread, inside the transaction

        slow_write = asyncio.create_task(store.db.transaction(slow()))
        await asyncio.sleep(0.05)
        slow_write.cancel()
        await asyncio.sleep(0.05)
        commit = asyncio.create_task(
            store.write(WriteBatch(checkpoints=[Checkpoint(thread.id, None, history(2), 1.0)]))
        )
        await asyncio.sleep(0.05)
        assert not commit.done()  # it waits for the writer's thread
        release.set()
        await commit
        assert (await store.get_thread(thread.id)).title == "slow"
        assert (await store.latest_checkpoint(thread.id)).messages == history(2)
    finally:
        await store.close()
