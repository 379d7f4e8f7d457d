"""The tail of recent commits (engine/recent.py): a reconnect answered from memory must be what the
log would have answered, for any resume point, whoever writes the thread next, and whoever asks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tether.bus.memory import MemoryBus
from tether.client import TetherClient, parse_sse
from tether.engine.journal import Journal
from tether.engine.recent import TAIL
from tether.events import Event
from tether.store import Lease, LeaseLost, Thread
from tether.store.sqlite import SQLiteStore

from .test_store import a_run, a_thread


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "tether.db")
    await store.open()
    yield store
    await store.close()


async def claimed_run(store: SQLiteStore, worker: str, lease: float) -> tuple[Thread, Lease]:
    """A thread with one run, claimed by `worker` as a worker's claim loop would."""
    thread = await a_thread(store)
    run = a_run(thread)
    await store.create_run(run)
    (claim,) = await store.claim_runs(worker, lease, 10)
    return thread, Lease(run.id, worker, claim.run.lease_epoch)


@asynccontextmanager
async def writing(store: SQLiteStore, thread: Thread, lease: Lease) -> AsyncIterator[Journal]:
    """A journal that holds `lease` and has opened its thread, as a worker running the run has."""
    journal = Journal(store, MemoryBus(), interval=0.001)
    await journal.start()
    try:
        journal.hold(lease, thread.id)
        journal.forget_thread(thread.id)
        await journal.open_thread(thread.id)
        yield journal
    finally:
        await journal.stop()


async def append(journal: Journal, thread: Thread, lease: Lease, count: int, commits: int = 1) -> None:
    for _ in range(commits):
        for i in range(count):
            journal.event(thread.id, lease.run_id, "TEXT_MESSAGE_CONTENT", f'{{"delta":"w{i}"}}')
        await journal.commit(lease.run_id)


def as_rows(events: list[Event] | None) -> list[tuple[int, str, str]] | None:
    return None if events is None else [(e.seq, e.run_id, e.data) for e in events]


async def test_the_tail_answers_exactly_what_the_log_would_or_nothing(store: SQLiteStore) -> None:
    thread, lease = await claimed_run(store, "a", 30)
    async with writing(store, thread, lease) as journal:
        await append(journal, thread, lease, 60, commits=5)  # 300 events, in five group commits
        answered = set()
        for after in range(0, 302):
            for limit in (1, 7, 500):
                recent = journal.recent.read(thread.id, after, limit)
                if recent is not None:
                    answered.add(after)
                    assert as_rows(recent) == as_rows(await store.read_events(thread.id, after, limit)), (after, limit)
                    assert as_rows(journal.recent.read(thread.id, after, limit, "run_other")) == []
                    assert as_rows(journal.recent.read(thread.id, after, limit, lease.run_id)) == as_rows(recent)
        # It holds the last TAIL events, and never claims to know that nothing follows the last.
        assert answered == set(range(300 - TAIL, 300))


async def test_a_tail_goes_with_its_lease(store: SQLiteStore) -> None:
    thread, lease = await claimed_run(store, "a", 30)
    async with writing(store, thread, lease) as journal:
        await append(journal, thread, lease, 10)
        assert journal.recent.read(thread.id, 5, 100) is not None
        journal.release(lease.run_id)
        assert journal.recent.tail(thread.id) is None
        # A thread opened without a lease (a fork's first snapshot) gets no tail either.
        journal.forget_thread(thread.id)
        await journal.open_thread(thread.id)
        assert journal.recent.tail(thread.id) is None


async def test_a_worker_that_lost_its_run_answers_a_prefix_of_the_log_and_then_nothing(store: SQLiteStore) -> None:
    thread, lease = await claimed_run(store, "a", 0.05)
    async with writing(store, thread, lease) as old:
        await append(old, thread, lease, 20)
        await asyncio.sleep(0.1)  # its lease lapses unrenewed; another worker takes the run over
        (claim,) = await store.claim_runs("b", 30, 10)
        assert claim.mode == "takeover"
        heir_lease = Lease(lease.run_id, "b", claim.run.lease_epoch)
        async with writing(store, thread, heir_lease) as heir:
            await append(heir, thread, heir_lease, 5)
        # The old worker has not heard yet: what it answers is still the log's, up to what it wrote...
        assert as_rows(old.recent.read(thread.id, 10, 500)) == as_rows(await store.read_events(thread.id, 10, 10))
        assert old.recent.read(thread.id, 20, 500) is None  # ...and beyond that it asks the store
        assert old.recent.tail(thread.id).last == 20
        # Its next commit is refused (fencing): it writes nothing more, and its tail is gone.
        with pytest.raises(LeaseLost):
            await append(old, thread, lease, 1)
        assert old.recent.tail(thread.id) is None
        assert [e.seq for e in await store.read_events(thread.id, 0, 100)] == list(range(1, 26))


async def read_until(http: httpx.AsyncClient, path: str, after: int, user: str, count: int) -> tuple[int, list[int]]:
    """The status of a thread stream resumed after `after`, and the first `count` seqs it sends."""
    async with http.stream("GET", path, headers={"Last-Event-ID": str(after), "x-user": user}) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, []
        seqs = []
        async for event_id, _ in parse_sse(response.aiter_lines()):
            seqs.append(int(event_id))
            if len(seqs) >= count:
                break
        return 200, seqs


async def test_a_reconnect_answered_from_the_tail_is_the_owners_alone(start_server) -> None:
    server = start_server(auth="tests.auth:by_header")
    alice = {"x-user": "alice"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        thread = (await http.post("/v1/threads", headers=alice)).json()["id"]
        run = (
            await http.post(f"/v1/threads/{thread}/runs", json={"input": "/stream 100000 ms=1"}, headers=alice)
        ).json()
        await asyncio.sleep(0.5)
        # Each order twice: before and after the tail knows its owner; through the thread's stream and the run's.
        for path in (f"/v1/threads/{thread}/stream", f"/v1/runs/{run['run_id']}/stream"):
            for order in (("bob", "alice"), ("alice", "bob")):
                for user in order:
                    last = (await http.get(f"/v1/threads/{thread}", headers=alice)).json()["last_seq"]
                    expected = (200, list(range(last - 4, last + 1))) if user == "alice" else (404, [])
                    assert await read_until(http, path, last - 5, user, 5) == expected, (path, order, user)
        status = (await http.get(f"/v1/runs/{run['run_id']}", headers=alice)).json()["status"]
        assert status == "running"  # the tail was in play throughout
        await http.post(f"/v1/runs/{run['run_id']}/cancel", headers=alice)


async def test_deleting_a_thread_ends_its_stream_while_its_run_streams(start_server) -> None:
    server = start_server(keepalive_seconds=0.2)
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        thread = await client.create_thread()
        await client.send(thread["id"], "/stream 100000 ms=2")
        live = asyncio.Event()

        async def follow() -> int:
            count = 0
            async with http.stream("GET", f"/v1/threads/{thread['id']}/stream") as response:
                async for _ in parse_sse(response.aiter_lines()):
                    count += 1
                    if count == 20:
                        live.set()
            return count

        following = asyncio.create_task(follow())
        await asyncio.wait_for(live.wait(), 10)
        await client.delete_thread(thread["id"])
        assert await asyncio.wait_for(following, 5) >= 20
