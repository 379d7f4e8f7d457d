"""Several workers on one PostgreSQL database and one Redis: real `tether serve` processes.

Any worker serves any stream and any control of any run; a run executes on one worker at a
time (the one holding its lease); a killed worker's runs are taken over when its lease lapses,
a stopped one hands them over at once, and a frozen one is fenced off: the database refuses
what it writes after another worker took its runs.

Workers that share a data directory share its database (see conftest): the demo agent's tool
log is one file for all of them, so "ran once" is counted across workers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from tether.client import TetherClient

from .conftest import TetherProcess, tool_log, wait_for_status, with_store
from .test_recovery import Reader, check_consistency

pytestmark = [pytest.mark.server, pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)]


def health(proc: TetherProcess) -> dict:
    return httpx.get(proc.url + "/healthz", timeout=5).json()


def worker_id(proc: TetherProcess) -> str:
    return health(proc)["worker"]


async def until(check: Callable[[], bool], within: float = 20) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.01)


async def wait_for_worker(client: TetherClient, run_id: str, worker: str, within: float = 20) -> dict:
    deadline = time.monotonic() + within
    while True:
        run = await client.get_run(run_id)
        if run["worker"] == worker:
            return run
        assert time.monotonic() < deadline, f"run {run_id} is not on worker {worker}: {run}"
        await asyncio.sleep(0.02)


async def wait_dead(proc: TetherProcess, within: float = 60) -> int:
    assert proc.proc is not None
    return await asyncio.to_thread(proc.proc.wait, within)


async def run_stream_to_its_end(url: str, run_id: str) -> list[tuple[int, dict]]:
    """The run's SSE stream, read until the server ends the response (as it must after RUN_FINISHED)."""
    events, seq = [], 0
    async with httpx.AsyncClient(timeout=30) as http, http.stream("GET", f"{url}/v1/runs/{run_id}/stream") as response:
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                seq = int(line[4:])
            elif line.startswith("data: "):
                events.append((seq, json.loads(line[6:])))
    return events


async def test_a_run_executes_on_one_worker_while_another_serves_it(tether_process):
    front = tether_process("--max-runs", "0").start()  # serves the API and streams, executes nothing
    back = tether_process(data_dir=front.data_dir).start()
    assert health(front)["engines"] == {
        "store": "postgresql",
        "bus": "redis",
        "bus_healthy": True,
        "database": front.settings.database,
    }
    async with TetherClient(front.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/stream 40 ms=10")
        await wait_for_worker(client, run["run_id"], worker_id(back))
        events = await asyncio.wait_for(run_stream_to_its_end(front.url, run["run_id"]), 30)
        done = await client.get_run(run["run_id"])
    assert done["status"] == "completed" and done["worker"] is None
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
    assert events[-1][1]["type"] == "RUN_FINISHED"
    text = "".join(e["delta"] for _, e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text.endswith(" ".join(f"w{i}" for i in range(1, 41)))
    await check_consistency(back.url, thread["id"], None)


async def test_cancel_approve_and_steer_through_the_worker_that_does_not_run_it(tether_process):
    front = tether_process("--max-runs", "0").start()
    back = tether_process(data_dir=front.data_dir).start()
    async with TetherClient(front.url) as client:
        thread = await client.create_thread()
        # cancel
        run = await client.send(thread["id"], "/stream 1000 ms=20")
        await wait_for_worker(client, run["run_id"], worker_id(back))
        cancelled = await client.cancel(run["run_id"])
        assert cancelled["status"] == "cancelled", cancelled
        events = [e.data async for e in client.stream_run(run["run_id"])]
        assert [e["type"] for e in events[-2:]] == ["CUSTOM", "RUN_FINISHED"]
        # approve: the decision arrives at the front, the back resumes the run
        run = await client.send(thread["id"], "/approve from the front")
        paused = await wait_for_status(client, run["run_id"], {"awaiting_approval"})
        call_id = paused["pending_approvals"][0]["tool_call_id"]
        await client.decide(run["run_id"], {call_id: {"approved": True}})
        done = await wait_for_status(client, run["run_id"], {"completed", "failed"})
        assert done["status"] == "completed"
        # steer
        run = await client.send(thread["id"], "/steps 4 ms=300")
        await wait_for_worker(client, run["run_id"], worker_id(back))
        steered = await client.steer(thread["id"], "/stream 2")
        assert steered["delivery"] == "inbox" and steered["run_id"] == run["run_id"]
        done = await wait_for_status(client, run["run_id"], {"completed", "failed"})
        stored = await client.get_thread(thread["id"])
    assert done["status"] == "completed"
    assert (front.data_dir / "notes.txt").read_text() == "from the front\n"
    assert stored["messages"][-1]["content"] == "w1 w2"
    await check_consistency(front.url, thread["id"], None)


async def test_a_killed_workers_run_is_taken_over_and_the_reader_sees_every_event_once(tether_process):
    front = tether_process("--max-runs", "0", "--lease", "2").start()
    crash = {"TETHER_CRASH_AT": "tools_started@3"}  # SIGKILL itself mid-run, as the OOM killer would
    doomed = tether_process("--lease", "2", data_dir=front.data_dir, env=crash).start()
    async with TetherClient(front.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/steps 6 ms=200")
        reader = Reader([front.url], thread["id"], run["run_id"])
        reading = asyncio.create_task(reader.read())
        assert await wait_dead(doomed) == -signal.SIGKILL
        killed_at = time.monotonic()
        heir = tether_process("--lease", "2", data_dir=front.data_dir).start()
        await wait_for_worker(client, run["run_id"], worker_id(heir), within=2 + 15)
        took_over = time.monotonic() - killed_at
        done = await wait_for_status(client, run["run_id"], {"completed", "failed"})
        await asyncio.wait_for(reading, 30)
    assert done["status"] == "completed", heir.log()[-2000:]
    assert took_over < 2 + 10, f"takeover took {took_over:.1f}s with a 2s lease"
    assert "taken over" in heir.log()
    await check_consistency(front.url, thread["id"], reader)
    assert reader.reconnects == 0, "the front worker's stream went on by itself"
    runs = Counter(e["tool_call_id"] for e in tool_log(front.data_dir))
    assert max(runs.values()) <= 2  # sleep is idempotent: at most the one in flight ran again


async def test_sigterm_hands_runs_over_without_waiting_for_the_lease(tether_process):
    front = tether_process("--max-runs", "0", "--lease", "30").start()
    leaving = tether_process("--lease", "30", data_dir=front.data_dir).start()
    async with TetherClient(front.url) as client:
        thread = await client.create_thread()
        # Long enough to outlast the next worker's start on a loaded machine (several seconds), and under
        # pydantic-ai's default limit of 50 model requests per run (one per step, and one more).
        run = await client.send(thread["id"], "/steps 45 ms=300")
        await wait_for_worker(client, run["run_id"], worker_id(leaving))
        staying = tether_process("--lease", "30", data_dir=front.data_dir).start()
        reader = Reader([front.url], thread["id"], run["run_id"])
        reading = asyncio.create_task(reader.read())
        await asyncio.sleep(0.5)
        before = await client.get_run(run["run_id"])
        assert before["status"] == "running" and before["worker"] == worker_id(leaving), before
        leaving.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await wait_for_worker(client, run["run_id"], worker_id(staying), within=15)
        handed_over = time.monotonic() - signalled
        done = await wait_for_status(client, run["run_id"], {"completed", "failed"})
        await asyncio.wait_for(reading, 30)
    assert await wait_dead(leaving) == 0
    assert done["status"] == "completed"
    assert handed_over < 10, f"handover took {handed_over:.1f}s (the lease is 30s)"
    stored = await with_store(front.settings, lambda store: store.get_run(run["run_id"]))
    assert stored is not None and stored.recoveries == 0, "a handover is not a recovery"
    await check_consistency(front.url, thread["id"], reader)
    assert set(Counter(e["tool_call_id"] for e in tool_log(front.data_dir)).values()) == {1}


async def test_a_frozen_worker_is_fenced_off_after_another_takes_its_run(tether_process):
    front = tether_process("--max-runs", "0", "--lease", "2").start()
    frozen = tether_process("--lease", "2", data_dir=front.data_dir).start()
    async with TetherClient(front.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/steps 40 ms=300")  # outlasts the heir's start
        await wait_for_worker(client, run["run_id"], worker_id(frozen))
        heir = tether_process("--lease", "2", data_dir=front.data_dir).start()
        await asyncio.sleep(0.6)
        before = await client.get_run(run["run_id"])
        assert before["status"] == "running" and before["worker"] == worker_id(frozen), before
        frozen.proc.send_signal(signal.SIGSTOP)
        try:
            await wait_for_worker(client, run["run_id"], worker_id(heir), within=15)
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
        done = await wait_for_status(client, run["run_id"], {"completed", "failed"})
        await until(lambda: "abandon" in frozen.log(), within=10)
    assert done["status"] == "completed", (done, heir.log()[-3000:], frozen.log()[-3000:])
    await check_consistency(front.url, thread["id"], None)


async def test_two_posts_to_one_thread_on_two_workers_make_one_run(tether_process):
    a = tether_process().start()
    b = tether_process(data_dir=a.data_dir).start()
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(10):
            thread = (await http.post(f"{a.url}/v1/threads")).json()
            body = {"input": "/stream 50 ms=100"}  # still running when the other request is checked
            answers = await asyncio.gather(
                http.post(f"{a.url}/v1/threads/{thread['id']}/runs", json=body),
                http.post(f"{b.url}/v1/threads/{thread['id']}/runs", json=body),
            )
            assert sorted(r.status_code for r in answers) == [202, 409], [r.text for r in answers]
            runs = (await http.get(f"{a.url}/v1/threads/{thread['id']}/runs")).json()["runs"]
            assert len(runs) == 1


async def test_twenty_runs_over_three_workers_with_one_killed(tether_process):
    workers = [tether_process("--lease", "2").start()]
    workers += [tether_process("--lease", "2", data_dir=workers[0].data_dir).start() for _ in range(2)]
    async with TetherClient(workers[0].url) as client:
        threads = await asyncio.gather(*[client.create_thread() for _ in range(20)])
        runs = await asyncio.gather(*[client.send(t["id"], "/steps 4 ms=150") for t in threads])
        await asyncio.sleep(0.4)
        workers[1].stop(signal.SIGKILL)
        done = await asyncio.gather(
            *[wait_for_status(client, r["run_id"], {"completed", "failed"}, within=60) for r in runs]
        )
    assert [d["status"] for d in done] == ["completed"] * 20, [d["error"] for d in done if d["error"]]
    for thread in threads:
        await check_consistency(workers[2].url, thread["id"], None)


def child_pids(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return sorted(int(p) for p in found)


async def test_the_workers_flag_serves_one_port_with_n_processes_and_restarts_a_dead_one(tether_process):
    server = tether_process("--workers", "2").start()
    await until(lambda: server.log().count("Tether is ready") == 2)
    children = child_pids(server.proc.pid)
    assert len(children) == 2
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/stream 5")
        assert (await wait_for_status(client, run["run_id"], {"completed", "failed"}))["status"] == "completed"
        os.kill(children[0], signal.SIGKILL)
        await until(lambda: "exited with -9" in server.log() and server.log().count("Tether is ready") == 3)
        assert len(child_pids(server.proc.pid)) == 2 and children[0] not in child_pids(server.proc.pid)
        run = await client.send(thread["id"], "/stream 5")
        assert (await wait_for_status(client, run["run_id"], {"completed", "failed"}))["status"] == "completed"
    survivors = child_pids(server.proc.pid)
    server.proc.send_signal(signal.SIGTERM)
    assert await wait_dead(server) == 0
    assert not [pid for pid in survivors if alive(pid)], "a worker outlived the supervisor"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_redis_restarted_mid_stream_loses_no_event_and_fails_no_run(tether_process, private_redis):
    await private_redis.start()
    redis = ("--redis", private_redis.url)
    front = tether_process("--max-runs", "0", *redis).start()
    back = tether_process(*redis, data_dir=front.data_dir).start()
    async with TetherClient(front.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/stream 150 ms=20")
        await wait_for_worker(client, run["run_id"], worker_id(back))
        reader = Reader([front.url], thread["id"], run["run_id"])  # live events cross Redis to reach it
        reading = asyncio.create_task(reader.read())
        await until(lambda: len(reader.events) > 20)
        private_redis.kill()
        await until(lambda: not health(front)["engines"]["bus_healthy"], within=5)
        await asyncio.sleep(1)
        await private_redis.start()
        done = await wait_for_status(client, run["run_id"], {"completed", "failed"})
        await asyncio.wait_for(reading, 30)
        assert done["status"] == "completed"
        await check_consistency(front.url, thread["id"], reader)
        assert reader.reconnects == 0, "the stream went on from the database by itself"
        await until(lambda: health(front)["engines"]["bus_healthy"], within=10)
        after = await client.send(thread["id"], "/stream 5")  # live delivery is back
        events = [e async for e in client.stream_run(after["run_id"])]
    assert events[-1].data["type"] == "RUN_FINISHED"


async def test_postgres_stopped_for_five_seconds_mid_run(tether_process, private_postgres):
    database = ("--database", private_postgres.url)
    server = tether_process(*database).start()
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/steps 10 ms=400")
        reader = Reader([server.url], thread["id"], run["run_id"])
        reading = asyncio.create_task(reader.read())
        await until(lambda: len(reader.events) > 10)
        await asyncio.to_thread(private_postgres.stop)
        meanwhile = await http.get(f"/v1/threads/{thread['id']}")
        assert meanwhile.status_code == 503, meanwhile.text
        assert meanwhile.json()["error"]["code"] == "unavailable"
        await asyncio.sleep(5)
        await asyncio.to_thread(private_postgres.start)
        done = await wait_for_status(client, run["run_id"], {"completed", "failed"}, within=60)
        await asyncio.wait_for(reading, 30)
    assert done["status"] == "completed", server.log()[-3000:]
    await check_consistency(server.url, thread["id"], reader)
    assert "the database is unreachable" in server.log()


async def test_cancel_and_steer_reach_their_run_through_the_database_while_redis_is_down(tether_process, private_redis):
    await private_redis.start()
    flags = ("--redis", private_redis.url, "--lease", "3")
    front = tether_process("--max-runs", "0", *flags).start()
    back = tether_process(*flags, data_dir=front.data_dir).start()
    async with TetherClient(front.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/steps 12 ms=400")
        await wait_for_worker(client, run["run_id"], worker_id(back))
        private_redis.kill()
        await until(lambda: not health(back)["engines"]["bus_healthy"], within=5)
        steered = await client.steer(thread["id"], "/stream 2")
        assert steered["delivery"] == "inbox"
        done = await wait_for_status(client, run["run_id"], {"completed", "failed"}, within=30)
        stored = await client.get_thread(thread["id"])
        assert done["status"] == "completed"
        assert [m["content"] for m in stored["messages"] if m["role"] == "user"] == ["/steps 12 ms=400", "/stream 2"]
        assert stored["messages"][-1]["content"] == "w1 w2"
        assert len(await client.list_runs(thread["id"])) == 1, "the steer reached the run, not a follow-up"
        run = await client.send(thread["id"], "/stream 1000 ms=20")
        await wait_for_worker(client, run["run_id"], worker_id(back))
        cancelled = await client.cancel(run["run_id"])
    assert cancelled["status"] == "cancelled"
    await check_consistency(front.url, thread["id"], None)
