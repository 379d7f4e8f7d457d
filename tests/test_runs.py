"""Runs over real HTTP: streaming, the transcript invariant, cancel, enqueue/reject, failures."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import httpx
import pytest

from tether.client import TetherClient, TetherError
from tether.transcript import comparable, fold

from .conftest import ServerThread, wait_for_status


async def read_run(client: TetherClient, run_id: str) -> list:
    return [event async for event in client.stream_run(run_id)]


async def test_stream_directive_streams_one_word_per_delta(server):
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/stream 25")
        events = await read_run(client, run["run_id"])
    types = [e.data["type"] for e in events]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    deltas = [
        e.data["delta"] for e in events if e.data["type"] == "TEXT_MESSAGE_CONTENT" and e.data["delta"] != "/stream 25"
    ]
    assert len(deltas) == 25
    assert "".join(deltas) == " ".join(f"w{i}" for i in range(1, 26))


@pytest.mark.parametrize("directive", ["/stream 30", "/tools 3", "/steps 3", "hello there", "/fail"])
async def test_folding_the_log_renders_the_stored_history(server, directive):
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        for text in ["/stream 3", directive, "/tools 2"]:
            run = await client.send(thread["id"], text)
            await read_run(client, run["run_id"])
        stored = await client.get_thread(thread["id"])
        events = []
        async for event in client.stream_thread(thread["id"]):
            events.append(event.data)
            if event.seq == stored["last_seq"]:
                break
    folded = comparable(fold(events))
    assert folded == comparable(stored["messages"])
    assert [m["role"] for m in folded].count("user") == 3


async def test_messages_seq_says_where_the_stored_history_can_be_followed_from(server):
    """Showing `messages` and folding the events after `messages_seq` follows the transcript exactly;
    while a run is active there is no such point (its partial answer is only in the log)."""
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/stream 3")
        await read_run(client, run["run_id"])
        idle = await client.get_thread(thread["id"])
        assert idle["messages_seq"] == idle["last_seq"] > 0
        run = await client.send(thread["id"], "/stream 200 ms=5")
        await wait_for_status(client, run["run_id"], {"running"})
        busy = await client.get_thread(thread["id"])
        assert busy["messages_seq"] is None and busy["status"] == "running"
        later = [event.data for event in await read_run(client, run["run_id"])]
        stored = await client.get_thread(thread["id"])
    assert comparable(fold([{"type": "MESSAGES_SNAPSHOT", "messages": idle["messages"]}, *later])) == comparable(
        stored["messages"]
    )


async def test_failed_run_records_reason_and_next_run_works(server):
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/fail")
        events = await read_run(client, run["run_id"])
        assert events[-1].data["type"] == "RUN_ERROR"
        failed = await client.get_run(run["run_id"])
        assert failed["status"] == "failed"
        assert "/fail" in failed["error"]
        run2 = await client.send(thread["id"], "/stream 2")
        events2 = await read_run(client, run2["run_id"])
        assert events2[-1].data["type"] == "RUN_FINISHED"
        assert (await client.get_run(run2["run_id"]))["status"] == "completed"


async def test_tools_run_in_parallel_and_are_logged_once(server):
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/tools 4 ms=50")
        events = await read_run(client, run["run_id"])
    results = [e.data for e in events if e.data["type"] == "TOOL_CALL_RESULT"]
    assert len(results) == 4
    log = [json.loads(line) for line in (server.settings.data_dir / "demo_tools.log").read_text().splitlines()]
    assert sorted(entry["tool_call_id"] for entry in log) == sorted(r["toolCallId"] for r in results)


async def test_reject_gives_409_and_enqueue_runs_afterwards(server):
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        first = await client.send(thread["id"], "/stream 20 ms=20")
        with pytest.raises(TetherError) as rejected:
            await client.send(thread["id"], "/stream 2")
        assert rejected.value.status == 409 and rejected.value.code == "thread_busy"
        second = await client.send(thread["id"], "/stream 3", multitask="enqueue")
        assert second["status"] == "queued"
        done = await wait_for_status(client, second["run_id"], {"completed", "failed"})
        assert done["status"] == "completed"
        first_run = await client.get_run(first["run_id"])
        assert first_run["status"] == "completed"
        assert first_run["finished_at"] <= done["started_at"]


async def test_cancel_a_running_run(server):
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/stream 5000 ms=5")
        async for event in client.stream_run(run["run_id"]):
            if event.data["type"] == "TEXT_MESSAGE_CONTENT" and event.data["delta"] == " w10":
                break
        cancelled = await client.cancel(run["run_id"])
        assert cancelled["status"] == "cancelled"
        events = await read_run(client, run["run_id"])
        assert events[-1].data["type"] == "RUN_FINISHED"
        assert any(e.data["type"] == "MESSAGES_SNAPSHOT" for e in events)
        with pytest.raises(TetherError) as again:
            await client.cancel(run["run_id"])
        assert again.value.status == 409
        stored = await client.get_thread(thread["id"])
        assert stored["status"] == "idle"


@pytest.mark.parametrize("backpressure", ["now and then", "after every event"])
async def test_a_run_streaming_at_full_speed_is_cancelled_cleanly_wherever_the_cancel_lands(server, backpressure):
    """A model that never waits gives the event loop up between events, and waits when the journal
    has too much pending: a cancel landing at any such point ends the run as cancelled, never as a
    500 that leaves the run unfinished."""
    if backpressure == "after every event":
        server.engine.journal._max_pending = 1  # the journal is congested at every event
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        for attempt in range(20):
            run = await client.send(thread["id"], "/stream 1000000")
            await asyncio.sleep(0.05 + 0.01 * attempt)
            cancelled = await client.cancel(run["run_id"])
            assert cancelled["status"] == "cancelled", attempt
            events = await read_run(client, run["run_id"])
            assert events[-1].data["type"] == "RUN_FINISHED", attempt
        assert (await client.get_thread(thread["id"]))["status"] == "idle"


async def test_a_cancel_in_a_runs_first_milliseconds_ends_it_as_cancelled(server):
    """Queued, being claimed, writing its first events, or starting its agent: wherever the cancel
    lands, the run ends as cancelled, and its stream ends."""
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        for attempt in range(20):
            run = await client.send(thread["id"], "/stream 1000000")
            await asyncio.sleep(0.001 * attempt)
            cancelled = await client.cancel(run["run_id"])
            assert cancelled["status"] == "cancelled", attempt
            events = await asyncio.wait_for(read_run(client, run["run_id"]), 30)
            assert not events or events[-1].data["type"] == "RUN_FINISHED", attempt
        assert (await client.get_thread(thread["id"]))["status"] == "idle"


async def test_fifty_runs_on_fifty_threads_at_once(server):
    async with TetherClient(server.url) as client:
        threads = await asyncio.gather(*[client.create_thread() for _ in range(50)])

        async def one(i: int, thread: dict) -> None:
            n = 20 + i
            run = await client.send(thread["id"], f"/stream {n} ms=2")
            events = await read_run(client, run["run_id"])
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            text = "".join(
                e.data["delta"]
                for e in events
                if e.data["type"] == "TEXT_MESSAGE_CONTENT" and not e.data["delta"].startswith("/")
            )
            assert text == " ".join(f"w{k}" for k in range(1, n + 1))
            assert events[-1].data["type"] == "RUN_FINISHED"

        await asyncio.gather(*[one(i, t) for i, t in enumerate(threads)])


async def test_feed_shows_runs_start_and_finish(server):
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url, timeout=None) as http:
        thread = await client.create_thread()
        seen: list[dict] = []
        connected = asyncio.Event()

        async def watch() -> None:
            async with http.stream("GET", "/v1/events") as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        seen.append(json.loads(line[6:]))
                        connected.set()
                        if seen[-1].get("status") == "completed":
                            return

        watcher = asyncio.create_task(watch())
        await asyncio.wait_for(connected.wait(), 10)  # the snapshot has arrived: we are following
        await client.send(thread["id"], "/stream 3")
        await asyncio.wait_for(watcher, 20)
    assert seen[0]["type"] == "snapshot"
    statuses = [s.get("status") for s in seen if s.get("threadId") == thread["id"]]
    assert statuses[-3:] == ["queued", "running", "completed"]


def room_left(server: ServerThread, pages: int) -> None:
    """Let the server's SQLite file grow by `pages` pages at most: a real "database or disk is full"."""

    def limit(conn: sqlite3.Connection) -> None:
        (count,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {count + pages}")

    server.call(server.engine.store.database._writer.call(limit))


@pytest.mark.sqlite_only
async def test_a_full_database_pauses_writes_and_loses_nothing(server):
    """A real SQLite failure (the database is full), not a mock. While it is full, a request that
    writes gets 503 saying so and the run's commits wait (up to --outage-limit); once there is room
    again the run goes on, no restart needed, and nothing it streamed is lost."""
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url) as http:
        thread = await client.create_thread()
        room_left(server, 2)
        run = await client.send(thread["id"], "/stream 20000")
        await asyncio.sleep(0.5)  # the run fills the database and its writes fail
        refused = await http.post("/v1/threads", json={"title": "while full"})
        assert refused.status_code == 503 and "full" in refused.json()["error"]["message"], refused.text
        assert (await http.get(f"/v1/threads/{thread['id']}")).status_code == 200  # reads go on
        room_left(server, 1_000_000)
        done = await wait_for_status(client, run["run_id"], {"failed", "completed"})
        assert done["status"] == "completed", done
        events = [e async for e in client.stream_run(run["run_id"])]
        assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + len(events)))
        words = [e.data["delta"] for e in events if e.data["type"] == "TEXT_MESSAGE_CONTENT"]
        assert words[-1].strip() == "w20000"
        ok = await client.send(thread["id"], "/stream 3")
        assert (await wait_for_status(client, ok["run_id"], {"completed", "failed"}))["status"] == "completed"


@pytest.mark.sqlite_only  # a full SQLite file is the failure; PostgreSQL outages are tested in test_workers
async def test_a_storage_failure_longer_than_the_outage_limit_leaves_no_stuck_run(start_server):
    """Found: a failure longer than the retries left the run `running` with nothing executing and the
    thread 409 for good. Now its worker's lease lapses and the run is taken over once the store takes
    writes again: it ends (here: completes) and the thread is free."""
    server = start_server(outage_limit=1, lease=2)
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        room_left(server, 2)
        run = await client.send(thread["id"], "/stream 3000 ms=1")
        await asyncio.sleep(4)  # past the outage limit: the run's commits give up
        room_left(server, 1_000_000)
        done = await wait_for_status(client, run["run_id"], {"completed", "failed", "cancelled"}, within=90)
        assert done["status"] in ("completed", "failed"), done
        events = [e async for e in client.stream_run(run["run_id"])]
        assert events[-1].data["type"] in ("RUN_FINISHED", "RUN_ERROR")
        seqs = [e.seq for e in events]
        assert seqs == sorted(set(seqs))
        ok = await client.send(thread["id"], "/stream 2")
        assert (await wait_for_status(client, ok["run_id"], {"completed", "failed"}))["status"] == "completed"


async def test_deleting_a_thread_ends_its_streams(start_server):
    server = start_server(keepalive_seconds=0.2)
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/stream 3")
        await wait_for_status(client, run["run_id"], {"completed"})

        replayed = asyncio.Event()

        async def follow() -> list[str]:
            lines = []
            async with http.stream("GET", f"/v1/threads/{thread['id']}/stream") as response:
                async for line in response.aiter_lines():
                    lines.append(line)
                    if '"RUN_FINISHED"' in line:
                        replayed.set()
            return lines

        following = asyncio.create_task(follow())
        await asyncio.wait_for(replayed.wait(), 10)  # the stream is open and live
        await client.delete_thread(thread["id"])
        lines = await asyncio.wait_for(following, 5)
        assert any('"RUN_FINISHED"' in line for line in lines)
        with pytest.raises(TetherError) as gone:
            await client.get_thread(thread["id"])
        assert gone.value.status == 404


async def test_an_unusable_model_is_refused_at_start_up(tether_process):
    server = tether_process("--model", "nosuchprovider:big-model").spawn()
    assert await asyncio.to_thread(server.proc.wait, 30) == 2
    assert "--model 'nosuchprovider:big-model' cannot be used" in server.log()


async def test_an_unusable_model_for_one_run_is_a_400(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        thread = (await http.post("/v1/threads")).json()
        response = await http.post(
            f"/v1/threads/{thread['id']}/runs", json={"input": "hi", "model": "nosuchprovider:big-model"}
        )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_model"
