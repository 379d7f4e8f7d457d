"""Crash-recovery benchmarks (issue 4), run by hand:

    .venv/bin/python bench/recovery.py [--quick]

1. Time from process start to the first event of a resumed run, with 1, 100 and 1,000 runs to
   recover: N runs are parked inside a slow tool call, the server is killed with SIGKILL and
   started again on the same data directory; a client waiting on the feed measures when the first
   resumed run's events appear, and when the last of the N has resumed.
2. Checkpoint cost: `/steps 200` with 0 ms tools through the engine (no HTTP), checkpoints on vs
   off (Settings.checkpoints, a benchmark-only switch), alternated in one process; ratio of medians.

Traffic stays on 127.0.0.1; every subprocess is killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tether.agents import load_agents
from tether.bus.memory import MemoryBus
from tether.config import Settings
from tether.engine import Engine
from tether.store.sqlite import SQLiteStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tether",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}", started


def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise RuntimeError("server did not start")


async def park_runs(url: str, count: int) -> list[str]:
    """Start `count` runs that sit in a 10-minute tool call, and wait until every call has started."""
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=50)) as http:
        sem = asyncio.Semaphore(50)

        async def one() -> str:
            async with sem:
                thread = (await http.post("/v1/threads")).json()
                await http.post(f"/v1/threads/{thread['id']}/runs", json={"input": "/steps 1 ms=600000"})
                return thread["id"]

        threads = await asyncio.gather(*[one() for _ in range(count)])
    return threads


async def last_feed_seq(url: str) -> int:
    """The feed's last sequence number: the `id:` of the snapshot a fresh /v1/events connection starts with."""
    async with httpx.AsyncClient(timeout=10) as http, http.stream("GET", url + "/v1/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                return int(line[4:])
    raise RuntimeError("the feed sent no snapshot")


def tools_started(data_dir: Path) -> int:
    path = data_dir / "demo_tools.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def time_to_resume(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        proc, url, _ = start_server(data_dir)
        try:
            wait_healthy(url)
            await park_runs(url, count)
            deadline = time.monotonic() + 120
            while tools_started(data_dir) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError("runs did not all reach their tool call")
                await asyncio.sleep(0.05)
            feed_seq = await last_feed_seq(url)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

        proc, url, started = start_server(data_dir)
        try:
            first = last = None
            resumed: set[str] = set()
            async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=120)) as http:
                while first is None:
                    try:
                        headers = {"Last-Event-ID": str(feed_seq)}
                        async with http.stream("GET", url + "/v1/events", headers=headers) as resp:
                            async for line in resp.aiter_lines():
                                if not line.startswith("data: "):
                                    continue
                                notice = json.loads(line[6:])
                                if notice.get("type") == "run.status" and notice.get("status") == "running":
                                    now = time.perf_counter()
                                    resumed.add(notice["runId"])
                                    first = first or now
                                    if len(resumed) == count:
                                        last = now
                                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.005)
            return {"runs": count, "first_s": first - started, "all_s": (last or time.perf_counter()) - started}
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


async def checkpoint_cost(repeats: int, steps: int) -> dict[str, float]:
    """Median run time of `/steps N` (0 ms tools) with checkpoints on and off, alternated."""
    timings: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats * 2):
            on = i % 2 == 0
            settings = Settings(data_dir=Path(tmp) / f"d{i}", checkpoints=on, request_limit=steps + 10)
            settings.data_dir.mkdir(parents=True)
            engine = Engine(
                SQLiteStore(settings.database_path), MemoryBus(), load_agents((), settings.data_dir), settings
            )
            await engine.start()
            thread = await engine.create_thread()
            started = time.perf_counter()
            run = await engine.start_run(thread.id, f"/steps {steps}")
            async for _ in (await engine.follow_run(run.id, 0)).batches():
                pass  # the run's stream ends with its terminal event
            timings[on].append(time.perf_counter() - started)
            assert (await engine.get_run(run.id)).status == "completed"
            await engine.stop()
    on, off = statistics.median(timings[True]), statistics.median(timings[False])
    return {"steps": steps, "on_s": on, "off_s": off, "ratio": on / off}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 and 100 runs only, fewer repeats")
    args = parser.parse_args()
    print(
        f"# recovery benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}"
    )
    for count in (1, 100) if args.quick else (1, 100, 1000):
        r = await time_to_resume(count)
        print(
            f"resume {r['runs']:>5} runs: first resumed event {r['first_s'] * 1000:7.0f} ms after process "
            f"start, all resumed after {r['all_s'] * 1000:7.0f} ms",
            flush=True,
        )
    cost = await checkpoint_cost(3 if args.quick else 7, 200)
    print(
        f"checkpoint cost, /steps {cost['steps']} with 0 ms tools: on {cost['on_s'] * 1000:.0f} ms, "
        f"off {cost['off_s'] * 1000:.0f} ms, ratio {cost['ratio']:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
