"""Streaming benchmarks (issue 2), run by hand:

    .venv/bin/python bench/stream.py [--quick] [--parts ...] [--steps 200,300] [--replays 7] [--loop asyncio]

(a) the in-process ceiling: the demo model's `/stream 100000` consumed straight from pydantic-ai
    (Agent.iter + node.stream, as Tether's runner drives it), no server;
(b) the same through Tether: a real `tether serve` process, durable, one SSE client over
    loopback; and the time from POST to the first event on an already-open thread stream;
(c) replay of a 100,000-event thread: time to the first replayed event, and events/s (--replays
    times, one after another: one server's replays vary less than two servers');
(d) capacity: the most concurrent `/stream 400 ms=50` runs (20 words/s each) with the p99 gap
    between consecutive events at the clients under 250 ms, through Tether and for pydantic-ai
    alone (concurrent in-process runs); and the server's peak RSS per run;
(e) fan-out: one `/stream 2000 ms=5` (10 s nominal) with 1, 100 and 1,000 watchers on its
    thread's stream: the run's own duration, the server's CPU per delivered frame, and whether
    every watcher got every event exactly once;
(f) 50 stalled readers (connections that never read) on a fast `/stream 20000`: its duration
    against the same run with no readers;
(g) reconnect while a run streams at full speed (`/stream 300000`): the time from connecting to
    its thread's stream with a Last-Event-ID 10 events behind the live tail to the first replayed
    event, 50 times, 20 ms apart.

Everything runs in one go on this machine, so the ratios are side by side. The clients read the
SSE bytes straight off their sockets (see RawStream) and run in this process, on the same kind of
event loop as the server (uvloop when installed) unless --loop says otherwise; so do the
in-process runs of (a) and (d), so both sides of each ratio get the same loop. Traffic stays on
127.0.0.1; the server process is killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic_ai import Agent

from tether.agents.demo import build_demo_agent
from tether.engine import collector

GAP_LIMIT = 0.250


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tether",
                "serve",
                "--port",
                "0",
                "--data-dir",
                str(data_dir),
                "--log-level",
                "warning",
                "--request-limit",
                "1000",
                "--max-runs",
                "2000",  # every run executes at once: capacity is measured, not the queue
                "--max-streams",
                "5000",  # (e) has 1,000 watchers, all of one user
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if match := re.search(r"Tether is ready: (http://\S+?)/", line):
                self.url = match[1]
                return
        raise RuntimeError("the server did not start")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def in_process(agent: Agent, prompt: str, on_event=None) -> int:
    count = 0
    async with agent.iter(prompt) as run:
        async for node in run:
            if Agent.is_model_request_node(node) or Agent.is_call_tools_node(node):
                async with node.stream(run.ctx) as events:
                    async for _ in events:
                        count += 1
                        if on_event is not None:
                            on_event()
    return count


async def ceiling(agent: Agent, words: int) -> float:
    started = time.perf_counter()
    count = await in_process(agent, f"/stream {words}")
    return count / (time.perf_counter() - started)


class FrameCounter:
    """Counts SSE frames (events and comments) in a byte stream, also when "\n\n" spans two chunks."""

    def __init__(self) -> None:
        self.count = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> int:
        data = self._tail + chunk
        new = data.count(b"\n\n") - self._tail.count(b"\n\n")
        self._tail = data[-1:]
        self.count += new
        return new


class RawStream(asyncio.Protocol):
    """An SSE response read as raw bytes off the socket, for a load generator that costs little.

    httpx parses every chunk through several layers; with hundreds of streams in one process that
    made the client itself a source of gaps. Here each read is one callback: `on_data(chunk, now)`
    gets the bytes as received (HTTP headers and chunk framing included, which never contain a
    blank line "\n\n", so counting frames by their ends stays right) and when they arrived.
    """

    def __init__(self, on_data: Callable[[bytes, float], None]) -> None:
        self._on_data = on_data
        self._status_checked = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self._status_checked:
            self._status_checked = True
            if not data.startswith(b"HTTP/1.1 200"):
                self.done.set_exception(RuntimeError(f"stream refused: {data[:200]!r}"))
                return
        self._on_data(data, now)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def open_stream(url: str, path: str, on_data: Callable[[bytes, float], None]) -> RawStream:
    """GET an SSE stream over a fresh connection that the server closes when the response ends."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    transport, stream = await asyncio.get_running_loop().create_connection(lambda: RawStream(on_data), host, int(port))
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    transport.write(request.encode())
    stream.done.add_done_callback(lambda _: transport.close())
    return stream


async def through_tether(url: str, words: int) -> tuple[float, str]:
    async with httpx.AsyncClient(base_url=url, timeout=None) as http:
        thread = (await http.post("/v1/threads")).json()["id"]
        started = time.perf_counter()
        run = (await http.post(f"/v1/threads/{thread}/runs", json={"input": f"/stream {words}"})).json()
        frames = FrameCounter()
        stream = await open_stream(url, f"/v1/runs/{run['run_id']}/stream", lambda data, _: frames.feed(data))
        await stream.done
        return frames.count / (time.perf_counter() - started), thread


async def post_to_first_event(url: str, samples: int) -> list[float]:
    """POST a run while the thread's stream is open; time until its first event arrives."""
    async with httpx.AsyncClient(base_url=url, timeout=None) as http:
        thread = (await http.post("/v1/threads")).json()["id"]
        arrivals: asyncio.Queue[float] = asyncio.Queue()

        def on_data(data: bytes, now: float) -> None:
            for _ in range(data.count(b'"RUN_STARTED"')):
                arrivals.put_nowait(now)

        follower = await open_stream(url, f"/v1/threads/{thread}/stream", on_data)
        await asyncio.sleep(0.3)
        latencies = []
        for _ in range(samples):
            sent = time.perf_counter()
            await http.post(f"/v1/threads/{thread}/runs", json={"input": "/stream 1", "multitask": "enqueue"})
            latencies.append(await asyncio.wait_for(arrivals.get(), 10) - sent)
            await asyncio.sleep(0.02)
        follower.done.cancel()
        return latencies


async def replay(url: str, thread: str, expected: int) -> tuple[float, float]:
    started = time.perf_counter()
    first: list[float] = []
    frames = FrameCounter()

    def on_data(data: bytes, now: float) -> None:
        if not first:
            first.append(now - started)
        frames.feed(data)
        if frames.count >= expected and not stream.done.done():
            stream.done.set_result(None)

    stream = await open_stream(url, f"/v1/threads/{thread}/stream?after=0", on_data)
    await stream.done
    return first[0] if first else 0.0, frames.count / (time.perf_counter() - started)


async def tether_gaps(url: str, runs: int) -> list[float]:
    """p99 material: gaps between consecutive events of each of `runs` concurrent 20-words/s runs."""
    gaps: list[float] = []
    limits = httpx.Limits(max_connections=runs * 2 + 10, keepalive_expiry=1)  # before the server drops it (5 s)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as http:

        async def one() -> None:
            thread = (await http.post("/v1/threads")).json()["id"]
            run = (await http.post(f"/v1/threads/{thread}/runs", json={"input": "/stream 400 ms=50"})).json()
            last: list[float] = []
            frames = FrameCounter()

            def on_data(data: bytes, now: float) -> None:
                arrived = frames.feed(data)
                if arrived and last:
                    gaps.append(now - last[0])  # events that arrive in one read arrive together
                    gaps.extend([0.0] * (arrived - 1))
                if arrived:
                    last[:] = [now]

            await (await open_stream(url, f"/v1/runs/{run['run_id']}/stream", on_data)).done

        await asyncio.gather(*[one() for _ in range(runs)])
    return gaps


async def alone_gaps(agent: Agent, runs: int) -> list[float]:
    gaps: list[float] = []

    async def one() -> None:
        last: list[float] = []

        def on_event() -> None:
            now = time.perf_counter()
            if last:
                gaps.append(now - last[0])
                last[0] = now
            else:
                last.append(now)

        await in_process(agent, "/stream 400 ms=50", on_event)

    await asyncio.gather(*[one() for _ in range(runs)])
    return gaps


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_duration(http: httpx.AsyncClient, run_id: str) -> float:
    """The run's own duration, by the server's clock: from started to finished."""
    while True:
        run = (await http.get(f"/v1/runs/{run_id}")).json()
        if run["status"] in ("completed", "failed", "cancelled"):
            return run["finished_at"] - run["started_at"]
        await asyncio.sleep(0.05)


class Watcher:
    """A thread stream's reader that checks it gets each event exactly once, in order (by `id:`)."""

    ID = re.compile(rb"\nid: (\d+)\n")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self._tail = b""
        self.finished = asyncio.get_running_loop().create_future()

    def on_data(self, data: bytes, _now: float) -> None:
        text = self._tail + data
        cut = text.rfind(b"\n\n") + 2  # up to the last complete frame; the rest waits for more
        self.ids += [int(n) for n in self.ID.findall(b"\n" + text[:cut])]
        self._tail = text[cut:]
        if b'"RUN_FINISHED"' in text[:cut] and not self.finished.done():
            self.finished.set_result(None)

    def refused(self, done: asyncio.Future[None]) -> None:
        if not done.cancelled() and done.exception() is not None and not self.finished.done():
            self.finished.set_exception(done.exception())

    def exact(self, first: int, last: int) -> bool:
        return self.ids == list(range(first, last + 1))


async def fan_out(url: str, pid: int, watchers: int) -> tuple[float, float, int, int]:
    """(e): the run's duration, the server's CPU seconds, frames delivered, and how many watchers were exact."""
    async with httpx.AsyncClient(base_url=url, timeout=None) as http:
        thread = (await http.post("/v1/threads")).json()["id"]
        readers = [Watcher() for _ in range(watchers)]
        streams = []
        for i in range(0, watchers, 100):  # in batches, within the server's listen backlog
            streams += await asyncio.gather(
                *[open_stream(url, f"/v1/threads/{thread}/stream", r.on_data) for r in readers[i : i + 100]]
            )
        for reader, stream in zip(readers, streams, strict=True):
            stream.done.add_done_callback(reader.refused)
        await asyncio.sleep(1)  # every stream is live
        cpu = cpu_seconds(pid)
        run = (await http.post(f"/v1/threads/{thread}/runs", json={"input": "/stream 2000 ms=5"})).json()
        await asyncio.wait_for(asyncio.gather(*[r.finished for r in readers]), 600)
        cpu = cpu_seconds(pid) - cpu
        duration = await run_duration(http, run["run_id"])
        last = max(r.ids[-1] for r in readers)  # RUN_FINISHED's: the thread's log ends with it
        for stream in streams:
            stream.done.cancel()
        frames = sum(len(r.ids) for r in readers)
        return duration, cpu, frames, sum(r.exact(1, last) for r in readers)


class Stalled(asyncio.Protocol):
    """A connection that sends its request and then never reads."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # type: ignore[attr-defined]


async def stalled_readers(url: str, readers: int) -> float:
    """(f): the duration of a fast run with `readers` stalled connections on its stream."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=url, timeout=None) as http:
        thread = (await http.post("/v1/threads")).json()["id"]
        run = (await http.post(f"/v1/threads/{thread}/runs", json={"input": "/stream 20000"})).json()
        transports = []
        for _ in range(readers):
            transport, _ = await loop.create_connection(Stalled, host, int(port))
            transport.write(f"GET /v1/runs/{run['run_id']}/stream HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            transports.append(transport)
        duration = await run_duration(http, run["run_id"])
        for transport in transports:
            transport.abort()
        return duration


async def reconnects(url: str, samples: int) -> list[float]:
    """(g): connect → first replayed event, while the thread's run streams at full speed; each time
    resuming a little behind the live tail (the last id a watcher of the thread has seen, less 10),
    as a client does whose connection dropped for a moment."""
    async with httpx.AsyncClient(base_url=url, timeout=None) as http:
        thread = (await http.post("/v1/threads")).json()["id"]
        last_id = [0]

        def on_watched(data: bytes, _now: float) -> None:
            if (at := data.rfind(b"\nid: ")) >= 0 and (end := data.find(b"\n", at + 5)) >= 0:
                last_id[0] = int(data[at + 5 : end])

        watcher = await open_stream(url, f"/v1/threads/{thread}/stream", on_watched)
        run = (await http.post(f"/v1/threads/{thread}/runs", json={"input": "/stream 300000"})).json()
        await asyncio.sleep(0.5)  # well under way
        latencies = []
        for _ in range(samples):
            started = time.perf_counter()
            arrived = asyncio.get_running_loop().create_future()

            def on_data(data: bytes, now: float, arrived: asyncio.Future[float] = arrived) -> None:
                if b"\nid: " in b"\n" + data and not arrived.done():
                    arrived.set_result(now)

            stream = await open_stream(url, f"/v1/threads/{thread}/stream?after={last_id[0] - 10}", on_data)
            latencies.append(await asyncio.wait_for(arrived, 30) - started)
            stream.done.cancel()
            await asyncio.sleep(0.02)
        status = (await http.get(f"/v1/runs/{run['run_id']}")).json()["status"]
        await http.post(f"/v1/runs/{run['run_id']}/cancel")
        watcher.done.cancel()
        if status != "running":
            raise RuntimeError(f"the run was {status} before the reconnects ended: make it longer")
        return latencies


async def capacity(measure, steps: list[int]) -> tuple[int, dict[int, float]]:
    best, p99s = 0, {}
    for runs in steps:
        p99 = quantile(await measure(runs), 0.99)
        p99s[runs] = p99
        print(f"    {runs:4d} runs: p99 gap {p99 * 1000:6.0f} ms", flush=True)
        if p99 >= GAP_LIMIT:
            break
        best = runs
    return best, p99s


PARTS = ("throughput", "latency", "replay", "tether-capacity", "alone-capacity", "fan-out", "stalled", "reconnect")


async def main(args: argparse.Namespace) -> None:
    parts = set(args.parts.split(","))
    if unknown := parts - set(PARTS):
        raise SystemExit(f"unknown parts: {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    words = 20_000 if args.quick else 100_000
    steps = [int(n) for n in args.steps.split(",")] if args.steps else [25, 50, 100] if args.quick else STEPS
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(f"# streaming benchmark, {time.strftime('%Y-%m-%d %H:%M')}, Python {sys.version.split()[0]}, {loop} loop")
    with tempfile.TemporaryDirectory() as tmp:
        agent = build_demo_agent(Path(tmp))
        if args.gc == "tuned":
            collector.settle_after_start_up()
        print(f"# this process's garbage collector: {args.gc}, thresholds {gc.get_threshold()}")
        server = Server(Path(tmp) / "data")
        try:
            thread = None
            if "throughput" in parts or "replay" in parts:
                a = await ceiling(agent, words)
                b, thread = await through_tether(server.url, words)
                print(f"(a) pydantic-ai alone: {a:8.0f} events/s")
                print(f"(b) through Tether:    {b:8.0f} events/s   (b)/(a) = {b / a:.2f}")
            if "latency" in parts:
                latencies = await post_to_first_event(server.url, 20 if args.quick else 50)
                print(
                    f"    POST → first event: median {statistics.median(latencies) * 1000:.1f} ms, "
                    f"p95 {quantile(latencies, 0.95) * 1000:.1f} ms"
                )
            if thread is not None and "replay" in parts:
                for _ in range(args.replays):
                    first, rate = await replay(server.url, thread, words + 7)
                    print(f"(c) replay of {words + 7} events: first after {first * 1000:.1f} ms, {rate:,.0f} events/s")
            if "tether-capacity" in parts or "alone-capacity" in parts:
                print("(d) capacity, /stream 400 ms=50 per run, p99 gap < 250 ms")
            tether_best = alone_best = 0
            if "tether-capacity" in parts:
                print("  through Tether:")
                rss_before = server.rss_mb()
                tether_best, _ = await capacity(lambda n: tether_gaps(server.url, n), steps)
                peak = server.peak_rss_mb()
                if tether_best:
                    print(
                        f"    server RSS: {rss_before:.0f} MB idle, peak {peak:.0f} MB, "
                        f"{(peak - rss_before) / tether_best:.2f} MB per run at {tether_best} runs"
                    )
            if "alone-capacity" in parts:
                print("  pydantic-ai alone:")
                alone_best, _ = await capacity(lambda n: alone_gaps(agent, n), steps)
            if tether_best and alone_best:
                ratio = tether_best / alone_best
                print(f"    capacity: Tether {tether_best} runs, pydantic-ai alone {alone_best}, ratio {ratio:.2f}")
            if "fan-out" in parts:
                print("(e) fan-out, /stream 2000 ms=5 (10 s nominal) on a thread with N watchers;")
                print("    server CPU per frame delivered beyond the first watcher's (the run's own cost)")
                alone_cpu = alone_frames = 0.0
                for watchers in (1, 100) if args.quick else (1, 100, 1000):
                    duration, cpu, frames, exact = await fan_out(server.url, server.proc.pid, watchers)
                    if watchers == 1:
                        alone_cpu, alone_frames = cpu, frames
                        extra = f"server CPU {cpu:.2f} s in all"
                    else:
                        extra = f"{(cpu - alone_cpu) / (frames - alone_frames) * 1e6:5.1f} µs per frame"
                    print(
                        f"    {watchers:5d} watchers: run {duration:6.1f} s ({duration / 10:.2f}x nominal), "
                        f"{extra}, {exact}/{watchers} exact",
                        flush=True,
                    )
            if "stalled" in parts:
                alone = await stalled_readers(server.url, 0)
                stalled = await stalled_readers(server.url, 50)
                ratio = stalled / alone
                print(f"(f) /stream 20000: {alone:.2f} s alone, {stalled:.2f} s with 50 stalled readers: {ratio:.2f}x")
            if "reconnect" in parts:
                latencies = await reconnects(server.url, 50)
                print(
                    f"(g) reconnect → first replayed event beside a full-speed run: median "
                    f"{statistics.median(latencies) * 1000:.1f} ms, p95 {quantile(latencies, 0.95) * 1000:.1f} ms"
                )
        finally:
            server.stop()


STEPS = [25, 50, 100, 150, 200, 250, 300, 350, 400, 500, 600]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a check that it works")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--steps", help=f"capacity steps, comma-separated run counts (default {STEPS})")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop of this process (its in-process runs and clients); auto is what the server uses, "
        "uvicorn's choice: uvloop when installed",
    )
    parser.add_argument("--replays", type=int, default=1, help="replay (c)'s thread this many times, one after another")
    parser.add_argument(
        "--gc",
        choices=("default", "tuned"),
        default="default",
        help="tuned gives this process (the in-process runs of (a) and (d)) the collector settings the server "
        "gives itself (tether.engine.collector)",
    )
    return parser.parse_args()


def uvloop_run() -> Callable[[Any], Any] | None:
    """uvloop's runner if it can be imported (uvicorn's own test for its "auto" loop), else None."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.run


if __name__ == "__main__":
    arguments = parse_args()
    run = uvloop_run() if arguments.loop != "asyncio" else None
    if arguments.loop == "uvloop" and run is None:
        raise SystemExit("uvloop is not installed")
    (run or asyncio.run)(main(arguments))
