"""Crash recovery (invariants 1, 3, 4, 7): real `tether serve` processes killed with SIGKILL.

Kill points are deterministic where possible: TETHER_CRASH_AT=name[@n] makes the server kill
itself at a named point (see tether/faults.py). After each kill the server restarts on the
same data directory (and database) and the test checks what a user would: the run completes,
tools ran at most once (or, if idempotent, were re-run only when their result was never
recorded), folding the stream renders the stored history, a reader that was connected resumes
with Last-Event-ID without gap or duplicate, and an SQLite file is intact.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections import Counter

import httpx
import pytest

from tether.client import TetherClient, attachment
from tether.transcript import comparable, fold

from .conftest import TetherProcess, tool_log, wait_for_status, with_store


def integrity(proc: TetherProcess) -> str:
    """SQLite's own check of the file a killed server left ("ok"; PostgreSQL keeps its own integrity)."""
    if proc.settings.database is not None:
        return "ok"
    with sqlite3.connect(proc.settings.database_path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


async def status_in_store(proc: TetherProcess, run_id: str) -> str:
    run = await with_store(proc.settings, lambda store: store.get_run(run_id))
    assert run is not None
    return run.status


async def checkpointed_tool_returns(proc: TetherProcess, thread_id: str) -> set[str]:
    """Tool call ids whose results are in the thread's latest checkpoint (as the store holds it now)."""
    checkpoint = await with_store(proc.settings, lambda store: store.latest_checkpoint(thread_id))
    if checkpoint is None:
        return set()
    return {
        part["tool_call_id"]
        for message in json.loads(checkpoint.json())
        for part in message.get("parts", [])
        if part.get("part_kind") == "tool-return"
    }


class Reader:
    """A client reading the thread stream across the crash, resuming with Last-Event-ID."""

    def __init__(self, urls: list[str], thread_id: str, run_id: str) -> None:
        self.urls = urls  # the restarted server listens on another port: follow it there
        self.thread_id = thread_id
        self.run_id = run_id
        self.events: list[tuple[int, str]] = []
        self.reconnects = 0
        self.status_at_crash = ""
        self._current_run: str | None = None
        """The run whose events the stream carries now: the runId of the last RUN_STARTED."""

    async def read(self) -> None:
        last = 0
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=60)) as http:
            while True:
                try:
                    url = f"{self.urls[-1]}/v1/threads/{self.thread_id}/stream"
                    async with http.stream("GET", url, headers={"Last-Event-ID": str(last)}) as response:
                        async for line in response.aiter_lines():
                            if line.startswith("id: "):
                                last = int(line[4:])
                            elif line.startswith("data: "):
                                self.events.append((last, line[6:]))
                                if self._finished(line):
                                    return
                except (httpx.TransportError, httpx.RemoteProtocolError):
                    pass
                self.reconnects += 1
                await asyncio.sleep(0.1)

    def _finished(self, line: str) -> bool:
        # AG-UI's RUN_ERROR carries no runId: it ends the run that started last (one active run per thread).
        data = json.loads(line[6:])
        if data["type"] == "RUN_STARTED":
            self._current_run = data.get("runId")
        if self._current_run != self.run_id:
            return False
        if data["type"] == "RUN_ERROR":
            return True
        return data["type"] == "RUN_FINISHED" and data.get("outcome", {}).get("type") != "interrupt"


async def full_log(url: str, thread_id: str) -> list[tuple[int, str]]:
    async with TetherClient(url) as client:
        last = (await client.get_thread(thread_id))["last_seq"]
        out = []
        async for event in client.stream_thread(thread_id):
            out.append((event.seq, event.raw))
            if event.seq == last:
                return out
    return out


async def check_consistency(url: str, thread_id: str, reader: Reader | None) -> list[tuple[int, str]]:
    log = await full_log(url, thread_id)
    assert [seq for seq, _ in log] == list(range(1, len(log) + 1))
    async with TetherClient(url) as client:
        stored = await client.get_thread(thread_id)
    folded = fold([json.loads(data) for _, data in log])
    assert comparable(folded) == comparable(stored["messages"])
    if reader is not None:
        assert reader.events == log[: len(reader.events)], "the reader saw something the log does not hold"
        assert reader.events[-1][0] >= stored["last_seq"] - 5 or reader.events == log
    return log


def wait_dead(proc: TetherProcess, timeout: float = 60) -> int:
    assert proc.proc is not None
    return proc.proc.wait(timeout=timeout)


async def crash_and_recover(
    tether_process, directive: str | list[dict], crash_at: str, *, before_crash=None, after_restart=None
) -> tuple[TetherProcess, str, str, Reader]:
    crashing = tether_process(env={"TETHER_CRASH_AT": crash_at}).start()
    async with TetherClient(crashing.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], directive)
        reader = Reader([crashing.url], thread["id"], run["run_id"])
        reading = asyncio.create_task(reader.read())
        if before_crash is not None:
            await before_crash(client, thread["id"], run["run_id"])
    code = await asyncio.to_thread(wait_dead, crashing)
    assert code == -signal.SIGKILL, f"the server did not crash at {crash_at}:\n{crashing.log()[-3000:]}"
    assert integrity(crashing) == "ok"
    checkpointed = await checkpointed_tool_returns(crashing, thread["id"])
    reader.status_at_crash = await status_in_store(crashing, run["run_id"])
    logged_before = Counter(e["tool_call_id"] for e in tool_log(crashing.data_dir))

    restarted = tether_process(data_dir=crashing.data_dir).start()
    reader.urls.append(restarted.url)
    async with TetherClient(restarted.url) as client:
        if after_restart is not None:
            await after_restart(client, thread["id"], run["run_id"])
        done = await wait_for_status(client, run["run_id"], {"completed", "failed", "cancelled"}, within=60)
        assert done["status"] == "completed", (done, restarted.log()[-3000:])
    await asyncio.wait_for(reading, 30)

    logged = Counter(e["tool_call_id"] for e in tool_log(restarted.data_dir))
    for call_id in checkpointed:
        assert logged[call_id] == 1, f"{call_id} was checkpointed before the crash but ran {logged[call_id]} times"
    for call_id, count in logged.items():
        assert count <= logged_before[call_id] + 1 and count <= 2, f"{call_id} ran {count} times"
    await check_consistency(restarted.url, thread["id"], reader)
    assert reader.reconnects >= 1
    return restarted, thread["id"], run["run_id"], reader


CRASHES = [
    ("/steps 6 ms=100", "run_started"),
    ("/steps 6 ms=100", "checkpoint_committed@1"),
    ("/steps 6 ms=100", "tools_started@3"),
    ("/steps 6 ms=100", "checkpoint_committed@4"),
    ("/steps 6 ms=100", "text_delta@3"),
    ("/tools 4 ms=100", "run_started"),
    ("/tools 4 ms=100", "tools_started@2"),
    ("/tools 4 ms=100", "checkpoint_committed@2"),
    ("/tools 4 ms=100", "text_delta@3"),
]


@pytest.mark.parametrize(("directive", "crash_at"), CRASHES)
async def test_run_completes_after_a_crash(tether_process, directive, crash_at):
    restarted, _, run_id, reader = await crash_and_recover(tether_process, directive, crash_at)
    async with TetherClient(restarted.url) as client:
        events = [e.data async for e in client.stream_run(run_id)]
    snapshots = [e for e in events if e["type"] == "MESSAGES_SNAPSHOT"]
    # A run that was still queued simply starts; one that had already finished has nothing to resume.
    if reader.status_at_crash == "running":
        assert snapshots, "the resumed run did not announce the checkpoint it resumed from"
    resumed_at = events.index(snapshots[-1]) if snapshots else 0
    reply = "".join(e["delta"] for e in events[resumed_at:] if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert reply.endswith("Finished 6 steps.") or reply.endswith("Ran 4 sleep calls in parallel.")


@pytest.mark.parametrize("crash_at", ["run_started", "text_delta@3"])
async def test_a_message_with_attachments_is_answered_after_a_crash(tether_process, crash_at):
    """Before its first model request (the run starts again from its message) or in its answer (it resumes
    from a checkpoint that holds its attachment without the bytes): the model gets the bytes either way."""
    picture = bytes(range(256)) * 20
    message = [{"type": "text", "text": "look"}, attachment(picture, "image/png", name="p.png")]
    restarted, thread_id, _, _ = await crash_and_recover(tether_process, message, crash_at)
    async with TetherClient(restarted.url) as client:
        stored = await client.get_thread(thread_id)
        [shown] = stored["messages"][0]["attachments"]
        assert await client.get_attachment(shown["id"]) == picture
    assert stored["messages"][-1]["content"] == f'You said: "look" and attached image/png, {len(picture)} bytes.'


async def test_kill_while_awaiting_approval(tether_process):
    async def approve(client: TetherClient, thread_id: str, run_id: str) -> None:
        run = await wait_for_status(client, run_id, {"awaiting_approval"})
        call_id = run["pending_approvals"][0]["tool_call_id"]
        async with httpx.AsyncClient(base_url=str(client._http.base_url)) as http:
            decisions = {"decisions": {call_id: {"approved": True}}}
            response = await http.post(f"/v1/runs/{run_id}/approvals", json=decisions)
            assert response.status_code == 202, response.text

    restarted, *_ = await crash_and_recover(
        tether_process, "/approve kept", "approval_requested", after_restart=approve
    )
    assert (restarted.data_dir / "notes.txt").read_text() == "kept\n"


async def test_kill_during_the_approval_resume(tether_process):
    async def approve(client: TetherClient, thread_id: str, run_id: str) -> None:
        run = await wait_for_status(client, run_id, {"awaiting_approval"})
        call_id = run["pending_approvals"][0]["tool_call_id"]
        async with httpx.AsyncClient(base_url=str(client._http.base_url)) as http:
            await http.post(f"/v1/runs/{run_id}/approvals", json={"decisions": {call_id: {"approved": True}}})

    restarted, _, _, reader = await crash_and_recover(
        tether_process, "/approve maybe", "approval_resumed", before_crash=approve
    )
    # The note's tool was marked started when the process died: it is not run again (at most once),
    # and the model hears that its outcome is unknown.
    assert not (restarted.data_dir / "notes.txt").exists()
    texts = "".join(json.loads(d).get("delta", "") for _, d in reader.events)
    assert "unknown" in texts


async def test_kill_while_an_approved_note_is_being_written(tether_process):
    """A timing-based kill from outside, checked against what was recorded."""
    server = tether_process().start()
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/approve slow note ms=3000")
        paused = await wait_for_status(client, run["run_id"], {"awaiting_approval"})
        call_id = paused["pending_approvals"][0]["tool_call_id"]
        async with httpx.AsyncClient(base_url=server.url) as http:
            await http.post(f"/v1/runs/{run['run_id']}/approvals", json={"decisions": {call_id: {"approved": True}}})
        deadline = time.monotonic() + 20
        while not tool_log(server.data_dir):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    server.stop(signal.SIGKILL)
    assert integrity(server) == "ok"
    restarted = tether_process(data_dir=server.data_dir).start()
    async with TetherClient(restarted.url) as client:
        done = await wait_for_status(client, run["run_id"], {"completed", "failed"}, within=60)
        assert done["status"] == "completed"
        stored = await client.get_thread(thread["id"])
    assert not (restarted.data_dir / "notes.txt").exists(), "the note was written although the call was cut off"
    assert [e["tool"] for e in tool_log(restarted.data_dir)] == ["write_note"]
    assert "unknown" in stored["messages"][-1]["content"]
    await check_consistency(restarted.url, thread["id"], None)


async def test_kill_during_a_steer(tether_process):
    async def steer(client: TetherClient, thread_id: str, run_id: str) -> None:
        results = 0
        async for event in client.stream_run(run_id):
            if event.data["type"] == "TOOL_CALL_RESULT":
                results += 1
                if results == 2:
                    break
        await client.send(thread_id, "new plan: say hi", multitask="steer")

    restarted, thread_id, _, _ = await crash_and_recover(
        tether_process, "/steps 6 ms=100", "steer_applied", before_crash=steer
    )
    async with TetherClient(restarted.url) as client:
        stored = await client.get_thread(thread_id)
    users = [m["content"] for m in stored["messages"] if m["role"] == "user"]
    assert users == ["/steps 6 ms=100", "new plan: say hi"], users


async def test_kill_during_a_burst_of_twenty_runs(tether_process):
    server = tether_process().start()
    async with TetherClient(server.url) as client:
        threads = await asyncio.gather(*[client.create_thread() for _ in range(20)])
        runs = await asyncio.gather(*[client.send(t["id"], "/steps 4 ms=150") for t in threads])
        await asyncio.sleep(0.3)  # every run is somewhere in its steps
    server.stop(signal.SIGKILL)
    assert integrity(server) == "ok"
    restarted = tether_process(data_dir=server.data_dir).start()
    async with TetherClient(restarted.url) as client:
        done = await asyncio.gather(
            *[wait_for_status(client, r["run_id"], {"completed", "failed"}, within=90) for r in runs]
        )
    assert [d["status"] for d in done] == ["completed"] * 20
    for thread in threads:
        await check_consistency(restarted.url, thread["id"], None)


async def test_sigterm_stops_at_a_step_boundary_and_the_run_resumes(tether_process):
    server = tether_process("--shutdown-grace", "5").start()
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/steps 6 ms=300")
        reader = Reader([server.url], thread["id"], run["run_id"])
        reading = asyncio.create_task(reader.read())
        await asyncio.sleep(0.8)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(wait_dead, server)
        took = time.monotonic() - started
    assert code == 0, server.log()[-2000:]
    assert took < 5 + 3, f"shutdown took {took:.1f}s"
    assert "stopped at a step boundary" in server.log()
    assert (await asyncio.to_thread(lambda: integrity(server))) == "ok"
    restarted = tether_process(data_dir=server.data_dir).start()
    reader.urls.append(restarted.url)
    async with TetherClient(restarted.url) as client:
        done = await wait_for_status(client, run["run_id"], {"completed", "failed"}, within=60)
    assert done["status"] == "completed"
    await asyncio.wait_for(reading, 30)
    await check_consistency(restarted.url, thread["id"], reader)
    logged = Counter(e["tool_call_id"] for e in tool_log(restarted.data_dir))
    assert set(logged.values()) == {1}, "a graceful stop re-ran a tool"


async def test_a_run_that_keeps_crashing_fails_with_the_reason(tether_process, tmp_path):
    data_dir = tmp_path / "data"
    crash = {"TETHER_CRASH_AT": "checkpoint_committed@2"}
    first = tether_process("--max-recoveries", "1", data_dir=data_dir, env=crash).start()
    async with TetherClient(first.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/steps 3 ms=50")
    assert await asyncio.to_thread(wait_dead, first) == -signal.SIGKILL
    second = tether_process("--max-recoveries", "1", data_dir=data_dir, env={"TETHER_CRASH_AT": "checkpoint_committed"})
    second.spawn()  # it dies as soon as it has resumed the run once more
    assert await asyncio.to_thread(wait_dead, second) == -signal.SIGKILL
    third = tether_process("--max-recoveries", "1", data_dir=data_dir).start()
    async with TetherClient(third.url) as client:
        failed = await wait_for_status(client, run["run_id"], {"failed", "completed"})
        events = [e.data async for e in client.stream_run(run["run_id"])]
    assert failed["status"] == "failed"
    assert "max-recoveries" in failed["error"]
    assert events[-1]["type"] == "RUN_ERROR" and events[-1]["code"] == "too_many_recoveries"


async def test_shutdown_ends_streams_with_a_reconnect_comment(tether_process):
    server = tether_process("--shutdown-grace", "2").start()
    async with TetherClient(server.url) as client, httpx.AsyncClient(timeout=30) as http:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/stream 100000 ms=1")
        lines: list[str] = []
        async with http.stream("GET", f"{server.url}/v1/threads/{thread['id']}/stream") as response:
            async for line in response.aiter_lines():
                lines.append(line)
                if len(lines) == 40:
                    server.proc.send_signal(signal.SIGTERM)
        assert ": server shutting down; reconnect with Last-Event-ID" in lines
    assert await asyncio.to_thread(wait_dead, server) == 0
    # In a long text stream there is no step boundary: the run was stopped where it was, and resumes.
    restarted = tether_process(data_dir=server.data_dir).start()
    async with TetherClient(restarted.url) as client:
        status = (await client.get_run(run["run_id"]))["status"]
        assert status in ("running", "completed")
        await client.cancel(run["run_id"])


@pytest.mark.sqlite_only  # one SQLite file, one process; PostgreSQL takes many workers
async def test_a_second_server_on_the_same_data_dir_refuses_to_start(tether_process):
    first = tether_process().start()
    second = tether_process(data_dir=first.data_dir).spawn()
    assert await asyncio.to_thread(wait_dead, second) == 2
    assert "another Tether process" in second.log() and str(first.proc.pid) in second.log()
    async with TetherClient(first.url) as client:
        assert await client.list_threads() == []


async def test_the_client_follows_a_run_across_a_graceful_restart(tether_process):
    server = tether_process("--shutdown-grace", "5").start()
    urls = [server.url]
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/steps 4 ms=400")

        async def restart() -> None:
            await asyncio.sleep(0.7)
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(wait_dead, server)
            restarted = tether_process("--port", str(server.port), data_dir=server.data_dir)
            await asyncio.to_thread(restarted.start)
            urls.append(restarted.url)

        restarting = asyncio.create_task(restart())
        seen = [e async for e in client.stream_run(run["run_id"])]
        await restarting
    assert seen[-1].data["type"] == "RUN_FINISHED"
    assert [e.seq for e in seen] == list(range(seen[0].seq, seen[0].seq + len(seen)))
    assert any(e.data["type"] == "MESSAGES_SNAPSHOT" for e in seen), "the run did not resume after the restart"
