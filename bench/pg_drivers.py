"""PostgreSQL drivers on Tether's hot path, the group commit: asyncpg against psycopg 3. Run by hand:

    .venv/bin/python bench/pg_drivers.py [--dsn postgresql://postgres@127.0.0.1:5432/test] [--quick]

One group commit is one transaction: the fencing check of the run
(`SELECT 1 FROM runs WHERE id = $1 AND worker = $2 AND lease_epoch = $3 FOR SHARE`, one row expected),
the INSERT of a batch of N events into `events(thread_id, seq, run_id, type, data)` (PRIMARY KEY
(thread_id, seq); data is ~100-200 bytes of AG-UI JSON), `UPDATE feed_head SET seq = seq + N RETURNING
seq` on a one-row table, then COMMIT. Each driver writes the batch in every way it offers:

    asyncpg   executemany; INSERT ... SELECT FROM unnest($1::text[], ...); copy_records_to_table
    psycopg   executemany in pipeline mode (the whole transaction pipelined: BEGIN, the fence, the
              inserts and the UPDATE go out together, then COMMIT); unnest (arrays sent in binary, %b),
              statement by statement, and with the whole transaction pipelined; COPY (which pipeline
              mode does not allow), statement by statement

Measured, side by side in one run, in a fresh database the script creates and drops (bench_<random>):

(a) batches of 1, 10, 100 and 1000 events per commit, one writer: commits/s, events/s, and the median
    and p99 commit latency;
(b) batch 10 with 4 concurrent writers (each its own thread and run) against 1 (that is (a)'s): total
    commits/s;
(c) CPU time of this Python process per committed event (time.process_time; building the Event
    objects is left out, as the journal does that whatever the driver), since the client's CPU
    competes with the server's event loop on 2 cores; and PostgreSQL's CPU per event beside it;
(d) asyncpg's pool used per commit (`async with pool.acquire()`), which resets each connection on
    release, against a connection held by the writer.

Each writer commits back to back for --duration seconds per point; every point runs --reps times
(rounds interleave the methods, each round in another order) and the median is reported. asyncpg
writers take their connections from asyncpg.create_pool (held for a point, except in (d); the
pool's max_queries raised, so that it does not replace a connection every 10,000 commits);
psycopg_pool is not a dependency, so each psycopg writer has its own AsyncConnection. The loop is
uvloop when importable (as uvicorn does), the collector gets the server's settings
(tether.engine.collector) after set-up. The machine must be quiet: before each round the script
waits (20 s at most) until other processes use under 5% of a core, repeats a point that overlapped
such load (twice at most, keeping the least disturbed attempt; 25 repeats per run at most, so ~2.5
minutes in all) and lists the points it had to keep anyway. Kernel threads (the fsyncs' I/O) do not count.

psycopg is not a project dependency; without it, asyncpg is measured alone. To compare:

    .venv/bin/pip install "psycopg[binary]==3.3.9"
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from tether.engine import collector
from tether.events import Event

try:
    import psycopg
except ImportError:
    psycopg = None

try:
    import uvloop
except ImportError:
    uvloop = None

BATCHES = (1, 10, 100, 1000)
WRITERS = 4
WORKER = "worker-1f3c"
EPOCH = 7
QUIET = 0.05
"""Other processes may use this much of one core during a point; above it, the point is repeated."""
REPEATS = 25
"""At most this many points are repeated in a run (about 30 s), so that a busy machine does not make it last."""

SCHEMA = """
CREATE TABLE events (
    thread_id text NOT NULL, seq bigint NOT NULL, run_id text NOT NULL, type text NOT NULL, data text NOT NULL,
    PRIMARY KEY (thread_id, seq)
);
CREATE TABLE runs (id text PRIMARY KEY, worker text NOT NULL, lease_epoch bigint NOT NULL);
CREATE TABLE feed_head (seq bigint NOT NULL);
INSERT INTO feed_head VALUES (0);
"""
COLUMNS = ("thread_id", "seq", "run_id", "type", "data")

FENCE = "SELECT 1 FROM runs WHERE id = $1 AND worker = $2 AND lease_epoch = $3 FOR SHARE"
HEAD = "UPDATE feed_head SET seq = seq + $1 RETURNING seq"
INSERT = "INSERT INTO events (thread_id, seq, run_id, type, data) VALUES ($1, $2, $3, $4, $5)"
UNNEST = (
    "INSERT INTO events (thread_id, seq, run_id, type, data) "
    "SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[])"
)
COPY = "COPY events (thread_id, seq, run_id, type, data) FROM STDIN"


def psycopg_sql(sql: str, placeholder: str = "%s") -> str:
    """The same statement with psycopg's placeholders (%b: the value is sent in binary)."""
    for i in range(5, 0, -1):
        sql = sql.replace(f"${i}", placeholder)
    return sql


def event_data(n: int) -> list[str]:
    """AG-UI TEXT_MESSAGE_CONTENT events as Tether writes them: 100-200 bytes of JSON each."""
    words = "the quick brown fox jumps over a lazy dog while streaming tokens to every open tab".split()
    message = "1789f83d-5b0e-4c4f-9a51-3f1d2c7e8a90"
    out = []
    for i in range(n):
        delta = " ".join(words[(i + k) % len(words)] for k in range(i % 12)) or "w8"
        out.append(
            f'{{"type":"TEXT_MESSAGE_CONTENT","timestamp":{1795557723195 + i},"messageId":"{message}",'
            f'"delta":" {delta}"}}'
        )
    return out


DATA = event_data(1000)


class Fenced(RuntimeError):
    """The run's lease is not ours: the group commit must not go through."""


@dataclass
class Writer:
    """One journal writing one run's events on one thread."""

    thread_id: str
    run_id: str
    seq: int = 1

    def events(self, n: int) -> list[Event]:
        seq, self.seq = self.seq, self.seq + n
        return [
            Event(self.thread_id, s, self.run_id, "TEXT_MESSAGE_CONTENT", DATA[s % len(DATA)])
            for s in range(seq, seq + n)
        ]


def rows(events: list[Event]) -> list[tuple[str, int, str, str, str]]:
    return [(e.thread_id, e.seq, e.run_id, e.type, e.data) for e in events]


def columns(events: list[Event]) -> tuple[list[str], list[int], list[str], list[str], list[str]]:
    return (
        [e.thread_id for e in events],
        [e.seq for e in events],
        [e.run_id for e in events],
        [e.type for e in events],
        [e.data for e in events],
    )


# --- asyncpg ---------------------------------------------------------------------------------------


async def asyncpg_commit(conn: asyncpg.Connection, writer: Writer, events: list[Event], insert: Callable) -> int:
    async with conn.transaction():
        if await conn.fetchval(FENCE, writer.run_id, WORKER, EPOCH) is None:
            raise Fenced(writer.run_id)
        await insert(conn, events)
        return await conn.fetchval(HEAD, len(events))


async def asyncpg_executemany(conn: asyncpg.Connection, events: list[Event]) -> None:
    await conn.executemany(INSERT, rows(events))


async def asyncpg_unnest(conn: asyncpg.Connection, events: list[Event]) -> None:
    await conn.execute(UNNEST, *columns(events))


async def asyncpg_copy(conn: asyncpg.Connection, events: list[Event]) -> None:
    await conn.copy_records_to_table("events", records=rows(events), columns=COLUMNS)


# --- psycopg ---------------------------------------------------------------------------------------

PSY_FENCE, PSY_HEAD, PSY_INSERT = map(psycopg_sql, (FENCE, HEAD, INSERT))
PSY_UNNEST = psycopg_sql(UNNEST, "%b")
"""Arrays as binary parameters: psycopg's text arrays (%s) cost ~7x the client CPU at 1000 events (11 ms a commit)."""


async def psycopg_commit(conn: Any, writer: Writer, events: list[Event], insert: Callable) -> int:
    """Statement by statement: each one waits for its answer, as with asyncpg."""
    async with conn.transaction():
        fence = await conn.execute(PSY_FENCE, (writer.run_id, WORKER, EPOCH))
        if await fence.fetchone() is None:
            raise Fenced(writer.run_id)
        await insert(conn, events)
        head = await conn.execute(PSY_HEAD, (len(events),))
        return (await head.fetchone())[0]


async def psycopg_pipelined(conn: Any, writer: Writer, events: list[Event], insert: Callable) -> int:
    """BEGIN, the fence, the inserts and the UPDATE in one round trip; the fence is checked before COMMIT."""
    async with conn.pipeline(), conn.transaction():
        fence = await conn.execute(PSY_FENCE, (writer.run_id, WORKER, EPOCH))
        await insert(conn, events)
        head = await conn.execute(PSY_HEAD, (len(events),))
        if await fence.fetchone() is None:
            raise Fenced(writer.run_id)
        return (await head.fetchone())[0]


async def psycopg_executemany(conn: Any, events: list[Event]) -> None:
    await conn.cursor().executemany(PSY_INSERT, rows(events))


async def psycopg_unnest(conn: Any, events: list[Event]) -> None:
    await conn.execute(PSY_UNNEST, columns(events))


async def psycopg_copy(conn: Any, events: list[Event]) -> None:
    async with conn.cursor().copy(COPY) as copy:
        for row in rows(events):
            await copy.write_row(row)


@dataclass
class Method:
    name: str
    driver: str
    transaction: Callable[..., Awaitable[int]]
    insert: Callable[..., Awaitable[None]]

    async def commit(self, conn: Any, writer: Writer, events: list[Event]) -> int:
        return await self.transaction(conn, writer, events, self.insert)


METHODS = [
    Method("asyncpg executemany", "asyncpg", asyncpg_commit, asyncpg_executemany),
    Method("asyncpg unnest", "asyncpg", asyncpg_commit, asyncpg_unnest),
    Method("asyncpg copy_records_to_table", "asyncpg", asyncpg_commit, asyncpg_copy),
    Method("psycopg executemany, pipelined", "psycopg", psycopg_pipelined, psycopg_executemany),
    Method("psycopg unnest", "psycopg", psycopg_commit, psycopg_unnest),
    Method("psycopg unnest, pipelined", "psycopg", psycopg_pipelined, psycopg_unnest),
    Method("psycopg COPY", "psycopg", psycopg_commit, psycopg_copy),
]


# --- the machine -----------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


SERVING: set[int] = set()
"""The PostgreSQL processes that work for this benchmark: its backends, the postmaster and the shared ones (WAL
writer, checkpointer, ...). Other backends (someone else's tests) count as load elsewhere."""


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """Every other process's CPU seconds so far, and whose it is: "postgres" (SERVING), "kernel" (threads such
    as kblockd's, which do the fsyncs' work) or "other"."""
    me = os.getpid()
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        kernel = int(fields[6]) & 0x00200000  # PF_KTHREAD
        group = "postgres" if int(name) in SERVING else "kernel" if kernel else "other"
        out[int(name)] = (group, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def cpu_since(before: dict[int, tuple[str, float]]) -> tuple[float, float]:
    """CPU seconds used since `before` by PostgreSQL's processes, and by other processes (kernel threads
    and this process left out)."""
    used = {"postgres": 0.0, "kernel": 0.0, "other": 0.0}
    for pid, (group, t) in cpu_by_process().items():
        used[group] += t - before.get(pid, (group, 0.0))[1]
    return used["postgres"], used["other"]


async def wait_quiet(patience: float = 20.0) -> float:
    """Wait (for `patience` seconds at most) until other processes use under QUIET of a core for 2 s; their load."""
    deadline = time.monotonic() + patience
    while True:
        before = cpu_by_process()
        await asyncio.sleep(2.0)
        load = cpu_since(before)[1] / 2.0
        if load < QUIET or time.monotonic() > deadline:
            if load >= QUIET:
                print(f"  the machine is not quiet ({load:.0%} of a core elsewhere): measuring anyway")
            return load
        print(f"  waiting for a quiet machine ({load:.0%} of a core elsewhere)")


# --- measuring -------------------------------------------------------------------------------------


@dataclass
class Sample:
    commits_per_s: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    client_us: float
    """This process's CPU per committed event, building the Event objects left out."""
    server_us: float
    """PostgreSQL's CPU per committed event."""
    load: float
    """Other processes' CPU during the point, in cores."""


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Bench:
    def __init__(self, dsn: str, duration: float) -> None:
        self.dsn = dsn
        self.duration = duration
        self.writers = [Writer(f"thread-{i}", f"run-{i}") for i in range(WRITERS)]
        self.repeats = 0
        self.disturbed: list[str] = []
        """Points kept although other processes were busy in every attempt."""

    async def open(self) -> None:
        self.admin = await asyncpg.connect(self.dsn)
        await self.admin.execute(SCHEMA)
        await self.admin.executemany(
            "INSERT INTO runs VALUES ($1, $2, $3)", [(w.run_id, WORKER, EPOCH) for w in self.writers]
        )
        # By default the pool replaces a connection after 50,000 queries (10,000 commits here): not within a point.
        self.pool = await asyncpg.create_pool(self.dsn, min_size=WRITERS, max_size=WRITERS, max_queries=10**9)
        self.plain_pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=1, max_queries=10**9, reset=_no_reset
        )
        self.psycopg = (
            [await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) for _ in range(WRITERS)]
            if psycopg
            else []
        )
        await self.find_serving()

    async def find_serving(self) -> None:
        pids = await self.admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() OR backend_type <> 'client backend'"
        )
        SERVING.clear()
        SERVING.update(r["pid"] for r in pids)
        SERVING.add(parent(await self.admin.fetchval("SELECT pg_backend_pid()")))  # the postmaster

    async def close(self) -> None:
        for conn in self.psycopg:
            await conn.close()
        await self.pool.close()
        await self.plain_pool.close()
        await self.admin.close()

    async def point(self, method: Method, batch: int, writers: int, per_commit_pool: Any = None) -> Sample:
        """One measurement; repeated (twice at most) when other processes were busy meanwhile, keeping the
        least disturbed attempt."""
        name = f"{method.name}, batch {batch}, {writers} writer(s){', pool per commit' if per_commit_pool else ''}"
        attempts: list[Sample] = []
        while len(attempts) < 3:
            attempts.append(await self._point(method, batch, writers, per_commit_pool))
            if attempts[-1].load < QUIET or self.repeats >= REPEATS:
                break
            self.repeats += 1
            print(f"  {name}: {attempts[-1].load:.0%} of a core elsewhere")
        sample = min(attempts, key=lambda s: s.load)
        if sample.load >= QUIET:
            self.disturbed.append(f"{name} ({sample.load:.0%})")
        return sample

    async def _point(self, method: Method, batch: int, writers: int, per_commit_pool: Any) -> Sample:
        await self.admin.execute("TRUNCATE events")
        await self.find_serving()
        held = []
        if per_commit_pool is not None:
            conns: list[Any] = [None] * writers
        elif method.driver == "asyncpg":
            held = [await self.pool.acquire() for _ in range(writers)]
            conns = held
        else:
            conns = self.psycopg[:writers]

        async def commit(conn: Any, writer: Writer, events: list[Event]) -> int:
            if per_commit_pool is None:
                return await method.commit(conn, writer, events)
            async with per_commit_pool.acquire() as conn:
                return await method.commit(conn, writer, events)

        latencies: list[float] = []
        building = 0.0

        async def write(conn: Any, writer: Writer) -> None:
            nonlocal building
            while True:
                cpu = time.process_time()
                events = writer.events(batch)
                building += time.process_time() - cpu
                start = time.perf_counter()
                if start >= deadline:
                    return
                await commit(conn, writer, events)
                latencies.append(time.perf_counter() - start)

        try:
            for conn, writer in zip(conns, self.writers, strict=False):
                for _ in range(3):  # statements prepared, caches warm
                    await commit(conn, writer, writer.events(batch))
            gc.collect()
            before = cpu_by_process()
            cpu, start = time.process_time(), time.perf_counter()
            deadline = start + self.duration
            await asyncio.gather(*(write(conn, writer) for conn, writer in zip(conns, self.writers, strict=False)))
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu - building
            pg, other = cpu_since(before)
        finally:
            for conn in held:
                await self.pool.release(conn)
        events = len(latencies) * batch
        stored = await self.admin.fetchval("SELECT count(*) FROM events")
        assert stored == events + 3 * batch * writers, (method.name, stored, events)
        return Sample(
            commits_per_s=len(latencies) / elapsed,
            events_per_s=events / elapsed,
            p50_ms=statistics.median(latencies) * 1e3,
            p99_ms=quantile(latencies, 0.99) * 1e3,
            client_us=cpu / events * 1e6,
            server_us=pg / events * 1e6,
            load=other / elapsed,
        )


async def _no_reset(conn: asyncpg.Connection) -> None:
    """A pool reset that sends nothing (asyncpg still rolls back a transaction left open)."""


def med(samples: list[Sample], field: str) -> float:
    return statistics.median(getattr(s, field) for s in samples)


def spread(samples: list[Sample], field: str) -> str:
    """The median and, over several rounds, the lowest and highest: "1,900 (1,850-1,950)"."""
    values = [getattr(s, field) for s in samples]
    text = f"{statistics.median(values):,.0f}"
    return f"{text} ({min(values):,.0f}-{max(values):,.0f})" if len(values) > 1 else text


# --- the run ---------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    methods = [m for m in METHODS if psycopg or m.driver == "asyncpg"]
    reps = 1 if args.quick else args.reps
    duration = 0.3 if args.quick else args.duration
    name = f"bench_{secrets.token_hex(4)}"
    root = await asyncpg.connect(args.dsn)
    await root.execute(f"CREATE DATABASE {name}")
    bench = Bench(_dsn_with_database(args.dsn, name), duration)
    started = time.perf_counter()
    try:
        await bench.open()
        settings = {
            r["name"]: r["setting"]
            for r in await bench.admin.fetch(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('server_version', 'fsync', 'synchronous_commit', 'wal_sync_method', 'shared_buffers', 'autovacuum')"
            )
        }
        collector.settle_after_start_up()
        version = settings.pop("server_version")
        psycopg_version = f"{psycopg.__version__} ({psycopg.pq.__impl__})" if psycopg else "not installed"
        print(
            f"database {name}; PostgreSQL {version} ({', '.join(f'{k}={v}' for k, v in settings.items())}); "
            f"Python {sys.version.split()[0]}, asyncpg {asyncpg.__version__}, psycopg {psycopg_version}; "
            f"{'uvloop' if uvloop else 'asyncio'} loop; "
            f"collector: Tether's (thresholds {collector.THRESHOLDS}, frozen after set-up)"
        )
        print(f"{reps} round(s) of {len(methods)} methods, {duration:g} s per point")
        configs = [(b, 1) for b in BATCHES] + [(10, WRITERS)]
        results: dict[tuple[str, int, int], list[Sample]] = {}
        pooled: dict[str, list[Sample]] = {}
        reference = next(m for m in methods if m.name == "asyncpg unnest")
        for rep in range(reps):
            load = await wait_quiet()
            print(f"round {rep + 1}/{reps} (other processes: {load:.0%} of a core)")
            for batch, writers in configs:
                order = methods[rep % len(methods) :] + methods[: rep % len(methods)]
                for method in order:
                    results.setdefault((method.name, batch, writers), []).append(
                        await bench.point(method, batch, writers)
                    )
            for label, pool in (("default reset", bench.pool), ("no-op reset", bench.plain_pool)):
                pooled.setdefault(label, []).append(await bench.point(reference, 10, 1, per_commit_pool=pool))
        await bench.close()
    finally:
        await root.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await root.close()
    report(methods, results, pooled, reps, time.perf_counter() - started, bench)


def _dsn_with_database(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


def report(
    methods: list[Method],
    results: dict[tuple[str, int, int], list[Sample]],
    pooled: dict[str, list[Sample]],
    reps: int,
    seconds: float,
    bench: Bench,
) -> None:
    print(f"\n(a) + (c): one writer; median of {reps} (commits/s: lowest-highest in brackets); CPU per committed event")
    print("| batch | method | commits/s | events/s | p50 ms | p99 ms | client CPU µs/event | PostgreSQL CPU µs/event |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in BATCHES:
        for m in methods:
            s = results[(m.name, batch, 1)]
            print(
                f"| {batch} | {m.name} | {spread(s, 'commits_per_s')} | {med(s, 'events_per_s'):,.0f} | "
                f"{med(s, 'p50_ms'):.2f} | {med(s, 'p99_ms'):.2f} | "
                f"{med(s, 'client_us'):.1f} | {med(s, 'server_us'):.1f} |"
            )
    print(f"\n(b): batch 10, total commits/s; median of {reps} (lowest-highest)")
    print(f"| method | 1 writer | {WRITERS} writers | ratio | client CPU µs/event, 1 → {WRITERS} writers |")
    print("|---|---|---|---|---|")
    for m in methods:
        one, many = results[(m.name, 10, 1)], results[(m.name, 10, WRITERS)]
        print(
            f"| {m.name} | {spread(one, 'commits_per_s')} | {spread(many, 'commits_per_s')} | "
            f"{med(many, 'commits_per_s') / med(one, 'commits_per_s'):.2f} | "
            f"{med(one, 'client_us'):.1f} → {med(many, 'client_us'):.1f} |"
        )
    print(f"\n(d): asyncpg unnest, batch 10, one writer; median of {reps} (commits/s: lowest-highest)")
    print("| connection | commits/s | p50 ms | client CPU µs/event |")
    print("|---|---|---|---|")
    rows_d = [("held by the writer", results[("asyncpg unnest", 10, 1)])]
    rows_d += [(f"`pool.acquire()` per commit, {label}", s) for label, s in pooled.items()]
    for label, s in rows_d:
        print(f"| {label} | {spread(s, 'commits_per_s')} | {med(s, 'p50_ms'):.2f} | {med(s, 'client_us'):.1f} |")
    if any(m.driver == "psycopg" for m in methods):
        print("\nbest psycopg / best asyncpg (one writer):")
        for batch in BATCHES:
            best = {}
            for driver in ("asyncpg", "psycopg"):
                name = max(
                    (m.name for m in methods if m.driver == driver),
                    key=lambda n: med(results[(n, batch, 1)], "events_per_s"),
                )
                best[driver] = (name, results[(name, batch, 1)])
            (an, a), (pn, p) = best["asyncpg"], best["psycopg"]
            print(
                f"  batch {batch:>4}: events/s {med(p, 'events_per_s') / med(a, 'events_per_s'):.2f} "
                f"({pn} vs {an}), client CPU per event {med(p, 'client_us') / med(a, 'client_us'):.2f}"
            )
    print(f"\n{seconds:.0f} s in all; {bench.repeats} point(s) repeated for load elsewhere")
    if len(bench.disturbed) > 10:
        print(f"THE MACHINE WAS BUSY: {len(bench.disturbed)} points kept with load elsewhere; run again on a quiet one")
    elif bench.disturbed:
        print(f"kept with other processes busy (share of a core): {'; '.join(bench.disturbed)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dsn", default="postgresql://postgres@127.0.0.1:5432/test", help="where to create the database"
    )
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per point")
    parser.add_argument("--reps", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument("--quick", action="store_true", help="one round of 0.3 s points")
    args = parser.parse_args()
    if psycopg is None:
        print(
            "psycopg is not installed: measuring asyncpg alone. To compare the drivers, install it (it is not a "
            'project dependency): .venv/bin/pip install "psycopg[binary]==3.3.9"'
        )
    if uvloop is not None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
