"""The engine: threads and runs, their lifecycle, and the streams that follow them.

Routes call the engine; the engine calls the store, the journal and the bus.
Every run is an asyncio task owned here: started by `start_run`, cancelled
by `cancel_run` or `stop`, and awaited before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from typing import Any, Literal

from ag_ui.core import RunErrorEvent
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessagesTypeAdapter
from pydantic_ai.models import infer_model
from pydantic_ai.ui.ag_ui import AGUIAdapter

from tether import events
from tether.bus import FEED_CHANNEL, Bus, thread_channel
from tether.config import Settings
from tether.engine import collector
from tether.engine.journal import Journal
from tether.engine.runner import RunExecution, cancel_paused_run
from tether.engine.streams import Follower
from tether.errors import BadRequest, Conflict, NotFound, Unavailable
from tether.events import feed_notice
from tether.store import ACTIVE_STATUSES, TERMINAL_STATUSES, Decision, InboxItem, Run, Store, Thread

log = logging.getLogger("tether.engine")

Multitask = Literal["reject", "enqueue", "steer", "interrupt"]


class Engine:
    def __init__(self, store: Store, bus: Bus, agent: Agent[Any, Any], settings: Settings) -> None:
        self.store = store
        self.bus = bus
        self.agent = agent
        self.settings = settings
        self.journal = Journal(store, bus, settings.commit_interval)
        self._executions: dict[str, tuple[RunExecution, asyncio.Task[None]]] = {}
        self._thread_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._background: set[asyncio.Task[None]] = set()
        """Background work that is not a run: recovery at start-up, starting a thread's next run."""
        self._accepting = False
        self.closing = asyncio.Event()
        """Set when the server begins to shut down: streams end with a comment telling clients to reconnect."""

    async def start(self) -> None:
        """Open the store and start serving; runs left running by a dead process resume in the background."""
        await self.store.open()
        await self.journal.start()
        collector.settle_after_start_up()
        self._accepting = True
        self._track(asyncio.create_task(self._recover(), name="recover"))

    def begin_shutdown(self) -> None:
        """First step of a graceful stop: refuse new runs (503), stop runs at their next step boundary,
        and close every stream (clients reconnect with Last-Event-ID once the server is back)."""
        self._accepting = False
        self.closing.set()
        for runner, _ in self._executions.values():
            runner.stop_at_step_boundary()

    async def stop(self) -> None:
        """Give runs the grace period to reach a step boundary, stop the rest, commit, close the store."""
        self.begin_shutdown()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        tasks = [task for _, task in self._executions.values()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace)
            for task in late:
                task.cancel()
            if late:
                log.warning(
                    "%d run(s) did not reach a step boundary within %.0fs; stopped where they were",
                    len(late),
                    self.settings.shutdown_grace,
                )
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.journal.stop()
        await self.store.close()

    async def _recover(self) -> None:
        """Resume the runs a dead (or stopped) process left running, and start queued ones.

        Runs awaiting approval need nothing: their state is in the store.
        """
        found = await self.store.runs_with_status(("running",))
        if found:
            log.info("%d run(s) were running when the server stopped; resuming them", len(found))
        for run in found:
            async with self._thread_locks[run.thread_id]:
                current = await self.store.get_run(run.id)  # a request may have cancelled it meanwhile
                if current is None or current.status != "running" or run.id in self._executions:
                    continue
                if current.recoveries >= self.settings.max_recoveries:
                    await self._fail_unrecoverable(current)
                else:
                    await self._launch(current, mode="recover")
        queued_threads = {run.thread_id for run in await self.store.runs_with_status(("queued",))}
        for thread_id in queued_threads:
            await self._start_next(thread_id)

    async def _fail_unrecoverable(self, run: Run) -> None:
        reason = (
            f"the server stopped during this run {run.recoveries + 1} times; it was resumed "
            f"{run.recoveries} times (--max-recoveries) and is given up"
        )
        await self.journal.open_thread(run.thread_id)
        self.journal.event(
            run.thread_id, run.id, events.RUN_ERROR, events.encode(_run_error(reason, "too_many_recoveries"))
        )
        self.journal.run_status(run, "failed", error=reason)
        await self.journal.commit()
        log.warning("run %s failed: %s", run.id, reason)

    # threads

    async def create_thread(self, title: str | None = None, metadata: dict[str, Any] | None = None) -> Thread:
        now = time.time()
        thread = Thread(id=_new_id("thr"), title=title, created_at=now, updated_at=now, metadata=metadata or {})
        await self.store.create_thread(thread)
        self.journal.feed(thread.id, None, feed_notice("thread.created", thread.id, title=title))
        await self.journal.commit()
        return thread

    async def get_thread(self, thread_id: str) -> Thread:
        thread = await self.store.get_thread(thread_id)
        if thread is None:
            raise NotFound(f"thread {thread_id!r} not found")
        return thread

    async def list_threads(self, limit: int, before: float | None = None) -> list[Thread]:
        return await self.store.list_threads(limit, before)

    async def rename_thread(self, thread_id: str, title: str | None) -> Thread:
        await self.get_thread(thread_id)
        await self.store.update_thread(thread_id, title=title)
        self.journal.feed(thread_id, None, feed_notice("thread.updated", thread_id, title=title))
        await self.journal.commit()
        return await self.get_thread(thread_id)

    async def delete_thread(self, thread_id: str) -> None:
        """Delete a thread, its runs and its log; an active run is cancelled first."""
        await self.get_thread(thread_id)
        async with self._thread_locks[thread_id]:
            for run in await self.active_runs(thread_id):
                await self._cancel(run, "the thread was deleted")
            await self.journal.commit()
            await self.store.delete_thread(thread_id)
            self.journal.forget_thread(thread_id)
            self.journal.feed(thread_id, None, feed_notice("thread.deleted", thread_id))
            await self.journal.commit()

    async def thread_messages(self, thread_id: str) -> tuple[list[dict[str, Any]], int, int | None]:
        """The thread's stored history as AG-UI messages, its last seq, and the seq the history is
        current to: the last seq if no run was active (so a client can fold the events after it onto
        these messages), else None (a run's partial answer is only in the log)."""
        snapshot = await self.store.thread_snapshot(thread_id)
        messages = []
        if snapshot.checkpoint is not None:
            history = ModelMessagesTypeAdapter.validate_json(snapshot.checkpoint.messages)
            dumped = AGUIAdapter.dump_messages(history)
            messages = [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in dumped]
        return messages, snapshot.last_seq, None if snapshot.run_active else snapshot.last_seq

    # runs

    async def start_run(
        self, thread_id: str, user_input: str, multitask: Multitask = "reject", model: str | None = None
    ) -> Run:
        """Start a run with the user's message; `multitask` says what to do if one is active (invariant 5)."""
        self._check_accepting()
        if model is not None:
            _check_model(model)
        if multitask == "steer":
            run, _ = await self.steer(thread_id, user_input)
            return run
        async with self._thread_locks[thread_id]:
            await self.get_thread(thread_id)
            active = await self.active_runs(thread_id)
            if active and multitask == "reject":
                raise Conflict(
                    f"thread {thread_id!r} already has an active run {active[0].id!r} ({active[0].status}); "
                    "wait for it, cancel it, or send with multitask 'enqueue', 'steer' or 'interrupt'",
                    code="thread_busy",
                )
            if multitask == "interrupt":
                for run in active:
                    if run.status != "queued":
                        await self._cancel(run, "interrupted by a new message", discard_partial=True)
                active = [r for r in active if r.status == "queued"]
            run = await self._create_run(thread_id, user_input, multitask, model)
            if multitask == "interrupt" or not active:
                await self._launch(run)
        return run

    async def _create_run(
        self, thread_id: str, user_input: str, multitask: str, model: str | None, retry_of: Run | None = None
    ) -> Run:
        run = Run(
            id=_new_id("run"),
            thread_id=thread_id,
            status="queued",
            input=user_input,
            multitask=multitask,
            model=model,
            created_at=time.time(),
            retry_of=retry_of.id if retry_of else None,
            base_checkpoint_id=retry_of.base_checkpoint_id if retry_of else None,
        )
        await self.store.create_run(run)
        self.journal.feed(thread_id, run.id, feed_notice("run.created", thread_id, run.id, status="queued"))
        await self.journal.commit()
        return run

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise Unavailable("the server is shutting down; try again in a moment")

    async def steer(self, thread_id: str, user_input: str) -> tuple[Run, str]:
        """Give the active run a message at its next step boundary, or start a run if the thread is idle.

        Returns the run that will carry the message and how: "inbox" (the active run's) or "new_run".
        """
        self._check_accepting()
        async with self._thread_locks[thread_id]:
            await self.get_thread(thread_id)
            active = await self.active_runs(thread_id)
            target = next((r for r in active if r.status != "queued"), active[0] if active else None)
            if target is None:
                run = await self._create_run(thread_id, user_input, "steer", None)
                await self._launch(run)
                return run, "new_run"
            item = InboxItem(id=_new_id("stx"), run_id=target.id, input=user_input, created_at=time.time())
            await self.store.add_to_inbox(item)
            execution = self._executions.get(target.id)
            if execution is not None:
                execution[0].steer(item)
            self.journal.feed(thread_id, target.id, feed_notice("run.steered", thread_id, target.id, steerId=item.id))
            await self.journal.commit()
            return target, "inbox"

    async def retry(self, thread_id: str) -> Run:
        """Re-answer the last user message from the history before it, as a new run."""
        self._check_accepting()
        async with self._thread_locks[thread_id]:
            await self.get_thread(thread_id)
            runs = await self.store.list_runs(thread_id)
            active = [r for r in runs if r.status in ACTIVE_STATUSES]
            if active:
                raise Conflict(
                    f"thread {thread_id!r} has an active run {active[0].id!r}; stop it before retrying",
                    code="thread_busy",
                )
            if not runs:
                raise Conflict(f"thread {thread_id!r} has no user message to retry", code="nothing_to_retry")
            last = runs[-1]
            run = await self._create_run(thread_id, last.input, "reject", last.model, retry_of=last)
            # What the user said while the old answer ran is said again, with the message it steered.
            for item in await self.store.inbox(last.id):
                if item.applied_at is not None:
                    again = InboxItem(id=_new_id("stx"), run_id=run.id, input=item.input, created_at=time.time())
                    await self.store.add_to_inbox(again)
            await self._launch(run)
            return run

    async def decide(self, run_id: str, decisions: dict[str, Decision]) -> Run:
        """Record approval decisions; when every pending call is decided, the run resumes (invariant 6)."""
        run = await self.get_run(run_id)
        async with self._thread_locks[run.thread_id]:
            run = await self.get_run(run_id)
            if run.status != "awaiting_approval":
                raise Conflict(
                    f"run {run_id!r} is not awaiting approval (it is {run.status})", code="not_awaiting_approval"
                )
            pending = {c.tool_call_id: c for c in run.pending_approvals or []}
            unknown = sorted(set(decisions) - set(pending))
            if unknown:
                raise BadRequest(f"not pending on run {run_id!r}: {', '.join(unknown)}", code="unknown_tool_call")
            before = run.decisions or {}
            again = sorted(set(decisions) & set(before))
            if again:
                raise Conflict(f"already decided: {', '.join(again)}", code="already_decided")
            after = {**before, **decisions}
            complete = set(after) == set(pending)
            if not await self.store.decide(run_id, before, after, complete):
                raise Conflict(f"run {run_id!r} was decided by someone else meanwhile", code="already_decided")
            remembered = {pending[i].tool_name for i, d in decisions.items() if d.approved and d.remember}
            if remembered:
                thread = await self.get_thread(run.thread_id)
                await self.store.allow_tools(run.thread_id, sorted(set(thread.allowed_tools) | remembered))
            self.journal.feed(
                run.thread_id,
                run_id,
                feed_notice("run.decided", run.thread_id, run_id, decided=sorted(decisions), complete=complete),
            )
            await self.journal.commit()
            run = await self.get_run(run_id)
            if complete:
                await self._launch(run, mode="resume")
            return run

    async def get_run(self, run_id: str) -> Run:
        run = await self.store.get_run(run_id)
        if run is None:
            raise NotFound(f"run {run_id!r} not found")
        return run

    async def list_runs(self, thread_id: str) -> list[Run]:
        await self.get_thread(thread_id)
        return await self.store.list_runs(thread_id)

    async def active_runs(self, thread_id: str) -> list[Run]:
        return [r for r in await self.store.list_runs(thread_id) if r.status in ACTIVE_STATUSES]

    async def active_runs_everywhere(self) -> list[Run]:
        return await self.store.runs_with_status(ACTIVE_STATUSES)

    async def cancel_run(self, run_id: str) -> Run:
        run = await self.get_run(run_id)
        async with self._thread_locks[run.thread_id]:
            run = await self.get_run(run_id)
            if run.status in TERMINAL_STATUSES:
                raise Conflict(f"run {run_id!r} has already ended ({run.status})", code="run_ended")
            await self._cancel(run, "cancelled by request")
        return await self.get_run(run_id)

    async def _cancel(self, run: Run, reason: str, *, discard_partial: bool = False) -> None:
        execution = self._executions.get(run.id)
        if execution is not None:
            runner, task = execution
            runner.cancel(reason, discard_partial=discard_partial)
            await asyncio.shield(task)
            return
        if run.status == "awaiting_approval":
            await cancel_paused_run(run, self.journal, self.store, reason)
            return
        self.journal.run_status(run, "cancelled", error=reason)
        await self.journal.commit()

    async def _launch(self, run: Run, mode: Literal["start", "resume", "recover"] = "start") -> None:
        await self.journal.open_thread(run.thread_id)
        thread = await self.get_thread(run.thread_id)
        runner = RunExecution(
            run,
            self.agent,
            self.journal,
            self.store,
            model=self.settings.model,
            allowed_tools=set(thread.allowed_tools),
            mode=mode,
            checkpoints=self.settings.checkpoints,
            request_limit=self.settings.request_limit,
        )
        task = asyncio.create_task(runner.execute(), name=f"run-{run.id}")
        self._executions[run.id] = (runner, task)
        task.add_done_callback(lambda done: self._run_done(run, done))

    def _run_done(self, run: Run, task: asyncio.Task[None]) -> None:
        # A paused run may already be resuming in a new execution: forget only this one.
        if run.id in self._executions and self._executions[run.id][1] is task:
            del self._executions[run.id]
        if self._accepting:
            self._track(asyncio.create_task(self._start_next(run.thread_id, run), name=f"next-{run.thread_id}"))

    def _track(self, task: asyncio.Task[None]) -> None:
        """Own a background task: stop() cancels and awaits it; its failure is logged, never lost."""
        self._background.add(task)
        task.add_done_callback(self._untrack)

    def _untrack(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def _start_next(self, thread_id: str, finished: Run | None = None) -> None:
        """Start the oldest queued run of a thread, if nothing else is active there.

        Steering messages that arrived too late for the run that just finished become a new run.
        """
        async with self._thread_locks[thread_id]:
            if finished is not None:
                await self._carry_over_steers(finished)
            runs = await self.active_runs(thread_id)
            if any(r.status != "queued" or r.id in self._executions for r in runs):
                return
            queued = [r for r in runs if r.status == "queued"]
            if queued and self._accepting:
                await self._launch(queued[0])

    async def _carry_over_steers(self, finished: Run) -> None:
        run = await self.store.get_run(finished.id)
        if run is None or run.status == "awaiting_approval":
            return  # a paused run applies its inbox when it resumes
        late = [item for item in await self.store.inbox(run.id) if item.applied_at is None]
        if not late or run.status != "completed":
            return  # a cancelled or failed run's late steering stays unapplied in its inbox
        for item in late:
            self.journal.inbox_applied(item.id)
        follow_up = await self._create_run(run.thread_id, "\n\n".join(i.input for i in late), "steer", run.model)
        log.info("steering for run %s arrived after its last step; it becomes run %s", run.id, follow_up.id)

    # streams

    async def follow_thread(self, thread_id: str, after: int) -> Follower:
        await self.get_thread(thread_id)
        await self._check_after(after, await self.store.last_seq(thread_id))
        return Follower(
            bus=self.bus,
            channel=thread_channel(thread_id),
            read=lambda after_, limit: self.store.read_events(thread_id, after_, limit),
            gone=lambda: self._is_gone(thread_id),
            after=after,
            buffer=self.settings.stream_buffer,
            keepalive=self.settings.keepalive_seconds,
            closing=self.closing,
        )

    async def follow_run(self, run_id: str, after: int) -> Follower:
        run = await self.get_run(run_id)
        await self._check_after(after, await self.store.last_seq(run.thread_id))
        return Follower(
            bus=self.bus,
            channel=thread_channel(run.thread_id),
            read=lambda after_, limit: self.store.read_events(run.thread_id, after_, limit, run_id=run_id),
            after=after,
            buffer=self.settings.stream_buffer,
            keepalive=self.settings.keepalive_seconds,
            closing=self.closing,
            keep=lambda event: event.run_id == run_id,
            gone=lambda: self._is_gone(run.thread_id),
            ends=lambda event: event.run_id == run_id and _ends_run(event),
        )

    async def follow_feed(self, after: int) -> Follower:
        await self._check_after(after, await self.store.last_feed_seq())
        return Follower(
            bus=self.bus,
            channel=FEED_CHANNEL,
            read=self.store.read_feed,
            after=after,
            buffer=self.settings.stream_buffer,
            keepalive=self.settings.keepalive_seconds,
            closing=self.closing,
        )

    async def last_feed_seq(self) -> int:
        return await self.store.last_feed_seq()

    async def _is_gone(self, thread_id: str) -> bool:
        return await self.store.get_thread(thread_id) is None

    @staticmethod
    async def _check_after(after: int, last: int) -> None:
        if after > last:
            raise BadRequest(
                f"Last-Event-ID {after} is ahead of the last event ({last}); resume from an id you received",
                code="invalid_last_event_id",
            )


def _ends_run(event: events.Event) -> bool:
    """A run's stream ends at RUN_ERROR, or RUN_FINISHED that is not a pause for approval."""
    if event.type == events.RUN_ERROR:
        return True
    return event.type == events.RUN_FINISHED and '"type":"interrupt"' not in event.data


def _run_error(message: str, code: str) -> RunErrorEvent:
    return RunErrorEvent(message=message, code=code, timestamp=int(time.time() * 1000))


def _check_model(model: str) -> None:
    try:
        infer_model(model)
    except Exception as exc:
        raise BadRequest(f"model {model!r} is not available: {exc}", code="invalid_model") from exc


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"
