"""Load and soak (issue 11): what a crowd does to one server, and whether a long mixed load leaks.

    .venv/bin/python bench/soak.py [--only a,b,c,d,e] [--soak-seconds 600] [--quick]

Every part starts its own `tether serve` (SQLite, the demo agent, a data directory of its own, loopback
only) and stops it at the end, also on Ctrl-C. Bounded and self-stopping.

(a) 1,000 SSE watchers on one thread while `/stream 2000 ms=5` runs: every watcher gets every event
    once (checked), and the run's own time against the same run with 1 watcher (the ratio: a run should
    not wait for its audience).
(b) 300 concurrent runs of `/stream 50 ms=20`, one thread each, all POSTed at once: all complete (checked);
    the time until the last completes.
(c) 1,100 idle keep-alive connections (each made one request, then idles) while /healthz is asked every
    50 ms: its median and worst latency with them open, and that the server closed them after
    --header-timeout.
(d) 10,000 threads: GET /v1/threads (50) and GET /v1/threads/{tid}, median and p99 of 200 each.
(e) soak: for --soak-seconds, 20 clients in a loop of mixed work (streams read with random disconnects and
    Last-Event-ID resumes, /tools, /approve decided or cancelled, cancels), each on a new thread every 20
    runs (so that growing histories do not pass for a leak); the server's RSS and open file descriptors
    sampled every 10 s; the slope over the second half (per minute). Every run must end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


class Server:
    """One `tether serve` on port 0; its URL from the ready line."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.log = data_dir.with_suffix(".log")
        command = [
            PYTHON,
            "-m",
            "tether",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
        ]
        self.proc = subprocess.Popen([*command, *args], stdout=self.log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 30
        while not (found := re.search(r"Tether is ready: (\S+)/", self.log.read_text())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(self.log.read_text())
            time.sleep(0.05)
        self.url = found[1]

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as status:
            kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
        return kb / 1024

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def read_run(http: httpx.AsyncClient, path: str, after: int = 0) -> list[int]:
    """The seqs of a stream until its RUN_FINISHED / RUN_ERROR."""
    seqs: list[int] = []
    async with http.stream("GET", path, headers={"Last-Event-ID": str(after)}, timeout=None) as response:
        seq = None
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                seq = int(line[4:])
            elif line.startswith("data: ") and seq is not None:
                seqs.append(seq)
                if '"type":"RUN_FINISHED"' in line or '"type":"RUN_ERROR"' in line:
                    return seqs
    return seqs


async def wait_done(http: httpx.AsyncClient, run_id: str, within: float = 300) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = (await http.get(f"/v1/runs/{run_id}")).json()["status"]
        if status in ("completed", "failed", "cancelled"):
            return status
        await asyncio.sleep(0.2)
    run = (await http.get(f"/v1/runs/{run_id}")).json()
    others = (await http.get(f"/v1/threads/{run['thread_id']}/runs")).json()["runs"]
    raise AssertionError(
        f"run {run_id} did not end within {within:.0f} s: {run}\nthe thread's runs: "
        + ", ".join(f"{r['id']} {r['status']}" for r in others)
    )


async def watch(http: httpx.AsyncClient, path: str, seqs: list[int]) -> None:
    """Collect a thread stream's seqs until a RUN_FINISHED."""
    async with http.stream("GET", path, timeout=None) as response:
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                seqs.append(int(line[4:]))
            elif '"type":"RUN_FINISHED"' in line:
                return


async def wait_status(http: httpx.AsyncClient, run_id: str, status: str) -> dict[str, Any]:
    while (run := (await http.get(f"/v1/runs/{run_id}")).json())["status"] != status:
        if run["status"] in ("completed", "failed", "cancelled"):
            raise AssertionError(f"run {run_id} ended {run['status']} ({run['error']}) before it was {status}")
        await asyncio.sleep(0.05)
    return run


async def part_a(tmp: Path, watchers: int) -> None:
    server = Server(tmp / "a", "--max-streams", str(watchers + 10), "--max-connections", str(watchers + 100))
    try:
        limits = httpx.Limits(max_connections=watchers + 10)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as http:
            durations = {}
            for audience in (1, watchers):
                tid = (await http.post("/v1/threads")).json()["id"]
                after = (await http.get(f"/v1/threads/{tid}")).json()["last_seq"]
                got: list[list[int]] = [[] for _ in range(audience)]

                tasks = [asyncio.create_task(watch(http, f"/v1/threads/{tid}/stream?after={after}", g)) for g in got]
                await asyncio.sleep(2 + audience / 200)  # every watcher connected and live
                started = time.perf_counter()
                rid = (await http.post(f"/v1/threads/{tid}/runs", json={"input": "/stream 2000 ms=5"})).json()["run_id"]
                await wait_done(http, rid)
                run = (await http.get(f"/v1/runs/{rid}")).json()
                durations[audience] = run["finished_at"] - run["started_at"]
                await asyncio.wait_for(asyncio.gather(*tasks), 300)
                wall = time.perf_counter() - started
                expected = got[0]
                exact = all(g == expected for g in got) and expected == list(
                    range(after + 1, after + 1 + len(expected))
                )
                print(
                    f"(a) {audience:>5} watchers: run {durations[audience]:.2f}s, all delivered {wall:.2f}s, "
                    f"{len(expected)} events each, every watcher every event once: {exact}"
                )
            print(f"(a) run time with {watchers} watchers / with 1: {durations[watchers] / durations[1]:.2f}x")
    finally:
        server.stop()


async def part_b(tmp: Path, runs: int) -> None:
    server = Server(tmp / "b", "--max-runs", str(runs))
    try:
        async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=400), timeout=60) as http:
            threads = [(await http.post("/v1/threads")).json()["id"] for _ in range(runs)]
            started = time.perf_counter()
            posted = await asyncio.gather(
                *(http.post(f"/v1/threads/{tid}/runs", json={"input": "/stream 50 ms=20"}) for tid in threads)
            )
            statuses = await asyncio.gather(*(wait_done(http, p.json()["run_id"]) for p in posted))
            took = time.perf_counter() - started
            print(
                f"(b) {runs} concurrent runs: {statuses.count('completed')} completed in {took:.2f}s "
                f"(one alone takes ~1.0s)"
            )
    finally:
        server.stop()


async def part_c(tmp: Path, idle: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = Server(tmp / "c", "--header-timeout", "10")
    try:
        clients = []
        for _ in range(idle):
            client = httpx.AsyncClient(base_url=server.url, timeout=10)
            await client.get("/healthz")  # one request each; then the connection idles in its pool
            clients.append(client)
        print(f"(c) {idle} idle keep-alive connections open; server fds {server.fds()}")
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as probe:
            latencies = []
            until = time.monotonic() + 5
            while time.monotonic() < until:
                began = time.perf_counter()
                assert (await probe.get("/healthz")).status_code == 200
                latencies.append((time.perf_counter() - began) * 1000)
                await asyncio.sleep(0.05)
            print(
                f"(c) /healthz meanwhile: median {statistics.median(latencies):.1f} ms, worst {max(latencies):.1f} ms"
            )
            await asyncio.sleep(12)
            print(f"(c) after the header timeout: server fds {server.fds()}")
        for client in clients:
            await client.aclose()
    finally:
        server.stop()


async def part_d(tmp: Path, count: int) -> None:
    server = Server(tmp / "d")
    try:
        async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=50), timeout=60) as http:
            ids: list[str] = []
            for start in range(0, count, 200):
                made = await asyncio.gather(
                    *(http.post("/v1/threads", json={"title": f"thread {i}"}) for i in range(start, start + 200))
                )
                ids += [r.json()["id"] for r in made]

            async def timed(path: str) -> float:
                began = time.perf_counter()
                assert (await http.get(path)).status_code == 200
                return (time.perf_counter() - began) * 1000

            lists = [await timed("/v1/threads?limit=50") for _ in range(200)]
            gets = [await timed(f"/v1/threads/{random.choice(ids)}") for _ in range(200)]
            for name, values in (("GET /v1/threads", lists), ("GET /v1/threads/{tid}", gets)):
                values.sort()
                print(
                    f"(d) {len(ids)} threads, {name}: median {statistics.median(values):.1f} ms, "
                    f"p99 {values[int(len(values) * 0.99) - 1]:.1f} ms"
                )
    finally:
        server.stop()


def keep_log(server: Server, kept: Path) -> str:
    """Keep the server's log out of the temporary directory; where it is, and its end."""
    shutil.copy(server.log, kept)
    return f"the server's log is kept in {kept}; its end:\n" + "\n".join(kept.read_text().splitlines()[-40:])


async def part_e(tmp: Path, seconds: float) -> None:
    server = Server(tmp / "e", "--log-level", "info")  # what each run did, should one not end
    samples: list[tuple[float, float, int]] = []
    ended = {"completed": 0, "failed": 0, "cancelled": 0}
    stop = time.monotonic() + seconds

    async def client(number: int) -> None:
        rng = random.Random(number)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            done = 0
            while time.monotonic() < stop:
                if done % 20 == 0:  # a new thread now and then: a leak, not a longer history, should show
                    tid = (await http.post("/v1/threads")).json()["id"]
                done += 1
                kind = rng.choice(["stream", "stream", "tools", "approve", "cancel"])
                text = {
                    "stream": "/stream 200 ms=5",
                    "tools": "/tools 3 ms=50",
                    "approve": "/approve soak",
                    "cancel": "/stream 400 ms=10",
                }[kind]
                rid = (await http.post(f"/v1/threads/{tid}/runs", json={"input": text, "multitask": "enqueue"})).json()[
                    "run_id"
                ]
                if kind == "stream":  # read a part, drop the connection, resume with Last-Event-ID
                    seqs: list[int] = []
                    try:
                        async with asyncio.timeout(rng.uniform(0.05, 0.5)):
                            seqs = await read_run(http, f"/v1/runs/{rid}/stream")
                    except TimeoutError:
                        pass
                    await read_run(http, f"/v1/runs/{rid}/stream", seqs[-1] if seqs else 0)
                elif kind == "approve":
                    run = await wait_status(http, rid, "awaiting_approval")
                    if rng.random() < 0.5:
                        call = run["pending_approvals"][0]["tool_call_id"]
                        await http.post(f"/v1/runs/{rid}/approvals", json={"decisions": {call: {"approved": True}}})
                    else:
                        await http.post(f"/v1/runs/{rid}/cancel")
                elif kind == "cancel":
                    await asyncio.sleep(rng.uniform(0.1, 1))
                    await http.post(f"/v1/runs/{rid}/cancel")
                ended[await wait_done(http, rid)] += 1

    async def sample() -> None:
        began = time.monotonic()
        while time.monotonic() < stop:
            samples.append((time.monotonic() - began, server.rss_mb(), server.fds()))
            await asyncio.sleep(10)

    try:
        try:
            await asyncio.gather(sample(), *(client(i) for i in range(20)))
        except AssertionError:
            print(keep_log(server, Path("/tmp/tether-soak-server.log")))
            raise
        half = [s for s in samples if s[0] >= seconds / 2]
        if len(half) >= 2:
            minutes = (half[-1][0] - half[0][0]) / 60
            print(
                f"(e) soak {seconds:.0f}s: runs ended {ended}; RSS {samples[0][1]:.0f} → {samples[-1][1]:.0f} MB "
                f"(second half {(half[-1][1] - half[0][1]) / minutes:+.2f} MB/min), fds {samples[0][2]} → "
                f"{samples[-1][2]} (second half {(half[-1][2] - half[0][2]) / minutes:+.1f}/min)"
            )
        print("(e) samples (s, RSS MB, fds): " + ", ".join(f"{t:.0f}:{r:.0f}:{f}" for t, r, f in samples))
    finally:
        server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="a,b,c,d,e")
    parser.add_argument("--soak-seconds", type=float, default=600)
    parser.add_argument("--quick", action="store_true", help="smaller crowds, a 60 s soak")
    args = parser.parse_args()
    quick = args.quick
    print(f"# load and soak, {time.strftime('%Y-%m-%d %H:%M')}, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        parts = {
            "a": lambda: part_a(Path(tmp), 200 if quick else 1000),
            "b": lambda: part_b(Path(tmp), 100 if quick else 300),
            "c": lambda: part_c(Path(tmp), 300 if quick else 1100),
            "d": lambda: part_d(Path(tmp), 2000 if quick else 10_000),
            "e": lambda: part_e(Path(tmp), 60 if quick else args.soak_seconds),
        }
        for name in args.only.split(","):
            await parts[name]()


if __name__ == "__main__":
    asyncio.run(main())
