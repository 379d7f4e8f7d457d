"""The journal: group commit of everything a run produces, then fan-out.

Runs append events, run status changes, feed notices and checkpoints without
waiting; a single writer task gathers them for a few milliseconds, writes them
in one transaction, and only then publishes the events on the bus. So a client
never sees an event that a crash could lose (durable before visible), and
order is simple: whatever was appended first is committed no later.

Sequence numbers are given at append time, per thread, +1 per event. Only
the worker that holds the lease of a thread's active run appends its events,
so a counter in memory, loaded from the store when the run is claimed, is
enough; and the store refuses a commit whose lease was taken over (fencing),
so a worker that lost a lease writes nothing more of that run. Feed numbers
are given by the commit itself (they must follow commit order across workers).

A database that cannot be reached is waited for (up to `outage_limit`
seconds), the batch retried; runs block on `commit()` meanwhile. A request
does not: `commit(refuse_outage=True)` answers StoreUnavailable (a 503) as
soon as an outage begins, and its items stay in the batch, written when the
database is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from tether.bus import FEED_CHANNEL, Bus, thread_channel
from tether.engine.recent import RecentEvents
from tether.events import Event, FeedItem, feed_notice
from tether.faults import crash_point
from tether.metrics import Metrics
from tether.store import (
    TERMINAL_STATUSES,
    Checkpoint,
    FeedNotice,
    Lease,
    LeaseLost,
    Run,
    RunStatus,
    Store,
    ToolMark,
    WriteBatch,
)
from tether.store.db import StoreConflict, StoreUnavailable

log = logging.getLogger("tether.journal")

BUSY_GROUP = 100
"""A group of this many events means runs are streaming fast: the next group is gathered for longer.
Measured on /stream 100000: 2 ms groups gave 8.6k events/s, 10 ms groups 9.5k. An idle server keeps
the short interval, so the first event of a run is not delayed."""
BUSY_FACTOR = 5


class JournalError(RuntimeError):
    """A group commit failed: what was appended with it is lost, and its runs must fail."""


class Journal:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        interval: float,
        max_pending: int = 2_000,
        *,
        outage_limit: float = 60.0,
        on_lease_lost: Callable[[list[str]], None] = lambda run_ids: None,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics or Metrics()
        self._bus = bus
        self._outage_limit = outage_limit
        self.outage: str | None = None
        """Why commits are failing right now (the database is unreachable, or full), while they are retried."""
        self._impatient: set[asyncio.Future[None]] = set()
        """The waiters of commit(refuse_outage=True): refused when an outage begins."""
        self._on_lease_lost = on_lease_lost
        self._leases: dict[str, Lease] = {}
        self._lost: set[str] = set()
        """Runs whose lease another worker took: nothing more of them is written."""
        self._interval = interval
        self._busy = False
        """The last group was large: gather longer (BUSY_FACTOR times the interval) to amortise each transaction."""
        self._last_write = 0.0
        """When the last group commit began (event-loop time)."""
        self._max_pending = max_pending
        self._pending = WriteBatch()
        self._waiters: list[asyncio.Future[None]] = []
        self._next_seq: dict[str, int] = {}
        self.recent = RecentEvents()
        """The last events committed of each thread whose run this worker holds (reads that need no store)."""
        self._failures: dict[str, BaseException] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writing = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._write_loop(), name="tether-journal")

    async def stop(self) -> None:
        """Commit what is pending, then stop the writer."""
        if self._task is None:
            return
        await self.commit()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def open_thread(self, thread_id: str) -> None:
        """Load a thread's sequence counter; call before appending its first event."""
        if thread_id not in self._next_seq:
            last = await self._store.last_seq(thread_id)
            if thread_id not in self._next_seq:  # not loaded by another caller meanwhile
                self._next_seq[thread_id] = last + 1
                self.recent.start(thread_id, last)

    def forget_thread(self, thread_id: str) -> None:
        """Drop a thread's counter and any failure mark; `open_thread` reloads it from what was committed."""
        self._next_seq.pop(thread_id, None)
        self._failures.pop(thread_id, None)
        self.recent.forget(thread_id)

    def hold(self, lease: Lease, thread_id: str) -> None:
        """Write this run's items under its lease from now on (the store checks it at every commit)."""
        self._leases[lease.run_id] = lease
        self._lost.discard(lease.run_id)
        self.recent.hold(lease.run_id, thread_id)

    def release(self, run_id: str) -> None:
        """The run's execution here has ended. (If its lease was lost, it stays marked: nothing of it
        that is still pending may be written without the lease.)"""
        self._leases.pop(run_id, None)
        self.recent.release(run_id)

    def lost(self, run_id: str) -> bool:
        return run_id in self._lost

    def lose(self, run_ids: list[str]) -> None:
        """These runs' leases are gone: drop what of them is pending, and refuse anything more."""
        self._lost.update(run_ids)
        _drop_runs(self._pending, set(run_ids))
        for run_id in run_ids:
            self.recent.release(run_id)

    def event(self, thread_id: str, run_id: str, type_: str, data: str) -> Event:
        if run_id in self._lost:
            raise LeaseLost([run_id])
        if (failure := self._failures.get(thread_id)) is not None:
            raise JournalError(f"an earlier write of thread {thread_id} failed: {failure}") from failure
        seq = self._next_seq[thread_id]
        self._next_seq[thread_id] = seq + 1
        event = Event(thread_id, seq, run_id, type_, data)
        self._pending.events.append(event)
        self._wake()
        return event

    def feed(self, thread_id: str, run_id: str | None, data: str, *, user_id: str | None = None) -> None:
        """A feed notice, in the feed of the thread's user (or of `user_id`, for a deleted thread)."""
        self._pending.feed.append(FeedNotice(thread_id, run_id, data, user_id))
        self._wake()

    def update_run(self, run_id: str, **fields: Any) -> None:
        if run_id in self._lost:
            raise LeaseLost([run_id])
        self._pending.run_updates.append((run_id, fields))
        self._wake()

    def run_status(
        self,
        run: Run,
        status: RunStatus,
        *,
        error: str | None = None,
        notice: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """A run's new status with any other fields, and the feed notice that announces it.

        A terminal status also records `finished_at` and `error`, and clears what only an active run has.
        A run that is not running holds no lease.
        """
        if status in TERMINAL_STATUSES:
            fields.update(finished_at=time.time(), error=error, pending_approvals=None, inflight_response=None)
        if status != "running":
            fields.update(worker=None, lease_expires_at=None, cancel_requested=None)
        self.update_run(run.id, status=status, **fields)
        body = {"status": status, **({"error": error} if error else {}), **(notice or {})}
        self.feed(run.thread_id, run.id, feed_notice("run.status", run.thread_id, run.id, **body))

    def inbox_applied(self, item_id: str) -> None:
        self._pending.inbox_applied.append((item_id, time.time()))
        self._wake()

    def tool_mark(self, mark: ToolMark) -> None:
        if mark.run_id in self._lost:
            raise LeaseLost([mark.run_id])
        self._pending.tool_marks.append(mark)
        self._wake()

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        if checkpoint.run_id in self._lost:
            raise LeaseLost([checkpoint.run_id])
        self._pending.checkpoints.append(checkpoint)
        self._wake()

    @property
    def congested(self) -> bool:
        """True when a producer should `await commit()` before appending more (backpressure)."""
        return len(self._pending.events) >= self._max_pending

    async def commit(self, run_id: str | None = None, *, refuse_outage: bool = False) -> None:
        """Wait until everything appended so far is durable and published. With `run_id`, raise
        LeaseLost if that run's items were refused because another worker took its lease. With
        `refuse_outage` (a request, whose client waits for an answer), raise StoreUnavailable rather
        than wait out an outage: what was appended is still written once the database is back."""
        if self._pending or self._writing:
            if refuse_outage and self.outage is not None:
                raise self._refusal()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._wake()
            if not refuse_outage:
                await waiter
            else:
                self._impatient.add(waiter)
                try:
                    await waiter
                finally:
                    self._impatient.discard(waiter)
        if run_id is not None and run_id in self._lost:
            raise LeaseLost([run_id])

    async def drained(self) -> None:
        """Wait until what is appended so far has been written, for a producer that appended too much
        (backpressure). Never raises: a write that failed, or a lease lost, is raised by the producer's
        next append or `commit(run_id)`."""
        try:
            await self.commit()
        except JournalError:
            pass

    def _wake(self) -> None:
        if not self._wakeup.is_set():
            self._wakeup.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            # Gather a group for what is left of the interval since the last commit began; so the first
            # event after a quiet spell (a run's start) is written at once. A commit someone waits for goes now.
            loop = asyncio.get_running_loop()
            gather = self._interval * (BUSY_FACTOR if self._busy else 1) - (loop.time() - self._last_write)
            if gather > 0 and not self.congested and not self._waiters:
                await asyncio.sleep(gather)
            self._last_write = loop.time()
            self._wakeup.clear()
            batch, waiters = self._pending, self._waiters
            self._pending, self._waiters = WriteBatch(), []
            self._busy = len(batch.events) >= BUSY_GROUP
            if not batch:
                _resolve(waiters, None)
                continue
            self._writing = True
            began = time.perf_counter()
            try:
                feed = await self._write(batch)
            except Exception as exc:
                threads = {e.thread_id for e in batch.events} | {c.thread_id for c in batch.checkpoints}
                log.error("group commit of %d events failed: %s", len(batch.events), exc, exc_info=exc)
                for thread_id in threads:
                    self._failures[thread_id] = exc
                    self._next_seq.pop(thread_id, None)
                    self.recent.forget(thread_id)
                self._drop_pending(threads)
                _resolve(waiters, JournalError(f"write failed: {exc}"))
                continue
            finally:
                self._writing = False
            self._metrics.commit_seconds.observe(time.perf_counter() - began)
            self._metrics.commit_events.observe(len(batch.events))
            self._metrics.events_written.inc(len(batch.events))
            if batch.checkpoints:
                crash_point("checkpoint_committed")
            self._publish(batch, feed)
            _resolve(waiters, None)

    async def _write(self, batch: WriteBatch) -> list[FeedItem]:
        """Write a batch: without the items of runs whose lease was lost, and waiting out an outage."""
        outage_began: float | None = None
        while True:
            runs = _runs_in(batch)
            if runs & self._lost:
                _drop_runs(batch, self._lost)  # lost while this batch waited: the store would refuse it
            batch.leases = {run_id: lease for run_id in runs if (lease := self._leases.get(run_id))}
            try:
                if outage_began is not None and await self._already_written(batch):
                    log.info("the commit that the outage interrupted had gone through; not writing it again")
                    return []  # its feed items are stored; followers find them in the log
                feed = await self._store.write(batch)
            except LeaseLost as lost:
                log.warning(
                    "run(s) %s: another worker holds the lease now; this worker writes nothing more of them",
                    ", ".join(lost.run_ids),
                )
                _drop_runs(batch, set(lost.run_ids))
                self.lose(lost.run_ids)  # what they appended meanwhile would be refused just the same
                self._on_lease_lost(lost.run_ids)
                continue
            except StoreConflict as conflict:
                log.info("%s; committing again", conflict)  # rolled back whole: nothing of it was written
                continue
            except StoreUnavailable as unavailable:
                now = time.monotonic()
                self.outage = str(unavailable)
                if outage_began is None:
                    outage_began = now
                    log.warning("the database is unreachable; retrying the commit for up to %.0fs", self._outage_limit)
                    _resolve(list(self._impatient), self._refusal())
                if now - outage_began > self._outage_limit:
                    self.outage = None  # this batch gives up; the next finds out for itself
                    raise
                await asyncio.sleep(min(1.0, 0.05 * 2 ** min(int(now - outage_began), 5)))
                continue
            if outage_began is not None:
                self.outage = None
                log.info("the database is back after %.1fs", time.monotonic() - outage_began)
            return feed

    async def _already_written(self, batch: WriteBatch) -> bool:
        """Whether a commit whose answer the connection lost went through (its first event is stored)."""
        if not batch.events:
            return False
        first = batch.events[0]
        stored = await self._store.read_events(first.thread_id, first.seq - 1, 1)
        return bool(stored) and stored[0].seq == first.seq and stored[0].data == first.data

    def _refusal(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"the database cannot take writes right now ({self.outage}); what this request changed is written "
            f"once it is back, if that is within {self._outage_limit:.0f}s"
        )

    def _drop_pending(self, threads: set[str]) -> None:
        """Forget what failed threads appended after the failed batch: its sequence numbers follow
        ones that were never written, and the runs that appended it are failing anyway."""
        pending = self._pending
        pending.events = [e for e in pending.events if e.thread_id not in threads]
        pending.checkpoints = [c for c in pending.checkpoints if c.thread_id not in threads]

    def _publish(self, batch: WriteBatch, feed: list[FeedItem]) -> None:
        by_thread: dict[str, list[Event]] = defaultdict(list)
        for event in batch.events:
            by_thread[event.thread_id].append(event)
        for thread_id, events in by_thread.items():
            self.recent.committed(thread_id, events)
            self._bus.publish(thread_channel(thread_id), events)
        if feed:
            self._bus.publish(FEED_CHANNEL, feed)


def _runs_in(batch: WriteBatch) -> set[str]:
    """The runs a batch writes for: their leases are checked when it commits."""
    runs = {e.run_id for e in batch.events} | {m.run_id for m in batch.tool_marks}
    runs |= {run_id for run_id, _ in batch.run_updates}
    runs |= {c.run_id for c in batch.checkpoints if c.run_id is not None}
    return runs


def _drop_runs(batch: WriteBatch, run_ids: set[str]) -> None:
    batch.events = [e for e in batch.events if e.run_id not in run_ids]
    batch.tool_marks = [m for m in batch.tool_marks if m.run_id not in run_ids]
    batch.run_updates = [(r, f) for r, f in batch.run_updates if r not in run_ids]
    batch.checkpoints = [c for c in batch.checkpoints if c.run_id not in run_ids]
    batch.feed = [n for n in batch.feed if n.run_id not in run_ids]


def _resolve(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for waiter in waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
