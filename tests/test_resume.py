"""Exact resume (invariant 2): reconnecting with Last-Event-ID gives every later event once, in order.

Property-based: random run lengths and speeds, random disconnect points
(during replay, at the replay/live seam while the run still streams, and in
the live tail), compared with one uninterrupted read of the same stream.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.client import TetherClient, parse_sse
from tether.config import Settings

from .conftest import ServerThread, wait_for_status


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory):
    server = ServerThread(Settings(data_dir=tmp_path_factory.mktemp("resume"))).start()
    yield server
    server.stop()


async def read_stream(
    http: httpx.AsyncClient, path: str, after: int, limit: int | None, run_id: str
) -> tuple[list[tuple[int, str]], bool]:
    """Read up to `limit` events after `after`, then disconnect. Returns (events, reached the run's end)."""
    got: list[tuple[int, str]] = []
    async with http.stream("GET", path, headers={"Last-Event-ID": str(after)}) as response:
        assert response.status_code == 200
        async for event_id, data in parse_sse(response.aiter_lines()):
            got.append((int(event_id), data))
            if '"RUN_FINISHED"' in data and run_id in data:
                return got, True
            if limit is not None and len(got) >= limit:
                return got, False
    return got, False


async def resume_scenario(url: str, words: int, ms: int, cuts: list[int], pauses: list[int], earlier_run: bool) -> None:
    async with TetherClient(url) as client, httpx.AsyncClient(base_url=url, timeout=30) as http:
        thread = await client.create_thread()
        tid = thread["id"]
        if earlier_run:
            first = await client.send(tid, "/stream 5")
            await wait_for_status(client, first["run_id"], {"completed"})
        start = (await client.get_thread(tid))["last_seq"]
        run = await client.send(tid, f"/stream {words} ms={ms}")
        rid = run["run_id"]
        path = f"/v1/threads/{tid}/stream"

        reference_task = asyncio.create_task(read_stream(http, path, start, None, rid))
        received: list[tuple[int, str]] = []
        last = start
        done = False
        for cut, pause in zip(cuts, pauses, strict=False):
            batch, done = await read_stream(http, path, last, cut, rid)
            received += batch
            last = received[-1][0] if received else last
            if done:
                break
            await asyncio.sleep(pause / 1000)
        while not done:
            batch, done = await read_stream(http, path, last, None, rid)
            received += batch
            last = received[-1][0] if received else last

        reference, finished = await reference_task
        assert finished
        assert [seq for seq, _ in received] == [seq for seq, _ in reference]
        assert received == reference
        assert [seq for seq, _ in reference] == list(range(start + 1, start + 1 + len(reference)))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    words=st.integers(min_value=1, max_value=400),
    ms=st.sampled_from([0, 0, 1, 3]),
    cuts=st.lists(st.integers(min_value=1, max_value=120), min_size=1, max_size=6),
    pauses=st.lists(st.integers(min_value=0, max_value=40), min_size=6, max_size=6),
    earlier_run=st.booleans(),
)
def test_resume_after_random_disconnects_equals_one_uninterrupted_read(
    shared_server, words, ms, cuts, pauses, earlier_run
):
    asyncio.run(resume_scenario(shared_server.url, words, ms, cuts, pauses, earlier_run))


async def test_resume_of_a_finished_run_replays_exactly_the_rest(server):
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/stream 300")
        everything = [e async for e in client.stream_run(run["run_id"])]
        for cut in (0, 1, 150, len(everything) - 1):
            after = everything[cut - 1].seq if cut else 0
            rest = [e async for e in client.stream_run(run["run_id"], after=after)]
            assert [e.raw for e in rest] == [e.raw for e in everything[cut:]]


def _raw_stream_socket(port: int, path: str, after: int) -> socket.socket:
    """A client that will stop reading: a tiny receive window, so the server's sends block."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: {after}\r\n\r\n".encode())
    return sock


def _last_complete_seq(raw: bytes) -> int:
    body = raw.split(b"\r\n\r\n", 1)[1]
    last = 0
    for frame in body.split(b"\n\n")[:-1]:
        for line in frame.split(b"\n"):
            line = line.split(b"\r\n")[-1]
            if line.startswith(b"id: "):
                last = int(line[4:])
    return last


async def test_slow_consumer_is_cut_off_without_slowing_the_run_and_resumes(start_server, tmp_path: Path):
    server = start_server(stream_buffer=100, keepalive_seconds=0.2)
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        stalled = _raw_stream_socket(server.settings.port, f"/v1/threads/{thread['id']}/stream", 0)
        # Only a live follower sends keep-alives: wait for one, so that the run below reaches this
        # client live. (A follower that falls behind while it is still replaying the log just
        # replays again at its reader's pace; it is not cut off.)
        first_bytes = b""
        while b": keep-alive" not in first_bytes:
            first_bytes += stalled.recv(1024)
        assert first_bytes.startswith(b"HTTP/1.1 200")

        run = await client.send(thread["id"], "/stream 30000")
        # The run finishes while the client reads nothing at all.
        done = await wait_for_status(client, run["run_id"], {"completed", "failed"}, within=120)
        assert done["status"] == "completed"

        # The server has closed the stalled connection: reading now drains what was buffered, then EOF.
        # (With a wide window again: megabytes may sit in the kernel's buffers, and a 2 KB window with
        # delayed acknowledgements drains them at a few dozen KB/s on a busy machine. And slowly at
        # first: after a long stall the server's TCP probes the closed window at backed-off intervals,
        # and loopback's 64 KB segments keep the opened window from being announced at once; in a
        # loaded suite one read waited over 10 s.)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        stalled.settimeout(60)
        chunks = [first_bytes]
        started = time.monotonic()
        while chunk := stalled.recv(65536):
            chunks.append(chunk)
            assert time.monotonic() - started < 180, "the stalled connection was never closed"
        stalled.close()
        raw = b"".join(chunks)
        assert b"RUN_FINISHED" not in raw, "the stalled client was not cut off"
        last = _last_complete_seq(raw)

        # It resumes from the log: the rest, exactly once, to the end of the run.
        rest = []
        async for event in client.stream_thread(thread["id"], after=last):
            rest.append(event)
            if event.data["type"] == "RUN_FINISHED":
                break
        assert [e.seq for e in rest] == list(range(last + 1, last + 1 + len(rest)))
        words = [e.data["delta"] for e in rest if e.data["type"] == "TEXT_MESSAGE_CONTENT"]
        assert words[-1] == " w30000"


async def raw_events(http: httpx.AsyncClient, path: str, last_event_id: int, within: float = 10) -> list[int]:
    """The ids a stream sends before it closes by itself (fails if it does not close `within` seconds)."""
    ids: list[int] = []
    async with asyncio.timeout(within):
        async with http.stream("GET", path, headers={"Last-Event-ID": str(last_event_id)}) as response:
            assert response.status_code == 200
            async for event_id, _ in parse_sse(response.aiter_lines()):
                ids.append(int(event_id))
    return ids


async def test_a_run_stream_resumed_at_or_after_its_end_closes_at_once(server):
    """What EventSource does when a finished stream's connection drops: it reconnects with the last id.
    The stream sends what the client lacks (nothing) and closes; it must not hang with keep-alives."""
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        thread = await client.create_thread()
        first = await client.send(thread["id"], "/stream 3")
        await wait_for_status(client, first["run_id"], {"completed"})
        second = await client.send(thread["id"], "/stream 2")  # the thread's log goes on past the first run
        await wait_for_status(client, second["run_id"], {"completed"})
        ids = [e.seq async for e in client.stream_run(first["run_id"])]
        path = f"/v1/runs/{first['run_id']}/stream"
        assert await raw_events(http, path, ids[-1]) == []  # at its terminal event
        assert await raw_events(http, path, ids[-1] + 3) == []  # after it, inside the next run
        assert await raw_events(http, path, ids[-2]) == [ids[-1]]  # just before it: the rest, then the end


async def test_a_stream_of_a_run_cancelled_while_queued_ends(start_server):
    server = start_server(keepalive_seconds=0.3)
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        thread = await client.create_thread()
        running = await client.send(thread["id"], "/stream 400 ms=20")
        queued = await client.send(thread["id"], "/stream 2", multitask="enqueue")
        assert (await client.get_run(queued["run_id"]))["status"] == "queued"
        following = asyncio.create_task(raw_events(http, f"/v1/runs/{queued['run_id']}/stream", 0))
        await asyncio.sleep(0.5)
        await client.cancel(queued["run_id"])
        assert await following == []  # it never ran: no events, and the stream ends
        await client.cancel(running["run_id"])
