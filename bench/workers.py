"""Scale-out benchmark: Tether on SQLite in one process against PostgreSQL + Redis with 1 and 2 workers.

    .venv/bin/python bench/workers.py [--quick] [--only a,b,c,d,e,f] [--configs sqlite,pg1,pg2]
                                      [--steps 50,100,150] [--logs DIR]
                                      [--postgres postgresql://postgres@127.0.0.1:5432/test]
                                      [--redis redis://127.0.0.1:6379/0]

Needs PostgreSQL and Redis. --postgres names a database to connect to for CREATE/DROP DATABASE (trust
auth, `psql` on the PATH); every PostgreSQL set-up gets a database of its own (bench_workers_<random>) and
a Redis channel prefix of its own (bench:<database>:). Every `tether serve` the script starts is killed and
every database it made is dropped at the end, also on Ctrl-C, SIGTERM or an error.

The configurations, side by side in one run (started together at the beginning; the others idle while one
is measured):

  SQLite   `tether serve` as it comes: SQLite, the in-process bus, one process;
  PG 1w    one `tether serve --database postgresql://… --redis redis://…`;
  PG 2w    two such processes on one database and one prefix. Client i sends its POSTs to worker i % 2
           and reads its stream at the other one, so live events cross Redis whenever the worker that
           took the POST executes the run (usually: it is woken first).

Every server gets `--max-runs 2000` (no run waits in the queue; with two workers each executes the runs it
claims, so their capacities are measured together; the split is shown), `--log-level warning`,
`--request-limit 1000` and `--max-streams 5000`; each has a data directory of its own.

(a) one stream's events/s: `/stream 20000` (no delay) read from `GET /v1/runs/{rid}/stream`; events/s
    from the first to the last event at the client; median of 3 (configurations alternated).
(b) POST → first event: 30 runs of `/stream 3` on one thread, one at a time; the time from sending
    `POST /v1/threads/{tid}/runs` to the run's RUN_STARTED on an already-open `GET /v1/threads/{tid}/stream`;
    median and p90 (one more run first, as a warm-up, left out). PG 2w posts at A and reads at B.
(c) capacity: the most concurrent `/stream 400 ms=50` runs (20 words/s each) at which the p99 gap between
    consecutive events on each client's stream stays under 250 ms, the approach of bench/stream.py part (d)
    (its FrameCounter, RawStream and open_stream are imported): one thread per run, the run's stream opened
    right after its POST, the SSE bytes read off the socket, events that arrive in one read counted as gaps
    of 0; steps 50, 100, 150, … until one fails. Also shown: the most runs executing at once on each worker
    (GET /healthz `runs`, sampled every second), streams that ended without RUN_FINISHED (cut off), runs
    that ended in RUN_ERROR and clients that saw no end a minute after it was due (stalled); a step with a
    RUN_ERROR or a stalled client fails. And the CPU each step cost per 1,000 events that reached the clients:
    the servers' processes, and PostgreSQL's and Redis's (all their processes, /proc/PID/stat): less noisy
    than the ladder, which moves a step with a few stalls.
    Ratios PG 1w / SQLite (aim ≥ 0.7) and PG 2w / SQLite (aim ≥ 1.5).
(d) takeover after SIGKILL, `--lease 5`: worker A (`--max-runs 0`: API and streams only), then B start;
    `/steps 20 ms=200` is posted via A and seen executing on B (GET /v1/runs/{rid}: `worker`); then C
    starts; B gets SIGKILL. Measured from the signal: until the run's `worker` is C (GET at A every 10 ms),
    and until C's first event of the run (its new RUN_STARTED) arrives on the thread stream open at A.
    Aim: ≤ lease + 1 s. 3 trials, each on a fresh database (repeated if C came up too late to matter).
(e) handover after SIGTERM: the same with `--lease 30` and SIGTERM to B; aim < 1 s. 3 trials.
(f) long thread: 200 runs of `/steps 3 ms=0` on one thread, one after the other, each awaited until
    completed; each run's time from POST to its RUN_FINISHED on the open thread stream (PG 2w alternates the
    POSTs between the workers). For the 1st and the 200th run: that time (aim: 200th ≤ 1.2 times the 1st; the
    medians of the first and last 10 runs are given too, as single runs are noisy) and, after the run, the
    stored checkpoint bytes (SQLite: SUM(LENGTH(messages)) through a read-only connection to the live file,
    which sees the WAL; PostgreSQL: SUM(octet_length(messages)) via psql) against the size of the history
    itself, the `messages` of GET /v1/threads/{tid} as compact JSON (aim: at most twice). The servers are
    shared with (a)-(c), so the checkpoints are summed over this thread only (WHERE thread_id = …).

Order: (a), (b), (f), (c) on the shared servers (the capacity ladder last, so the long thread does not run
on servers that just carried hundreds of streams), then (d) and (e) on servers of their own.

The client ends each run stream itself at the run's RUN_FINISHED or RUN_ERROR, as tether.client does (see
until_finished: a worker that gets a run's events over Redis does not end that run's stream); (a) shows
whether the server ended it within 2 s.

This process (the load generator, on the same 2 cores as the servers) gets the servers' collector settings,
tether.engine.collector.settle_after_start_up(): gc.freeze() after set-up and thresholds (50,000, 20, 10);
it also collects before each capacity step. It runs on asyncio's default loop (as the servers do without
uvloop). The machine must be quiet (/work/shared/NOTES-profiling.md): before each measurement the script
waits (60 s at most) until other processes use under 5% of a core for 2 s, and repeats (twice at most) a
capacity step during which other processes used over 15% of a core (PostgreSQL and Redis left out of that:
they work for the benchmark then). Each capacity step prints that load. --quick neither waits nor repeats.

--quick (under a minute, a check that it works): /stream 5000 once, 10 latency samples, capacity steps 10
and 20 of /stream 40, one trial each of (d) and (e), a 10-run thread. The full run takes about 15 minutes
on a quiet machine, longer when it waits for one.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import resource
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from stream import GAP_LIMIT, FrameCounter, RawStream, open_stream, quantile

from tether.engine import collector

CONFIGS = {"sqlite": "SQLite", "pg1": "PG 1w", "pg2": "PG 2w"}
PARTS = "abcdef"
STEPS = [50, 100, 150, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800]
MAX_RUNS = "2000"
QUIET = 0.05  # of a core: other processes must use less before a measurement
LOADED = 0.15  # of a core: a capacity step during which other processes used more is repeated
TERMINAL = {"completed", "failed", "cancelled"}


@dataclass(frozen=True)
class Plan:
    words: int  # (a)
    stream_repeats: int
    latency_samples: int  # (b)
    capacity_words: int  # (c)
    steps: list[int]
    trials: int  # (d), (e)
    thread_runs: int  # (f)
    patience: float  # seconds to wait for a quiet machine; 0: do not wait
    repeats: int  # how often a capacity step that overlapped other load is repeated


FULL = Plan(20_000, 3, 30, 400, STEPS, 3, 200, 60.0, 2)
QUICK = Plan(5_000, 1, 10, 40, [10, 20], 1, 10, 0.0, 0)


# --- processes and databases ------------------------------------------------------------------------


def psql(dsn: str, sql: str) -> str:
    done = subprocess.run(
        ["psql", dsn, "-v", "ON_ERROR_STOP=1", "-tAqc", sql], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"psql {sql!r}: {done.stderr.strip()}")
    return done.stdout.strip()


class Resources:
    """Everything the run made: servers, databases, a temporary directory. cleanup() undoes it (idempotent)."""

    def __init__(self, admin_dsn: str, redis: str, keep_logs: Path | None = None) -> None:
        self.admin_dsn = admin_dsn
        self.redis = redis
        self.keep_logs = keep_logs
        self.tmp = Path(tempfile.mkdtemp(prefix="tether-workers-"))
        self.servers: list[Server] = []
        self.databases: list[str] = []
        self._names = 0

    def name(self, stem: str) -> str:
        self._names += 1
        return f"{stem}-{self._names}"

    def dsn(self, database: str) -> str:
        return f"{self.admin_dsn.rsplit('/', 1)[0]}/{database}"

    def create_database(self) -> str:
        name = f"bench_workers_{secrets.token_hex(6)}"
        self.databases.append(name)  # before CREATE: a Ctrl-C in between still drops it
        psql(self.admin_dsn, f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        psql(self.admin_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.databases.remove(name)

    def ours(self) -> set[int]:
        return {os.getpid()} | {s.proc.pid for s in self.servers if s.proc.poll() is None}

    def cleanup(self) -> None:
        killed = sum(server.kill() for server in self.servers)
        dropped = 0
        for name in list(self.databases):
            try:
                self.drop_database(name)
                dropped += 1
            except Exception as exc:  # keep going: the others still need dropping
                print(f"# could not drop database {name}: {exc}", file=sys.stderr)
        if self.keep_logs is not None and self.tmp.exists():
            self.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in self.tmp.glob("*.log"):
                shutil.copy(log, self.keep_logs / log.name)
            print(f"# the servers' logs are in {self.keep_logs}", flush=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if killed or dropped:
            print(f"# cleaned up: {killed} server(s) killed, {dropped} database(s) dropped", flush=True)


class Server:
    """`python -m tether serve` on a free port, with a data directory and a log file of its own."""

    def __init__(self, res: Resources, name: str, flags: list[str]) -> None:
        self.name = name
        self.data_dir = res.tmp / name
        self.data_dir.mkdir(parents=True)
        self.log_path = res.tmp / f"{name}.log"
        args = [sys.executable, "-m", "tether", "serve", "--port", "0", "--data-dir", str(self.data_dir)]
        # --max-streams: every client is the one default user, and the capacity ladder goes past 100 streams.
        args += ["--log-level", "warning", "--request-limit", "1000", "--max-streams", "5000", *flags]
        with self.log_path.open("wb") as log:
            # A session of its own: Ctrl-C reaches this script, which then kills the servers itself.
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        res.servers.append(self)
        self.url = ""
        self.worker = ""
        self._log_seen = 0

    def new_log_lines(self) -> list[str]:
        """What the server logged since the last call (it logs warnings and errors only), start-up lines left out."""
        text = self.log()
        lines, self._log_seen = text[self._log_seen :].splitlines(), len(text)
        return [line for line in lines if line.strip() and not line.startswith(("Tether ", "Tether is ready"))]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _ready_url(self) -> str | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        match = re.search(r"Tether is ready: (http://[\d.]+:\d+)/", self.log())
        return match[1] if match else None

    async def ready(self, within: float = 90) -> Server:
        deadline = time.monotonic() + within
        while (url := self._ready_url()) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start within {within:.0f}s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)
        self.url = url
        async with httpx.AsyncClient(timeout=10) as http:
            self.worker = (await http.get(url + "/healthz")).json()["worker"]
        return self

    def kill(self) -> bool:
        if self.proc.poll() is not None:
            return False
        self.proc.kill()
        self.proc.wait()
        return True


@dataclass
class Cluster:
    config: str
    servers: list[Server]
    database: str  # the PostgreSQL database's name, or the SQLite file
    dsn: str | None = None

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def route(self, i: int) -> tuple[str, str]:
        """Client i's (POST url, stream url): with two workers, the stream is read at the one not posted to."""
        urls = self.urls
        return urls[i % len(urls)], urls[(i + 1) % len(urls)]

    def checkpoint_bytes(self, thread: str) -> int:
        if self.dsn is None:
            with closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as db:
                (total,) = db.execute(
                    "SELECT SUM(LENGTH(messages)) FROM checkpoints WHERE thread_id = ?", (thread,)
                ).fetchone()
            return int(total or 0)
        assert re.fullmatch(r"thr_\w+", thread)
        sql = f"SELECT SUM(octet_length(messages)) FROM checkpoints WHERE thread_id = '{thread}'"
        return int(psql(self.dsn, sql) or 0)

    def stop(self) -> None:
        for server in self.servers:
            server.kill()


def report_logs(servers: Iterable[Server], most: int = 8) -> None:
    """Print what the servers logged (warnings, errors) since the last report, a few lines each."""
    for server in servers:
        lines = server.new_log_lines()
        if lines:
            print(f"    {server.name} logged {len(lines)} line(s):", flush=True)
            for line in lines[:most]:
                print(f"      {line[:300]}", flush=True)


def pg_flags(res: Resources, database: str) -> list[str]:
    return ["--database", res.dsn(database), "--redis", res.redis, "--redis-prefix", f"bench:{database}:"]


async def start_cluster(res: Resources, config: str) -> Cluster:
    if config == "sqlite":
        server = await Server(res, res.name("sqlite"), ["--max-runs", MAX_RUNS]).ready()
        return Cluster(config, [server], str(server.data_dir / "tether.db"))
    database = await asyncio.to_thread(res.create_database)
    flags = [*pg_flags(res, database), "--max-runs", MAX_RUNS]
    servers = [Server(res, res.name(f"{config}-{role}"), flags) for role in "AB"[: 2 if config == "pg2" else 1]]
    await asyncio.gather(*(server.ready() for server in servers))
    return Cluster(config, servers, database, res.dsn(database))


# --- the machine's other load -----------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


DATABASES = ("postgres", "redis-server")


def processes() -> dict[int, tuple[str, float]]:
    """Every process but kernel threads: its command name and the CPU seconds it has used so far."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if int(fields[6]) & 0x00200000:  # PF_KTHREAD
            continue
        out[int(name)] = (comm, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def cpu_seconds(skip: set[int], with_db: bool) -> dict[int, float]:
    """CPU seconds so far of every process but `skip` and kernel threads (and PostgreSQL and Redis unless with_db)."""
    return {
        pid: used for pid, (comm, used) in processes().items() if pid not in skip and (with_db or comm not in DATABASES)
    }


def cluster_cpu(cluster: Cluster) -> tuple[float, float]:
    """CPU seconds so far of the cluster's servers, and of PostgreSQL and Redis (all their processes)."""
    pids = {server.proc.pid for server in cluster.servers}
    found = processes()
    return (
        sum(used for pid, (_, used) in found.items() if pid in pids),
        sum(used for comm, used in found.values() if comm in DATABASES),
    )


class LoadMeter:
    """Cores used by processes other than this one and its servers since the meter was made."""

    def __init__(self, res: Resources, with_db: bool) -> None:
        self._res, self._with_db = res, with_db
        self._started = time.monotonic()
        self._before = cpu_seconds(res.ours(), with_db)

    def load(self) -> float:
        now = cpu_seconds(self._res.ours(), self._with_db)
        used = sum(t - self._before.get(pid, 0.0) for pid, t in now.items())
        return used / max(time.monotonic() - self._started, 1e-3)


async def wait_quiet(res: Resources, plan: Plan) -> float | None:
    """Wait (plan.patience seconds at most) until other processes use under QUIET of a core for 2 s; their load."""
    if plan.patience <= 0:
        return None
    deadline = time.monotonic() + plan.patience
    while True:
        meter = LoadMeter(res, with_db=True)
        await asyncio.sleep(2.0)
        load = meter.load()
        if load < QUIET:
            return load
        if time.monotonic() > deadline:
            print(f"    the machine is not quiet ({load:.0%} of a core elsewhere): measuring anyway", flush=True)
            return load
        print(f"    waiting for a quiet machine ({load:.0%} of a core elsewhere)", flush=True)


# --- clients ----------------------------------------------------------------------------------------


class Pattern:
    """Counts a byte pattern in a byte stream, also when it spans two reads."""

    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        self.count = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> int:
        data = self._tail + chunk
        new = data.count(self.pattern)  # the tail is shorter than the pattern: nothing in it was counted
        self._tail = data[-(len(self.pattern) - 1) :]
        self.count += new
        return new


async def create_thread(http: httpx.AsyncClient, url: str) -> str:
    response = await http.post(f"{url}/v1/threads")
    response.raise_for_status()
    return response.json()["id"]


async def start_run(http: httpx.AsyncClient, url: str, thread: str, directive: str) -> str:
    body = {"input": directive, "multitask": "enqueue"}
    response = await http.post(f"{url}/v1/threads/{thread}/runs", json=body)
    if response.status_code != 202:
        raise RuntimeError(f"POST run: {response.status_code} {response.text}")
    return response.json()["run_id"]


async def get_run(http: httpx.AsyncClient, url: str, run: str) -> dict[str, Any]:
    response = await http.get(f"{url}/v1/runs/{run}")
    response.raise_for_status()
    return response.json()


async def until_run(
    http: httpx.AsyncClient, url: str, run: str, check: Callable[[dict[str, Any]], bool], within: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while not check(found := await get_run(http, url, run)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run}: {what} did not happen within {within:.0f}s: {found}")
        await asyncio.sleep(0.01)
    return found


async def queue_get(queue: asyncio.Queue[float], within: float, what: str) -> float:
    try:
        return await asyncio.wait_for(queue.get(), within)
    except TimeoutError:
        raise RuntimeError(f"no {what} within {within:.0f}s") from None


async def until_finished(stream: RawStream, finished: asyncio.Event, grace: float) -> bool:
    """Wait for the run's RUN_FINISHED (or the end of the response), then up to `grace` seconds for the server
    to end the response; True if it did. The connection is closed either way.

    The client ends a run stream at its RUN_FINISHED itself, as tether.client does: at the time of writing, a
    worker that receives a run's events over Redis does not end that run's stream (the Redis bus sends an
    event's type as "EventType.RUN_FINISHED", so the follower never sees the terminal event).
    """
    waiter = asyncio.ensure_future(finished.wait())
    try:
        await asyncio.wait({stream.done, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not stream.done.done() and grace > 0:
        try:
            await asyncio.wait_for(asyncio.shield(stream.done), grace)
        except TimeoutError:
            pass
    if not stream.done.done():
        stream.done.set_result(None)  # its callback closes the connection
        return False
    stream.done.result()  # raises if the stream was refused
    return True


async def one_stream(post: str, read: str, words: int) -> tuple[float, int, bool]:
    """(a): events/s of one `/stream N` run, from the first to the last event received; the event count;
    whether the server ended the run stream after RUN_FINISHED."""
    async with httpx.AsyncClient(timeout=60) as http:
        thread = await create_thread(http, post)
        run = await start_run(http, post, thread, f"/stream {words}")
        frames, finished, at_end = FrameCounter(), Pattern(b'"RUN_FINISHED"'), asyncio.Event()
        errored = Pattern(b'"RUN_ERROR"')
        first: list[float] = []
        last = [0.0]

        def on_data(data: bytes, now: float) -> None:
            if finished.feed(data) + errored.feed(data):
                at_end.set()
            if frames.feed(data):
                if not first:
                    first.append(now)
                last[0] = now

        stream = await open_stream(read, f"/v1/runs/{run}/stream", on_data)
        server_ended = await until_finished(stream, at_end, 2.0)
    if errored.count or not finished.count or not first or last[0] <= first[0]:
        end = "in RUN_ERROR" if errored.count else "without RUN_FINISHED"
        raise RuntimeError(f"run {run}: the stream ended {end} after {frames.count} frames")
    return (frames.count - 1) / (last[0] - first[0]), frames.count, server_ended


async def first_event_latency(post: str, read: str, samples: int) -> list[float]:
    """(b): POST → the run's RUN_STARTED on a thread stream opened before, one run at a time."""
    async with httpx.AsyncClient(timeout=30) as http:
        thread = await create_thread(http, post)
        started, finished = Pattern(b'"RUN_STARTED"'), Pattern(b'"RUN_FINISHED"')
        starts: asyncio.Queue[float] = asyncio.Queue()
        ends: asyncio.Queue[float] = asyncio.Queue()

        def on_data(data: bytes, now: float) -> None:
            for _ in range(started.feed(data)):
                starts.put_nowait(now)
            for _ in range(finished.feed(data)):
                ends.put_nowait(now)

        follower = await open_stream(read, f"/v1/threads/{thread}/stream", on_data)
        try:
            await asyncio.sleep(0.5)  # the stream is live (subscribed) by then
            latencies = []
            for _ in range(samples + 1):  # the first is a warm-up
                sent = time.perf_counter()
                await start_run(http, post, thread, "/stream 3")
                latencies.append(await queue_get(starts, 10, "RUN_STARTED") - sent)
                await queue_get(ends, 10, "RUN_FINISHED")
                await asyncio.sleep(0.05)
        finally:
            follower.done.cancel()
    return latencies[1:]


async def sample_split(urls: list[str], stop: asyncio.Event) -> list[int]:
    """Runs executing on each worker (GET /healthz, once a second), at the moment their sum was largest."""
    best = [0] * len(urls)
    async with httpx.AsyncClient(timeout=10) as probe:
        while not stop.is_set():
            try:
                counts = [(await probe.get(url + "/healthz")).json()["runs"] for url in urls]
            except httpx.HTTPError:
                counts = best
            if sum(counts) > sum(best):
                best = counts
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
    return best


@dataclass
class Step:
    runs: int
    p99: float
    split: list[int]
    cut_off: int
    failed: int
    stalled: int
    load: float | None
    cpu_per_k: tuple[float, float]
    """CPU milliseconds per 1,000 events delivered: the servers', and PostgreSQL's and Redis's."""

    @property
    def ok(self) -> bool:
        return self.p99 < GAP_LIMIT and not self.stalled and not self.failed


@dataclass
class StepResult:
    gaps: list[float] = field(default_factory=list)
    split: list[int] = field(default_factory=list)
    cut_off: int = 0
    failed: int = 0
    stalled: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    """Events that reached the clients."""


async def capacity_step(cluster: Cluster, runs: int, words: int) -> StepResult:
    """(c), bench/stream.py's tether_gaps over the cluster's workers: the gaps, the split, streams cut off, and
    the clients that did not see their run's end within a minute of when it was due (stalled)."""
    result = StepResult()
    gaps = result.gaps
    directive = f"/stream {words} ms=50"
    limits = httpx.Limits(max_connections=runs * 2 + 10, keepalive_expiry=1)  # before the server drops it (5 s)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60), limits=limits) as http:

        async def one(i: int, where: dict[str, Any]) -> None:
            post, read = cluster.route(i)
            where.update(phase="POST /v1/threads", url=post)
            thread = await create_thread(http, post)
            where["phase"] = "POST run"
            run = await start_run(http, post, thread, directive)
            last: list[float] = []
            frames, finished, at_end = FrameCounter(), Pattern(b'"RUN_FINISHED"'), asyncio.Event()
            errored = Pattern(b'"RUN_ERROR"')
            where.update(phase="stream", run=run, frames=frames)

            def on_data(data: bytes, now: float) -> None:
                if finished.feed(data) + errored.feed(data):
                    at_end.set()
                arrived = frames.feed(data)
                if arrived and last:
                    gaps.append(now - last[0])  # events that arrive in one read arrive together
                    gaps.extend([0.0] * (arrived - 1))
                if arrived:
                    last[:] = [now]
                    result.events += arrived

            await until_finished(await open_stream(read, f"/v1/runs/{run}/stream", on_data), at_end, 0.0)
            if errored.count:
                result.failed += 1
            elif not finished.count:
                result.cut_off += 1

        async def bounded(i: int) -> None:
            where: dict[str, Any] = {}
            try:
                await asyncio.wait_for(one(i, where), words * 0.05 + 60)
            except TimeoutError:
                result.stalled.append(where)

        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_split(cluster.urls, stop))
        try:
            await asyncio.gather(*(bounded(i) for i in range(runs)))
        finally:
            stop.set()
            result.split = await sampler
        for where in result.stalled[:5]:
            status = ""
            if "run" in where:
                try:
                    found = await get_run(http, where["url"], where["run"])
                    status = f", run {found['status']} on {found['worker']}"
                except httpx.HTTPError as exc:
                    status = f", GET run: {exc!r}"
            frames = where.get("frames")
            print(
                f"    !! a client stalled in {where.get('phase')}: {where.get('run', '')} "
                f"({frames.count if frames else 0} frames{status})",
                flush=True,
            )
    return result


async def ladder(res: Resources, cluster: Cluster, plan: Plan) -> list[Step]:
    steps: list[Step] = []
    for runs in plan.steps:
        for attempt in range(plan.repeats + 1):
            await wait_quiet(res, plan)
            gc.collect()
            meter = LoadMeter(res, with_db=False)
            cpu_before = cluster_cpu(cluster)
            result = await capacity_step(cluster, runs, plan.capacity_words)
            cpu_after = cluster_cpu(cluster)
            load = meter.load()
            if load < LOADED or attempt == plan.repeats:
                break
            print(f"    {runs} runs: other processes used {load:.0%} of a core meanwhile; again", flush=True)
        servers, databases = (
            1e6 * (after - before) / max(result.events, 1) for before, after in zip(cpu_before, cpu_after, strict=True)
        )
        step = Step(
            runs,
            quantile(result.gaps, 0.99),
            result.split,
            result.cut_off,
            result.failed,
            len(result.stalled),
            load,
            (servers, databases),
        )
        steps.append(step)
        print(
            f"    {CONFIGS[cluster.config]:7} {runs:4d} runs: p99 gap {step.p99 * 1000:5.0f} ms, executing "
            f"{'/'.join(map(str, step.split))} at most; {step.failed} RUN_ERROR, {step.cut_off} cut off, "
            f"{step.stalled} stalled; others {load:.0%} of a core; CPU per 1,000 events: servers "
            f"{step.cpu_per_k[0]:.0f} ms, PostgreSQL and Redis {step.cpu_per_k[1]:.0f} ms",
            flush=True,
        )
        report_logs(cluster.servers)
        if not step.ok:
            break
    return steps


class EventLog:
    """A thread stream read with httpx (low rates only): every event with when it arrived."""

    def __init__(self) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []

    async def follow(self, http: httpx.AsyncClient, url: str) -> None:
        async with http.stream("GET", url) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    self.events.append((time.perf_counter(), json.loads(line[6:])))

    async def first(self, check: Callable[[float, dict[str, Any]], bool], within: float, what: str) -> float:
        deadline = time.monotonic() + within
        seen = 0
        while True:
            for arrived, event in self.events[seen:]:
                if check(arrived, event):
                    return arrived
            seen = len(self.events)
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} within {within:.0f}s")
            await asyncio.sleep(0.005)


class TooLate(RuntimeError):
    """C started so slowly that the run was (nearly) done on B: the trial is repeated."""


async def move_trial(res: Resources, sig: signal.Signals, lease: float) -> dict[str, Any]:
    """(d)/(e): a run executing on B while A serves it; C starts; B gets `sig`. How long until C has it."""
    database = await asyncio.to_thread(res.create_database)
    flags = [*pg_flags(res, database), "--lease", f"{lease:g}"]
    servers: list[Server] = []
    try:
        a = Server(res, res.name("front-A"), [*flags, "--max-runs", "0"])
        servers.append(a)
        await a.ready()
        b = Server(res, res.name("doomed-B"), [*flags, "--max-runs", MAX_RUNS])
        servers.append(b)
        await b.ready()
        async with httpx.AsyncClient(timeout=30) as http, httpx.AsyncClient(timeout=None) as streaming:
            thread = await create_thread(http, a.url)
            log = EventLog()
            follower = asyncio.create_task(log.follow(streaming, f"{a.url}/v1/threads/{thread}/stream"))
            try:
                run = await start_run(http, a.url, thread, "/steps 20 ms=200")
                await until_run(http, a.url, run, lambda r: r["worker"] == b.worker, 20, "execution on B")
                c = Server(res, res.name("heir-C"), [*flags, "--max-runs", MAX_RUNS])
                servers.append(c)
                await c.ready()
                before = await get_run(http, a.url, run)
                steps_done = sum(1 for _, e in log.events if e.get("type") == "TOOL_CALL_RESULT")
                if before["worker"] != b.worker or before["status"] != "running" or steps_done > 15:
                    raise TooLate(f"the run was nearly done or no longer on B once C was up: {before}")
                signalled = time.perf_counter()
                b.proc.send_signal(sig)
                await until_run(http, a.url, run, lambda r: r["worker"] == c.worker, lease + 30, "execution on C")
                on_c = time.perf_counter() - signalled
                c_event = await log.first(
                    lambda t, e: t > signalled and e.get("type") == "RUN_STARTED" and e.get("runId") == run,
                    lease + 30,
                    "RUN_STARTED from C",
                )
                done = await until_run(http, a.url, run, lambda r: r["status"] in TERMINAL, 60, "the run's end")
                exit_code = await asyncio.to_thread(b.proc.wait, 30)
                after = [e.get("type") for t, e in log.events if t > signalled][:4]
            finally:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
        return {
            "on_c": on_c,
            "event": c_event - signalled,
            "status": done["status"],
            "steps_before": steps_done,
            "exit": exit_code,
            "after": after,
        }
    finally:
        report_logs(servers)
        for server in servers:
            server.kill()
        await asyncio.to_thread(res.drop_database, database)


async def long_thread(cluster: Cluster, runs: int) -> dict[str, Any]:
    """(f): `runs` runs of `/steps 3 ms=0` on one thread, one after the other."""
    urls = cluster.urls
    times: list[float] = []
    sizes: dict[int, tuple[int, int]] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        thread = await create_thread(http, urls[0])
        finished = Pattern(b'"RUN_FINISHED"')
        ends: asyncio.Queue[float] = asyncio.Queue()

        def on_data(data: bytes, now: float) -> None:
            for _ in range(finished.feed(data)):
                ends.put_nowait(now)

        follower = await open_stream(urls[-1], f"/v1/threads/{thread}/stream", on_data)
        try:
            await asyncio.sleep(0.5)
            for i in range(runs):
                post = urls[i % len(urls)]
                sent = time.perf_counter()
                run = await start_run(http, post, thread, "/steps 3 ms=0")
                times.append(await queue_get(ends, 30, "RUN_FINISHED") - sent)
                done = await until_run(http, post, run, lambda r: r["status"] in TERMINAL, 30, "completion")
                if done["status"] != "completed":
                    raise RuntimeError(f"run {i + 1} of the long thread: {done}")
                if i in (0, runs - 1):
                    stored = (await http.get(f"{post}/v1/threads/{thread}")).json()["messages"]
                    history = len(json.dumps(stored, separators=(",", ":"), ensure_ascii=False).encode())
                    sizes[i + 1] = (await asyncio.to_thread(cluster.checkpoint_bytes, thread), history)
        finally:
            follower.done.cancel()
    return {"times": times, "sizes": sizes}


# --- reporting --------------------------------------------------------------------------------------


def table(title: str, columns: list[str], rows: Iterable[tuple[str, list[str]]], notes: Iterable[str] = ()) -> None:
    rows = list(rows)
    width = max(len(label) for label, _ in rows)
    widths = [max(len(col), *(len(cells[i]) for _, cells in rows)) for i, col in enumerate(columns)]
    print(f"\n{title}")
    print(" " * width + "".join(f"  {col:>{w}}" for col, w in zip(columns, widths, strict=True)))
    for label, cells in rows:
        print(f"{label:<{width}}" + "".join(f"  {cell:>{w}}" for cell, w in zip(cells, widths, strict=True)))
    for note in notes:
        print(f"  {note}")
    print(flush=True)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


# --- the parts --------------------------------------------------------------------------------------


async def part_a(res: Resources, clusters: dict[str, Cluster], plan: Plan) -> None:
    print(f"(a) one stream, /stream {plan.words}", flush=True)
    rates: dict[str, list[float]] = {c: [] for c in clusters}
    ended: dict[str, list[bool]] = {c: [] for c in clusters}
    for round_ in range(plan.stream_repeats):
        order = list(clusters)[round_ % len(clusters) :] + list(clusters)[: round_ % len(clusters)]
        for config in order:
            await wait_quiet(res, plan)
            rate, count, server_ended = await one_stream(*clusters[config].route(0), plan.words)
            rates[config].append(rate)
            ended[config].append(server_ended)
            print(f"    {CONFIGS[config]:7} {rate:8,.0f} events/s ({count} events)", flush=True)
    medians = {c: statistics.median(r) for c, r in rates.items()}
    base = medians.get("sqlite")
    table(
        f"(a) one stream's events/s, /stream {plan.words} (no delay), first to last event at the client",
        [CONFIGS[c] for c in clusters],
        [
            ("events/s, median", [f"{medians[c]:,.0f}" for c in clusters]),
            ("each run", [" ".join(f"{r / 1000:.1f}k" for r in rates[c]) for c in clusters]),
            ("ratio to SQLite", [ratio(medians[c], base) for c in clusters]),
            (
                "server ended the run stream",
                [f"{sum(ended[c])} of {len(ended[c])}" for c in clusters],
            ),
        ],
        [
            *(["PG 2w: posted at worker A, read at worker B"] if "pg2" in clusters else []),
            "the client ends each run stream at RUN_FINISHED; the last row: did the server end it within 2 s",
        ],
    )


async def part_b(res: Resources, clusters: dict[str, Cluster], plan: Plan) -> None:
    print(f"(b) POST → first event, {plan.latency_samples} runs of /stream 3", flush=True)
    results: dict[str, list[float]] = {}
    for config, cluster in clusters.items():
        await wait_quiet(res, plan)
        results[config] = await first_event_latency(*cluster.route(0), plan.latency_samples)
        print(f"    {CONFIGS[config]:7} median {ms(statistics.median(results[config]))}", flush=True)
    medians = {c: statistics.median(v) for c, v in results.items()}
    table(
        f"(b) POST → first event (RUN_STARTED) on an open thread stream, {plan.latency_samples} runs of /stream 3",
        [CONFIGS[c] for c in clusters],
        [
            ("median", [ms(medians[c]) for c in clusters]),
            ("p90", [ms(quantile(results[c], 0.9)) for c in clusters]),
            ("max", [ms(max(results[c])) for c in clusters]),
            ("median, ratio to SQLite", [ratio(medians[c], medians.get("sqlite")) for c in clusters]),
        ],
        ["PG 2w: posted at worker A, the thread stream open at worker B"] if "pg2" in clusters else [],
    )


async def part_c(res: Resources, clusters: dict[str, Cluster], plan: Plan) -> None:
    print(f"(c) capacity, /stream {plan.capacity_words} ms=50 per run, p99 gap < {GAP_LIMIT * 1000:.0f} ms", flush=True)
    ladders: dict[str, list[Step]] = {}
    for config, cluster in clusters.items():
        ladders[config] = await ladder(res, cluster, plan)
    best: dict[str, Step | None] = {}
    failed: dict[str, Step | None] = {}
    for config, steps in ladders.items():
        passed = [s for s in steps if s.ok]
        best[config] = passed[-1] if passed else None
        failed[config] = steps[-1] if steps and not steps[-1].ok else None

    def capacity(config: str) -> str:
        step = best[config]
        if step is None:
            return f"< {plan.steps[0]}"
        return f"{step.runs}" if failed[config] is not None else f">= {step.runs}"

    runs = {c: (s.runs if s is not None else None) for c, s in best.items()}

    def open_ended(config: str) -> str:
        bounded = [config, "sqlite"] if "sqlite" in clusters else [config]
        return "*" if any(failed[c] is None or best[c] is None for c in bounded) else ""

    base = runs.get("sqlite")
    aims = {"pg1": " (aim >= 0.7)", "pg2": " (aim >= 1.5)"}
    table(
        f"(c) capacity: concurrent /stream {plan.capacity_words} ms=50 runs with the p99 gap under "
        f"{GAP_LIMIT * 1000:.0f} ms",
        [CONFIGS[c] for c in clusters],
        [
            ("capacity (runs)", [capacity(c) for c in clusters]),
            ("p99 gap at capacity", [ms(best[c].p99) if best[c] else "-" for c in clusters]),
            (
                "next step: runs, p99 gap",
                [
                    f"{f.runs}: {ms(f.p99)}"
                    + (f", {f.stalled} stalled" if f.stalled else "")
                    + (f", {f.failed} RUN_ERROR" if f.failed else "")
                    if (f := failed[c])
                    else "-"
                    for c in clusters
                ],
            ),
            (
                "executing per worker at capacity",
                ["/".join(map(str, best[c].split)) if best[c] else "-" for c in clusters],
            ),
            (
                "streams cut off (no RUN_FINISHED)",
                [str(best[c].cut_off) if best[c] else "-" for c in clusters],
            ),
            (
                "CPU ms per 1,000 events at capacity: servers / PG + Redis",
                [f"{best[c].cpu_per_k[0]:.0f} / {best[c].cpu_per_k[1]:.0f}" if best[c] else "-" for c in clusters],
            ),
            ("ratio to SQLite", [ratio(runs[c], base) + open_ended(c) + aims.get(c, "") for c in clusters]),
        ],
        [
            "steps: "
            + ", ".join(str(s) for s in plan.steps)
            + "; * a capacity that passed the last step (or failed the first) makes its ratio a bound, not a value",
            "PG 2w: client i posts at worker i % 2 and reads its run's stream at the other worker",
        ],
    )


async def part_moves(res: Resources, plan: Plan, sig: signal.Signals, lease: float) -> None:
    label = "(d) takeover after SIGKILL" if sig == signal.SIGKILL else "(e) handover after SIGTERM"
    print(f"{label}, --lease {lease:g}, {plan.trials} trial(s)", flush=True)
    trials = []
    for _ in range(plan.trials):
        for attempt in range(3):
            await wait_quiet(res, plan)
            try:
                trial = await move_trial(res, sig, lease)
                break
            except TooLate as exc:
                if attempt == 2:
                    raise
                print(f"    {exc}; again", flush=True)
        trials.append(trial)
        print(
            f"    worker C after {trial['on_c']:.2f} s, its first event at A after {trial['event']:.2f} s "
            f"(B had done {trial['steps_before']} of 20 steps; then {', '.join(trial['after'])}); "
            f"run {trial['status']}",
            flush=True,
        )
    aim = f"<= lease + 1 s = {lease + 1:g} s" if sig == signal.SIGKILL else "< 1 s"
    columns = [f"trial {i + 1}" for i in range(len(trials))] + ["median"]

    def row(key: str) -> list[str]:
        values = [t[key] for t in trials]
        return [f"{v:.2f} s" for v in values] + [f"{statistics.median(values):.2f} s"]

    table(
        f"{label}: PostgreSQL + Redis, A (--max-runs 0) serves, B executes /steps 20 ms=200, C takes over; "
        f"--lease {lease:g}",
        columns,
        [
            ("until the run's worker is C", row("on_c")),
            ("until C's first event (RUN_STARTED) at A", row("event")),
            ("run status at the end", [t["status"] for t in trials] + [""]),
            ("B's exit code", [str(t["exit"]) for t in trials] + [""]),
        ],
        [
            f"aim: {aim}; from the signal to B, measured by polling GET /v1/runs/{{rid}} at A every 10 ms",
            "SQLite and PG 1w: not applicable (one process; restarts are bench/recovery.py's)",
        ],
    )


async def part_f(res: Resources, clusters: dict[str, Cluster], plan: Plan) -> None:
    n = plan.thread_runs
    print(f"(f) long thread, {n} runs of /steps 3 ms=0", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for config, cluster in clusters.items():
        await wait_quiet(res, plan)
        results[config] = await long_thread(cluster, n)
        times = results[config]["times"]
        print(f"    {CONFIGS[config]:7} run 1 {ms(times[0])}, run {n} {ms(times[-1])}", flush=True)
    k = min(10, max(1, n // 4))
    cols = list(clusters)

    def cells(make: Callable[[dict[str, Any]], str]) -> list[str]:
        return [make(results[c]) for c in cols]

    def med(r: dict[str, Any], first: bool) -> float:
        return statistics.median(r["times"][:k] if first else r["times"][-k:])

    def size(r: dict[str, Any], run: int, i: int) -> str:
        return f"{r['sizes'][run][i]:,}"

    table(
        f"(f) one thread of {n} runs of /steps 3 ms=0, one after the other",
        [CONFIGS[c] for c in cols],
        [
            ("run 1: POST → RUN_FINISHED", cells(lambda r: ms(r["times"][0]))),
            (f"run {n}", cells(lambda r: ms(r["times"][-1]))),
            (f"ratio run {n} / run 1 (aim <= 1.2)", cells(lambda r: ratio(r["times"][-1], r["times"][0]))),
            (f"median of runs 1-{k}", cells(lambda r: ms(med(r, True)))),
            (f"median of runs {n - k + 1}-{n}", cells(lambda r: ms(med(r, False)))),
            ("ratio of those medians", cells(lambda r: ratio(med(r, False), med(r, True)))),
            ("after run 1: checkpoint bytes", cells(lambda r: size(r, 1, 0))),
            ("history JSON bytes", cells(lambda r: size(r, 1, 1))),
            ("ratio (aim <= 2)", cells(lambda r: ratio(*r["sizes"][1]))),
            (f"after run {n}: checkpoint bytes", cells(lambda r: size(r, n, 0))),
            ("history JSON bytes", cells(lambda r: size(r, n, 1))),
            ("ratio (aim <= 2)", cells(lambda r: ratio(*r["sizes"][n]))),
        ],
        ["PG 2w: POSTs alternate between the workers; the thread stream is read at worker B"]
        if "pg2" in clusters
        else [],
    )


# --- main -------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, res: Resources) -> int:
    plan = QUICK if args.quick else FULL
    if args.steps:
        plan = replace(plan, steps=[int(n) for n in args.steps.split(",")])
    parts = set(args.only.replace(",", ""))
    if unknown := parts - set(PARTS):
        raise SystemExit(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    configs = [c for c in CONFIGS if c in args.configs.split(",")]
    if unknown_configs := set(args.configs.split(",")) - set(CONFIGS):
        raise SystemExit(f"unknown configurations {sorted(unknown_configs)}; choose from {', '.join(CONFIGS)}")
    for url, what, default_port in ((args.postgres, "PostgreSQL", 5432), (args.redis, "Redis", 6379)):
        where = urlsplit(url)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(where.hostname, where.port or default_port), 5)
            writer.close()
        except (OSError, TimeoutError) as exc:
            raise SystemExit(f"{what} is not reachable at {url}: {exc}") from None
    pg_version = await asyncio.to_thread(psql, args.postgres, "SHOW server_version")
    collector.settle_after_start_up()
    print(
        f"# scale-out benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}, asyncio loop, PostgreSQL {pg_version}, Redis at {args.redis}"
        f"{', --quick' if args.quick else ''}\n# this process's collector: the server's "
        f"(tether.engine.collector: gc.freeze() after set-up, thresholds {gc.get_threshold()})",
        flush=True,
    )
    started = time.monotonic()
    failures = 0
    shared = [p for p in "abfc" if p in parts]
    if shared:
        clusters: dict[str, Cluster] = {}
        try:
            for config, cluster in zip(
                configs, await asyncio.gather(*(start_cluster(res, c) for c in configs)), strict=True
            ):
                clusters[config] = cluster
            print(
                "# servers: "
                + "; ".join(f"{CONFIGS[c]} {' '.join(cl.urls)}" for c, cl in clusters.items())
                + f" (started in {time.monotonic() - started:.1f} s)",
                flush=True,
            )
            for part in shared:
                try:
                    await {"a": part_a, "b": part_b, "c": part_c, "f": part_f}[part](res, clusters, plan)
                except Exception as exc:
                    failures += 1
                    traceback.print_exc()
                    print(f"!! part ({part}) failed: {exc!r}", flush=True)
                report_logs(server for cluster in clusters.values() for server in cluster.servers)
        finally:
            for cluster in clusters.values():
                cluster.stop()
                if cluster.dsn is not None:
                    await asyncio.to_thread(res.drop_database, cluster.database)
    for part, sig, lease in (("d", signal.SIGKILL, 5.0), ("e", signal.SIGTERM, 30.0)):
        if part in parts:
            try:
                await part_moves(res, plan, sig, lease)
            except Exception as exc:
                failures += 1
                traceback.print_exc()
                print(f"!! part ({part}) failed: {exc!r}", flush=True)
    print(f"# done in {time.monotonic() - started:.0f} s", flush=True)
    return 1 if failures else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny parameters, under a minute: a check that it works")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts, of a,b,c,d,e,f")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="for (a), (b), (c), (f): comma-separated, of sqlite,pg1,pg2"
    )
    parser.add_argument("--steps", help=f"capacity steps, comma-separated run counts (default {STEPS})")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="a database to connect to for CREATE/DROP DATABASE (the benchmark's own are made next to it)",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--logs", type=Path, help="copy every server's log (warnings and errors) into this directory")
    return parser.parse_args()


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: servers killed, databases dropped


if __name__ == "__main__":
    arguments = parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a socket or two per stream, here and in the servers
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    resources = Resources(arguments.postgres, arguments.redis, arguments.logs)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        sys.exit(asyncio.run(run(arguments, resources)))
    except KeyboardInterrupt:
        print("\n# interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        resources.cleanup()
