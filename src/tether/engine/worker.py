"""The runs this worker executes: claimed from the store's queue under a lease, renewed, handed over.

Any worker may execute any run. A run needs a worker when it is queued and its
turn has come, when every approval it waits for is decided, when its worker
stopped at a step boundary (a deploy), or when its worker's lease lapsed (the
worker died, froze or lost the database). The claim loop takes such runs, up
to `--max-runs` at once; the store makes sure no two workers take the same
one. The lease loop renews the leases every third of `--lease`, and learns
there of cancels asked for through other workers. A run whose lease was lost
is abandoned at once: the store would refuse anything more it wrote.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ag_ui.core import RunErrorEvent
from opentelemetry.trace import NoOpTracer, Tracer

from tether import events
from tether.agents import Agents
from tether.bus import Bus
from tether.config import Settings
from tether.engine.journal import Journal
from tether.engine.runner import RunExecution, cancel_paused_run
from tether.metrics import Metrics
from tether.store import Claim, InboxItem, Lease, Run, Store
from tether.store.db import StoreUnavailable

log = logging.getLogger("tether.worker")


class Worker:
    def __init__(
        self,
        worker_id: str,
        store: Store,
        journal: Journal,
        bus: Bus,
        agents: Agents,
        settings: Settings,
        after_run: Callable[[Run], Awaitable[None]],
        *,
        named_users: bool = False,
        metrics: Metrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.id = worker_id
        self._store = store
        self._journal = journal
        self._bus = bus
        self._agents = agents
        self._named_users = named_users
        self._metrics = metrics or Metrics()
        self._tracer = tracer or NoOpTracer()
        self._settings = settings
        self._after_run = after_run
        """Called once a run's execution has ended (the engine carries late steering over)."""
        self._executions: dict[str, tuple[RunExecution, asyncio.Task[None], Lease]] = {}
        self._wakeup = asyncio.Event()
        self._claiming = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._claimer: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._unreachable_since: float | None = None

    @property
    def poll_interval(self) -> float:
        """How often the queue is looked at without being woken: a lapsed lease is noticed this late."""
        return min(1.0, self._settings.lease / 4)

    @property
    def executing(self) -> int:
        return len(self._executions)

    @property
    def has_capacity(self) -> bool:
        return self._claiming and len(self._executions) < self._settings.max_runs

    async def start(self) -> None:
        if self._store.exclusive:
            # This process holds the database alone: whoever held leases before it is gone.
            await self._store.expire_leases(self.id)
        self._claiming = True
        self._claimer = asyncio.create_task(self._claim_loop(), name="claim")
        self._renewer = asyncio.create_task(self._lease_loop(), name="leases")

    def wake(self) -> None:
        """Look at the queue now (a run was queued, decided or released)."""
        self._wakeup.set()

    def execution(self, run_id: str) -> RunExecution | None:
        found = self._executions.get(run_id)
        return found[0] if found is not None else None

    async def finished(self, run_id: str) -> None:
        """Wait until this worker's execution of the run (if any) has ended."""
        found = self._executions.get(run_id)
        if found is not None:
            await asyncio.shield(found[1])

    def cancel(self, run_id: str, reason: str, discards: bool) -> bool:
        """Cancel the run if this worker executes it; False if it does not."""
        runner = self.execution(run_id)
        if runner is None:
            return False
        runner.cancel(reason, discard_partial=discards)
        return True

    def steer(self, item: InboxItem) -> bool:
        runner = self.execution(item.run_id)
        if runner is None:
            return False
        runner.steer(item)
        return True

    def lose(self, run_ids: list[str]) -> None:
        """Another worker holds these runs' leases now: stop executing them, writing nothing more."""
        self._journal.lose(run_ids)
        for run_id in run_ids:
            found = self._executions.get(run_id)
            if found is not None:
                log.warning("run %s: lease lost to another worker; abandoning it here", run_id)
                found[1].cancel()

    def begin_shutdown(self) -> None:
        """Claim nothing more, and stop every run at its next step boundary (it is handed over then)."""
        self._claiming = False
        for runner, _, _ in self._executions.values():
            runner.stop_at_step_boundary()

    async def stop(self, grace: float) -> None:
        """Give runs `grace` seconds to reach a step boundary; hand over the rest where they are."""
        self.begin_shutdown()
        await _cancelled(self._claimer)
        try:
            await self._hand_over(grace)
        finally:
            await _cancelled(self._renewer)  # renewed until the last run is handed over
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _hand_over(self, grace: float) -> None:
        executions = dict(self._executions)
        tasks = [task for _, task, _ in executions.values()]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        late_runs = [(runner, lease) for runner, task, lease in executions.values() if task in late]
        if late_runs:
            log.warning(
                "%d run(s) did not reach a step boundary within %.0fs; handed over where they were",
                len(late_runs),
                grace,
            )
            for runner, lease in late_runs:
                if not self._journal.lost(lease.run_id):  # a lost one is another worker's already
                    self._journal.hold(lease, runner.run.thread_id)
                    self._journal.update_run(lease.run_id, worker=None, lease_expires_at=None, released="stopped")
            try:
                await self._journal.commit()
            except Exception:
                log.exception("could not hand over %d run(s); their leases lapse instead", len(late_runs))
            for _, lease in late_runs:
                self._journal.release(lease.run_id)
        self._bus.send_control({"op": "wake"})

    # claiming

    async def _claim_loop(self) -> None:
        while self._claiming:
            try:
                await asyncio.wait_for(self._wakeup.wait(), self.poll_interval)
            except TimeoutError:
                pass
            self._wakeup.clear()
            try:
                await self._claim()
            except Exception:
                log.exception("claiming runs failed; trying again")  # a dead loop would claim nothing, ever

    async def _claim(self) -> None:
        free = self._settings.max_runs - len(self._executions)
        if self._claiming and free > 0:
            try:
                claims = await self._store.claim_runs(self.id, self._settings.lease, free)
            except StoreUnavailable as exc:
                self._unreachable(exc)
                return
            self._reachable()
            for claim in claims:
                try:
                    await self._begin(claim)
                except Exception:
                    log.exception("run %s could not be started; its lease lapses and it is tried again", claim.run.id)
            if len(claims) == free:
                self._wakeup.set()  # there may be more: look again once some finish

    async def _begin(self, claim: Claim) -> None:
        run, settings = claim.run, self._settings
        if run.id in self._executions:
            # This worker's own lease on it lapsed (its loop was held up too long): the execution it
            # still has is fenced off; end it before the new one starts.
            self.lose([run.id])
            await asyncio.gather(self._executions[run.id][1], return_exceptions=True)
        lease = Lease(run.id, self.id, run.lease_epoch)
        self._journal.hold(lease, run.thread_id)
        self._journal.forget_thread(run.thread_id)  # the last writer may have been another worker
        if claim.mode == "takeover":
            self._metrics.recoveries.inc()
            log.info("run %s: taken over (worker %s stopped renewing its lease)", run.id, claim.previous_worker or "?")
        if claim.mode == "takeover" and run.recoveries >= settings.max_recoveries:
            await self._journal.open_thread(run.thread_id)
            await self._fail_unrecoverable(run)
            self._journal.release(run.id)
            return
        # Nothing is awaited from the claim to here: a claimed run is among the leases renewed at once,
        # however many runs one claim took (its execution reads what it needs itself).
        runner = RunExecution(
            run,
            self._agents,
            self._journal,
            self._store,
            model=settings.model,
            named_users=self._named_users,
            tracer=self._tracer,
            mode="start" if claim.mode == "start" else "resume" if claim.mode == "resume" else "recover",
            checkpoints=settings.checkpoints,
            request_limit=settings.request_limit,
            counts_as_recovery=claim.mode == "takeover",
        )
        if run.cancel_requested is not None:
            runner.cancel(run.cancel_requested, discard_partial=run.cancel_discards)
        task = asyncio.create_task(runner.execute(), name=f"run-{run.id}")
        self._executions[run.id] = (runner, task, lease)
        task.add_done_callback(lambda done: self._run_done(run, runner, done))

    def _run_done(self, run: Run, runner: RunExecution, task: asyncio.Task[None]) -> None:
        self._metrics.runs_ended.labels("handed_over" if runner.status == "running" else runner.status).inc()
        self._metrics.run_seconds.observe(runner.elapsed)
        found = self._executions.get(run.id)
        if found is not None and found[1] is task:
            del self._executions[run.id]
            self._journal.release(run.id)
        if runner.status == "running" and not self._claiming:
            self._bus.send_control({"op": "wake"})  # handed over: another worker takes it at once
        if runner.status != "abandoned" and self._claiming:
            self._own(self._after_run(run), f"after-{run.id}")
        self.wake()

    async def _fail_unrecoverable(self, run: Run) -> None:
        reason = (
            f"the server stopped during this run {run.recoveries + 1} times; it was resumed "
            f"{run.recoveries} times (--max-recoveries) and is given up"
        )
        error = RunErrorEvent(message=reason, code="too_many_recoveries", timestamp=int(time.time() * 1000))
        self._journal.event(run.thread_id, run.id, events.RUN_ERROR, events.encode(error))
        self._journal.run_status(run, "failed", error=reason)
        await self._journal.commit(run.id)
        log.warning("run %s failed: %s", run.id, reason)

    async def end_paused(self, run: Run, reason: str) -> bool:
        """Cancel a run that waits for approval (it holds no lease: take one for the writing).
        False if it is no longer waiting."""
        claimed = await self._store.claim_paused(run.id, self.id, self._settings.lease)
        if claimed is None:
            return False
        self._journal.hold(Lease(run.id, self.id, claimed.lease_epoch), run.thread_id)
        try:
            self._journal.forget_thread(run.thread_id)
            await self._journal.open_thread(run.thread_id)
            await cancel_paused_run(claimed, self._journal, self._store, reason)
        finally:
            self._journal.release(run.id)
        return True

    # leases

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.lease / 3)
            try:
                await self._renew()
            except Exception:
                log.exception("renewing leases failed; trying again")  # a dead loop would lose every lease

    async def _renew(self) -> None:
        leases = [lease for _, _, lease in self._executions.values()]
        if leases:
            try:
                held = await self._store.renew_leases(leases, self._settings.lease)
            except StoreUnavailable as exc:
                self._unreachable(exc)
                return
            self._reachable()
            self.lose([lease.run_id for lease in leases if lease.run_id not in held])
            for run_id, asked in held.items():
                runner = self.execution(run_id)
                if runner is None:
                    continue
                if asked.cancel is not None and not runner.cancelling:
                    reason, discards = asked.cancel
                    runner.cancel(reason, discard_partial=discards)
                if asked.steered:  # the bus may not have brought it: the runner ignores what it has
                    for item in await self._store.inbox(run_id):
                        if item.applied_at is None:
                            runner.steer(item)

    def _unreachable(self, exc: Exception) -> None:
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()
            log.warning("%s; runs keep their place and resume when it is back", exc)

    def _reachable(self) -> None:
        if self._unreachable_since is not None:
            log.info("the database is reachable again after %.1fs", time.monotonic() - self._unreachable_since)
            self._unreachable_since = None

    def _own(self, work: Awaitable[None], name: str) -> None:
        """Own a background task: stop() cancels and awaits it; its failure is logged, never lost."""
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._disown)

    def _disown(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())


async def _cancelled(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
