"""The engine: threads and runs, their lifecycle, and the streams that follow them.

Routes call the engine; the engine calls the store, the journal and the bus.
A request never executes a run itself: it records it (queued, decided,
cancel requested) in the store, whose transactions decide races between
workers, and wakes a worker; this process's `Worker` executes the runs it
claims, and any other worker may claim the rest. Every run is an asyncio task
owned by the worker, awaited (or handed over) before the process exits.

Every method a route calls takes the caller's user id: a thread, and its runs
and streams, exist only for the user who created it (anyone else gets 404).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Literal

from pydantic_ai.models import infer_model

from tether import attachments, events
from tether.agents import Agents
from tether.bus import FEED_CHANNEL, Bus, thread_channel
from tether.config import Settings, new_worker_id
from tether.engine import branch, collector
from tether.engine.agui import messages_snapshot
from tether.engine.folds import LogFolds
from tether.engine.journal import Journal
from tether.engine.recent import Tail
from tether.engine.runner import dump_history, load_history
from tether.engine.streams import REPLAY_PAGE, Follower
from tether.engine.worker import Worker
from tether.errors import BadRequest, Conflict, Gone, NotFound, TooLarge, TooMany, Unavailable, Unprocessable
from tether.events import Event, feed_notice
from tether.metrics import Metrics
from tether.store import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Attachment,
    Checkpoint,
    ClientMessage,
    ClientRun,
    Decision,
    InboxItem,
    Run,
    Store,
    Thread,
)
from tether.tracing import tracer_of
from tether.transcript import with_log_ids

log = logging.getLogger("tether.engine")

Multitask = Literal["reject", "enqueue", "steer", "interrupt"]


class Engine:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        agents: Agents,
        settings: Settings,
        *,
        named_users: bool = False,
        tracer_provider: Any | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.agents = agents
        self.settings = settings
        self.worker_id = settings.worker_id or new_worker_id()
        self.metrics = Metrics()
        self._tracer_provider = tracer_provider
        self.journal = Journal(
            store,
            bus,
            settings.commit_interval,
            outage_limit=settings.outage_limit,
            on_lease_lost=self._lease_lost,
            metrics=self.metrics,
        )
        self.worker = Worker(
            self.worker_id,
            store,
            self.journal,
            bus,
            agents,
            settings,
            self._after_run,
            named_users=named_users,
            metrics=self.metrics,
            tracer=tracer_of(tracer_provider),
        )
        self._housekeeping: asyncio.Task[None] | None = None
        self._streams: Counter[str] = Counter()
        """Open streams per user, on this worker."""
        self._folds = LogFolds(lambda thread_id, after, upto: self._read_log(thread_id, upto, after))
        self._thread_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        """Serialise one process's requests per thread; across workers the store's transactions decide."""
        self._accepting = False
        self.closing = asyncio.Event()
        """Set when the server begins to shut down: streams end with a comment telling clients to reconnect."""

    async def start(self) -> None:
        """Open the store and start serving; this worker then claims the runs that need one (queued
        runs, and runs a dead or stopped worker left running) in the background."""
        await self.store.open()
        await self.bus.start()
        self.bus.on_control(self._on_control)
        await self.journal.start()
        await self.agents.start()
        self._housekeeping = asyncio.create_task(self._trim_feed_forever(), name="trim-feed")
        collector.settle_after_start_up()
        self._accepting = True
        await self.worker.start()
        log.info("worker %s serving on %s, %s", self.worker_id, self.store.engine, type(self.bus).__name__)

    def begin_shutdown(self) -> None:
        """First step of a graceful stop: refuse new runs (503), stop runs at their next step boundary
        (they are handed over to another worker, or resume on the next start), and close every stream
        (clients reconnect with Last-Event-ID)."""
        self._accepting = False
        self.closing.set()
        self.worker.begin_shutdown()

    async def stop(self) -> None:
        """Give runs the grace period to reach a step boundary, hand them over, commit, close."""
        self.begin_shutdown()
        await self.worker.stop(self.settings.shutdown_grace)
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        await self.agents.stop()
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()  # exports what is still buffered
        await self.journal.stop()
        await self.bus.close()
        await self.store.close()

    def _lease_lost(self, run_ids: list[str]) -> None:
        self.worker.lose(run_ids)

    def _on_control(self, message: dict[str, Any]) -> None:
        """A message from another worker."""
        op = message.get("op")
        if op == "wake":
            self.worker.wake()
        elif op == "cancel":
            self.worker.cancel(message["run"], message["reason"], bool(message.get("discards")))
        elif op == "steer":
            self.worker.steer(InboxItem(**message["item"]))

    def _wake_workers(self) -> None:
        """A run needs a worker: this one if it has room, else the others."""
        self.worker.wake()
        if not self.worker.has_capacity:
            self.bus.send_control({"op": "wake"})

    # threads

    async def create_thread(
        self, user: str, title: str | None = None, metadata: dict[str, Any] | None = None, agent: str | None = None
    ) -> Thread:
        self._check_accepting()
        now = time.time()
        thread = Thread(
            id=_new_id("thr"),
            title=title,
            created_at=now,
            updated_at=now,
            metadata=metadata or {},
            user_id=user,
            agent=self.agents.resolve(agent),
        )
        await self.store.create_thread(thread)
        self.journal.feed(thread.id, None, feed_notice("thread.created", thread.id, title=title, agent=thread.agent))
        await self.journal.commit(refuse_outage=True)
        return thread

    async def get_thread(self, thread_id: str, user: str) -> Thread:
        """The caller's thread; NotFound if it does not exist or is another user's (who cannot tell which)."""
        thread = await self.store.get_thread(thread_id)
        if thread is None or thread.user_id != user:
            raise NotFound(f"thread {thread_id!r} not found")
        return thread

    async def list_threads(
        self,
        user: str,
        limit: int,
        before: float | None = None,
        *,
        cursor: str | None = None,
        query: str | None = None,
    ) -> tuple[list[Thread], str | None]:
        """A page of the user's threads (most recently updated first), and the cursor of the next page
        (None after the last). `query`: only the threads whose title or one message holds its words."""
        after = _decode_cursor(cursor) if cursor is not None else None
        threads = await self.store.list_threads(user, limit + 1, before, after=after, query=query)
        page = threads[:limit]
        return page, _encode_cursor(page[-1]) if len(threads) > limit else None

    async def rename_thread(self, thread_id: str, user: str, title: str | None) -> Thread:
        self._check_accepting()
        await self.get_thread(thread_id, user)
        await self.store.update_thread(thread_id, title=title)
        self.journal.feed(thread_id, None, feed_notice("thread.updated", thread_id, title=title))
        await self.journal.commit(refuse_outage=True)
        return await self.get_thread(thread_id, user)

    async def delete_thread(self, thread_id: str, user: str) -> None:
        """Delete a thread, its runs and its log; an active run is cancelled first."""
        self._check_accepting()
        await self.get_thread(thread_id, user)
        async with self._thread_locks[thread_id]:
            for run in await self.active_runs(thread_id):
                await self._cancel(run, "the thread was deleted")
            await self.journal.commit(refuse_outage=True)
            await self.store.delete_thread(thread_id)
            self.journal.forget_thread(thread_id)
            self._folds.forget(thread_id)
            self.journal.feed(thread_id, None, feed_notice("thread.deleted", thread_id), user_id=user)
            await self.journal.commit(refuse_outage=True)

    async def thread_messages(self, thread: Thread) -> tuple[list[dict[str, Any]], int, int | None]:
        """The thread's stored history as AG-UI messages, its last seq, and the seq the history is
        current to: the last seq if no run was active (so a client can fold the events after it onto
        these messages), else None (a run's partial answer is only in the log). The messages have the
        ids the thread's stream gave them (see tether.transcript), the same at every call."""
        snapshot = await self.store.thread_snapshot(thread.id)
        messages = []
        if snapshot.checkpoint is not None:
            history = load_history(snapshot.checkpoint)
            refs = await attachments.references(self.store, thread.id, history)
            dumped = attachments.dump_messages(history, refs)
            stored = [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in dumped]
            messages = with_log_ids(stored, await self._folds.messages(thread, snapshot.last_seq))
        return messages, snapshot.last_seq, None if snapshot.run_active else snapshot.last_seq

    async def attachment(self, attachment_id: str, user: str) -> Attachment:
        """An attachment with its bytes, in one of the caller's threads; NotFound otherwise."""
        found = await self.store.attachment(attachment_id, user)
        if found is None:
            raise NotFound(f"attachment {attachment_id!r} not found")
        return found

    async def fork(self, thread_id: str, user: str, before_message_id: str, title: str | None = None) -> Thread:
        """A new thread, the caller's, holding this thread's history as it was just before one of its
        user messages (named by the id its stream gave it); this thread is left as it is. The new
        thread's log begins with a MESSAGES_SNAPSHOT of that history. It keeps the parent's agent and
        metadata, and its title unless given another; it names its parent (`parent_thread_id`)."""
        self._check_accepting()
        parent = await self.get_thread(thread_id, user)
        snapshot = await self.store.thread_snapshot(thread_id)
        if snapshot.run_active:
            raise Conflict(
                f"thread {thread_id!r} has an active run; fork it once that run has ended", code="thread_busy"
            )
        logged = await self._folds.messages(parent, snapshot.last_seq)
        users = [m["id"] for m in logged if m["role"] == "user"]
        if before_message_id not in users:
            if any(m["id"] == before_message_id for m in logged):
                raise BadRequest(
                    f"message {before_message_id!r} is not a user message: a fork begins before one",
                    code="not_a_user_message",
                )
            raise BadRequest(
                f"thread {thread_id!r} has no message {before_message_id!r} (ids are those of "
                "GET /v1/threads/{tid} and of the thread's stream)",
                code="unknown_message",
            )
        history = branch.history_before(load_history(snapshot.checkpoint), users.index(before_message_id))
        now = time.time()
        thread = Thread(
            id=_new_id("thr"),
            title=parent.title if title is None else title,
            created_at=now,
            updated_at=now,
            metadata=parent.metadata,
            user_id=user,
            agent=parent.agent,
            parent_thread_id=parent.id,
        )
        await self.store.create_thread(thread)
        held = sorted({item.identifier for item in attachments.referenced(history)})
        await self.store.copy_attachments(parent.id, thread.id, held)
        await self.journal.open_thread(thread.id)
        self.journal.checkpoint(Checkpoint(thread.id, None, dump_history(history), now, kind="fork"))
        event = messages_snapshot(history, await attachments.references(self.store, thread.id, history))
        self.journal.event(thread.id, events.NO_RUN, events.type_name(event), events.encode(event))
        notice = feed_notice(
            "thread.created", thread.id, title=thread.title, agent=thread.agent, parentThreadId=parent.id
        )
        self.journal.feed(thread.id, None, notice)
        await self.journal.commit(refuse_outage=True)
        return thread

    # runs

    async def start_run(
        self,
        thread_id: str,
        user: str,
        user_input: str | Sequence[Mapping[str, Any]],
        multitask: Multitask = "reject",
        model: str | None = None,
    ) -> Run:
        """Queue a run with the user's message (its text, or its parts: see tether.attachments);
        `multitask` says what to do if one is active (invariant 5). A worker with room (this one, if it
        has) claims it at once."""
        self._check_accepting()
        if model is not None:
            _check_model(model)
        if multitask == "steer":
            run, _ = await self.steer(thread_id, user, user_input)
            return run
        sent = attachments.user_input(thread_id, user_input, self.settings)
        self._check_input(sent.text)
        await self.get_thread(thread_id, user)
        async with self._thread_locks[thread_id]:
            active_runs = await self.active_runs(thread_id)
            queued = sum(r.status == "queued" for r in active_runs)
            if multitask == "enqueue" and queued >= self.settings.max_queued_runs:
                raise TooMany(
                    f"thread {thread_id!r} already has {queued} runs waiting (--max-queued-runs); wait for them "
                    "or cancel some",
                    code="too_many_queued",
                )
            if multitask == "interrupt":
                for active in active_runs:
                    if active.status != "queued":
                        await self._cancel(active, "interrupted by a new message", discard_partial=True)
            run = await self._create_run(
                thread_id,
                sent.text,
                multitask,
                model,
                unless_active=multitask == "reject",
                parts=sent.parts,
                attached=sent.attachments,
            )
        self._wake_workers()
        return run

    async def _create_run(
        self,
        thread_id: str,
        user_input: str,
        multitask: str,
        model: str | None,
        retry_of: Run | None = None,
        *,
        unless_active: bool = False,
        parts: list[dict[str, Any]] | None = None,
        attached: Sequence[Attachment] = (),
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
            parts=parts,
        )
        active = await self.store.create_run(run, unless_active=unless_active, attachments=attached)
        if active is not None:
            raise Conflict(
                f"thread {thread_id!r} already has an active run {active.id!r} ({active.status}); "
                "wait for it, cancel it, or send with multitask 'enqueue', 'steer' or 'interrupt'",
                code="thread_busy",
            )
        self.journal.feed(thread_id, run.id, feed_notice("run.created", thread_id, run.id, status="queued"))
        await self.journal.commit(refuse_outage=True)
        return run

    def _check_input(self, user_input: str) -> None:
        limit = self.settings.max_input_chars
        if len(user_input) > limit:
            raise TooLarge(
                f"the message has {len(user_input)} characters; at most {limit} are taken (--max-input-chars)",
                code="input_too_long",
            )

    def _check_accepting(self) -> None:
        """Refuse a request that would write, at once and before it writes anything, while the server
        shuts down or its commits are failing (they are retried meanwhile: a request must not wait
        that out, nor be half done)."""
        if not self._accepting:
            raise Unavailable("the server is shutting down; try again in a moment")
        if self.journal.outage is not None:
            raise Unavailable(f"the database cannot take writes right now ({self.journal.outage}); try again later")

    async def steer(self, thread_id: str, user: str, user_input: str | Sequence[Mapping[str, Any]]) -> tuple[Run, str]:
        """Give the active run a message at its next step boundary, or start a run if the thread is idle.
        A steering message is text only (its parts, if it is given as parts, text parts).

        Returns the run that will carry the message and how: "inbox" (the active run's) or "new_run".
        """
        self._check_accepting()
        if not isinstance(user_input, str):
            if any(part["type"] != "text" for part in user_input):
                raise Unprocessable(
                    "a steering message (multitask 'steer') is text only: send attachments with multitask "
                    "'enqueue' or 'interrupt', or once the thread is idle",
                    code="invalid_request",
                )
            user_input = attachments.text_of(user_input)
        self._check_input(user_input)
        await self.get_thread(thread_id, user)
        async with self._thread_locks[thread_id]:
            for _ in range(5):  # the active run may end meanwhile: then look again
                active = await self.active_runs(thread_id)
                target = next((r for r in active if r.status != "queued"), active[0] if active else None)
                if target is None:
                    try:
                        run = await self._create_run(thread_id, user_input, "steer", None, unless_active=True)
                    except Conflict:
                        continue  # a run became active meanwhile: steer that one
                    self._wake_workers()
                    return run, "new_run"
                item = InboxItem(id=_new_id("stx"), run_id=target.id, input=user_input, created_at=time.time())
                if not await self.store.add_to_inbox(item):
                    continue
                if not self.worker.steer(item):
                    self.bus.send_control({"op": "steer", "item": asdict(item)})
                notice = feed_notice("run.steered", thread_id, target.id, steerId=item.id)
                self.journal.feed(thread_id, target.id, notice)
                await self.journal.commit(refuse_outage=True)
                return target, "inbox"
            raise Conflict(f"thread {thread_id!r} is changing too fast to steer; try again", code="thread_busy")

    async def retry(self, thread_id: str, user: str) -> Run:
        """Re-answer the last user message from the history before it, as a new run."""
        self._check_accepting()
        await self.get_thread(thread_id, user)
        async with self._thread_locks[thread_id]:
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
            run = await self._create_run(
                thread_id, last.input, "reject", last.model, retry_of=last, unless_active=True, parts=last.parts
            )
            # What the user said while the old answer ran is said again, with the message it steered.
            for item in await self.store.inbox(last.id):
                if item.applied_at is not None:
                    again = InboxItem(id=_new_id("stx"), run_id=run.id, input=item.input, created_at=time.time())
                    await self.store.add_to_inbox(again)
        self._wake_workers()
        return run

    async def decide(self, run_id: str, user: str, decisions: dict[str, Decision]) -> Run:
        """Record approval decisions; when every pending call is decided, the run resumes (invariant 6)."""
        self._check_accepting()
        run = await self.get_run(run_id, user)
        async with self._thread_locks[run.thread_id]:
            run = await self._get_run(run_id)
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
            edited = {i: d.args for i, d in decisions.items() if d.approved and d.args is not None}
            if edited:
                thread = await self.get_thread(run.thread_id, user)
                for call_id, args in edited.items():
                    self.agents.check_args(thread.agent, pending[call_id].tool_name, args)
            after = {**before, **decisions}
            complete = set(after) == set(pending)
            if not await self.store.decide(run_id, before, after, complete):
                raise Conflict(f"run {run_id!r} was decided by someone else meanwhile", code="already_decided")
            remembered = {pending[i].tool_name for i, d in decisions.items() if d.approved and d.remember}
            if remembered:
                thread = await self.get_thread(run.thread_id, user)
                await self.store.allow_tools(run.thread_id, sorted(set(thread.allowed_tools) | remembered))
            self.journal.feed(
                run.thread_id,
                run_id,
                feed_notice("run.decided", run.thread_id, run_id, decided=sorted(decisions), complete=complete),
            )
            await self.journal.commit(refuse_outage=True)
            run = await self._get_run(run_id)
        if complete:
            self._wake_workers()
        return run

    async def get_run(self, run_id: str, user: str) -> Run:
        """A run of one of the caller's threads; NotFound otherwise."""
        run = await self.store.get_run(run_id)
        if run is not None:
            thread = await self.store.get_thread(run.thread_id)
            if thread is not None and thread.user_id == user:
                return run
        raise NotFound(f"run {run_id!r} not found")

    async def _get_run(self, run_id: str) -> Run:
        run = await self.store.get_run(run_id)
        if run is None:
            raise NotFound(f"run {run_id!r} not found")
        return run

    async def list_runs(self, thread_id: str, user: str) -> list[Run]:
        await self.get_thread(thread_id, user)
        return await self.store.list_runs(thread_id)

    async def active_runs(self, thread_id: str) -> list[Run]:
        return await self.store.list_runs(thread_id, ACTIVE_STATUSES)

    async def active_runs_of(self, user: str) -> list[Run]:
        """The active runs of every thread of the user's."""
        return await self.store.runs_with_status(ACTIVE_STATUSES, user)

    async def cancel_run(self, run_id: str, user: str) -> Run:
        self._check_accepting()
        run = await self.get_run(run_id, user)
        async with self._thread_locks[run.thread_id]:
            run = await self._get_run(run_id)
            if run.status in TERMINAL_STATUSES:
                raise Conflict(f"run {run_id!r} has already ended ({run.status})", code="run_ended")
            await self._cancel(run, "cancelled by request")
        return await self._get_run(run_id)

    async def _cancel(self, run: Run, reason: str, *, discard_partial: bool = False) -> None:
        """Cancel a run wherever it is, and wait (up to a lease and a little) until it has ended."""
        if self.worker.cancel(run.id, reason, discard_partial):
            await self.worker.finished(run.id)
            run = await self._get_run(run.id)
            if run.status in TERMINAL_STATUSES:
                return
            # Its execution here ended as the cancel came, the run paused for approval (or stopped for
            # a shutdown) instead: it is cancelled where it is now.
        if run.status == "queued" and await self.store.cancel_queued(run.id, reason):
            self.journal.feed(
                run.thread_id,
                run.id,
                feed_notice("run.status", run.thread_id, run.id, status="cancelled", error=reason),
            )
            await self.journal.commit(refuse_outage=True)
            return
        if run.status == "awaiting_approval" and await self.worker.end_paused(run, reason):
            return
        # Another worker executes it (or will: its lease lapsed, or it waits to be resumed): ask it, durably.
        await self.store.request_cancel(run.id, reason, discard_partial)
        self.bus.send_control({"op": "cancel", "run": run.id, "reason": reason, "discards": discard_partial})
        self._wake_workers()
        deadline = time.monotonic() + self.settings.lease + 5
        while time.monotonic() < deadline:
            if self.worker.cancel(run.id, reason, discard_partial):  # this worker claimed it meanwhile
                await self.worker.finished(run.id)
            current = await self.store.get_run(run.id)
            if current is None or current.status in TERMINAL_STATUSES:
                return
            if current.status == "awaiting_approval" and await self.worker.end_paused(current, reason):
                return  # it paused meanwhile, where no worker would ever see the request
            await asyncio.sleep(0.05)
        log.warning("run %s: cancel requested, but it has not ended yet; its worker ends it", run.id)

    async def _after_run(self, finished: Run) -> None:
        """Steering messages that arrived too late for the run that just ended become a new run."""
        run = await self.store.get_run(finished.id)
        if run is None or run.status != "completed":
            return  # a paused run applies its inbox when it resumes; a cancelled or failed one keeps it unapplied
        late = [item for item in await self.store.inbox(run.id) if item.applied_at is None]
        if not late:
            return
        for item in late:
            self.journal.inbox_applied(item.id)
        follow_up = await self._create_run(run.thread_id, "\n\n".join(i.input for i in late), "steer", run.model)
        log.info("steering for run %s arrived after its last step; it becomes run %s", run.id, follow_up.id)
        self._wake_workers()

    # streams

    # A stream of a thread whose run this worker holds is answered from the thread's tail in memory
    # where it can be (engine/recent.py), so that a reconnect beside a busy run waits for no read: who
    # the thread's owner is, that the resume point is not ahead of the log, the first page, and that
    # the thread (or run) is not over. Anyone else is checked in the store, as before.

    async def follow_thread(self, thread_id: str, user: str, after: int) -> Follower:
        tail = self.journal.recent.tail(thread_id)
        if tail is None or tail.owner != user:
            await self.get_thread(thread_id, user)
            if tail is not None:
                tail.owner = user
        await self._check_resume_point(after, thread_id, tail)
        return self._follower(
            user,
            after,
            channel=thread_channel(thread_id),
            read=lambda after_, limit: self._read_events(thread_id, after_, limit),
            over=lambda: self._is_gone(thread_id),
        )

    async def follow_run(self, run_id: str, user: str, after: int) -> Follower:
        thread_id = self.journal.recent.thread_of(run_id)
        tail = self.journal.recent.tail(thread_id) if thread_id is not None else None
        if tail is None or tail.owner != user:
            thread_id = (await self.get_run(run_id, user)).thread_id
            tail = self.journal.recent.tail(thread_id)
            if tail is not None:
                tail.owner = user
        await self._check_resume_point(after, thread_id, tail)
        return self._follower(
            user,
            after,
            channel=thread_channel(thread_id),
            read=lambda after_, limit: self._read_events(thread_id, after_, limit, run_id),
            keep=lambda event: event.run_id == run_id,
            over=lambda: self._has_ended(run_id),
            ends=lambda event: event.run_id == run_id and _ends_run(event),
        )

    async def follow_feed(self, user: str, after: int) -> Follower:
        """The feed of the user's threads (its seq is every user's: ids skip other users' items)."""
        await self._check_after(after, await self.store.last_feed_seq())
        if after < await self.store.first_feed_seq() - 1:
            raise Gone(
                f"the feed no longer holds what came after {after} (it keeps the last {self.settings.feed_keep} "
                "notices); connect without Last-Event-ID for a fresh snapshot",
                code="feed_expired",
            )
        return self._follower(
            user, after, channel=FEED_CHANNEL, read=self.store.read_feed, keep=lambda item: item.user_id == user
        )

    def _follower(self, user: str, after: int, **follow: Any) -> Follower:
        """A follower that counts against the user's open streams (--max-streams) until its response ends."""
        if self._streams[user] >= self.settings.max_streams:
            raise TooMany(
                f"you have {self._streams[user]} streams open on this server (--max-streams); close some",
                code="too_many_streams",
            )
        self._streams[user] += 1
        self.metrics.open_streams.inc()

        def closed(follower: Follower) -> None:
            self._streams[user] -= 1
            if not self._streams[user]:
                del self._streams[user]
            self.metrics.open_streams.dec()
            if follower.cut_off.is_set():
                self.metrics.cut_off.inc()

        return Follower(
            bus=self.bus,
            after=after,
            buffer=self.settings.stream_buffer,
            keepalive=self.settings.keepalive_seconds,
            closing=self.closing,
            on_close=closed,
            **follow,
        )

    async def _trim_feed_forever(self, every: float = 60.0) -> None:
        """Keep the feed to its last --feed-keep notices (every worker may: deleting twice is harmless)."""
        while True:
            try:
                removed = await self.store.trim_feed(self.settings.feed_keep)
            except Unavailable as exc:
                log.warning("could not trim the feed: %s", exc)
            else:
                if removed:
                    log.info("trimmed %d old feed notices", removed)
            await asyncio.sleep(every)

    async def metrics_exposition(self) -> bytes:
        """The metrics, with what is a state of the whole deployment (active runs, approvals waiting)
        read from the store now."""
        runs = await self.store.runs_with_status(ACTIVE_STATUSES)
        for status in ACTIVE_STATUSES:
            self.metrics.active_runs.labels(status).set(sum(r.status == status for r in runs))
        paused = [r for r in runs if r.status == "awaiting_approval"]
        self.metrics.approvals_waiting.set(sum(len(r.pending_approvals or []) - len(r.decisions or {}) for r in paused))
        return self.metrics.exposition()

    async def last_feed_seq(self) -> int:
        return await self.store.last_feed_seq()

    async def _read_events(self, thread_id: str, after: int, limit: int, run_id: str | None = None) -> list[Event]:
        recent = self.journal.recent.read(thread_id, after, limit, run_id)
        return recent if recent is not None else await self.store.read_events(thread_id, after, limit, run_id=run_id)

    async def _is_gone(self, thread_id: str) -> bool:
        # A thread this worker writes is not gone: deleting a thread ends its runs first (and, on this
        # worker, forgets its tail).
        return self.journal.recent.tail(thread_id) is None and await self.store.get_thread(thread_id) is None

    async def _has_ended(self, run_id: str) -> bool:
        """Whether a run is over (ended, or deleted with its thread): its stream ends once it has sent
        what is left. A run cancelled while queued has no events at all; one resumed after its last
        event has none left to send."""
        if self.journal.recent.thread_of(run_id) is not None:
            return False  # this worker executes it
        run = await self.store.get_run(run_id)
        return run is None or run.status in TERMINAL_STATUSES

    async def _check_resume_point(self, after: int, thread_id: str, tail: Tail | None) -> None:
        if tail is None or after > tail.last:  # the tail can tell an id is not ahead of the log, never that it is
            await self._check_after(after, await self.store.last_seq(thread_id))

    @staticmethod
    async def _check_after(after: int, last: int) -> None:
        if after > last:  # a conflict with the log as it is now, not malformed: 409, as a later log could hold it
            raise Conflict(
                f"Last-Event-ID {after} is ahead of the last event ({last}); resume from an id you received",
                code="invalid_last_event_id",
            )

    # protocols
    # What the protocol endpoints (AG-UI, the AI SDK) need beside the v1 API. Their clients name threads
    # and runs themselves; the methods that read those ids take a Thread the caller was checked for.

    async def open_thread(self, thread_id: str, user: str) -> Thread:
        """The caller's thread with this id, created now if no thread has it (a protocol client names its
        conversations); NotFound if it is another user's, which is never created anew."""
        thread = await self.store.get_thread(thread_id)
        if thread is None:
            now = time.time()
            created = Thread(
                id=thread_id,
                title=None,
                created_at=now,
                updated_at=now,
                user_id=user,
                agent=self.agents.resolve(None),
            )
            if await self.store.create_thread_if_absent(created):
                notice = feed_notice("thread.created", thread_id, title=None, agent=created.agent)
                self.journal.feed(thread_id, None, notice)
                await self.journal.commit(refuse_outage=True)
                return created
        return await self.get_thread(thread_id, user)  # it exists (perhaps made a moment ago): whose is it?

    async def last_seq(self, thread: Thread) -> int:
        return await self.store.last_seq(thread.id)

    async def thread_log(self, thread: Thread, upto: int) -> list[events.Event]:
        """The thread's events up to seq `upto`, in order: what its clients were sent."""
        return await self._read_log(thread.id, upto)

    async def _read_log(self, thread_id: str, upto: int, after: int = 0) -> list[events.Event]:
        log: list[events.Event] = []
        while True:
            page = await self.store.read_events(thread_id, log[-1].seq if log else after, REPLAY_PAGE)
            for event in page:
                if event.seq > upto:
                    return log
                log.append(event)
            if len(page) < REPLAY_PAGE:
                return log

    async def client_runs(self, thread: Thread) -> list[ClientRun]:
        return await self.store.client_runs(thread.id)

    async def add_client_run(self, thread: Thread, client_run_id: str, run: Run, after_seq: int) -> None:
        """Name a stretch of `run` (its events after `after_seq`) by the client's runId."""
        if not await self.store.add_client_run(ClientRun(thread.id, client_run_id, run.id, after_seq)):
            raise Conflict(f"runId {client_run_id!r} already names a run of this thread", code="run_id_reused")

    async def client_messages(self, thread: Thread) -> list[ClientMessage]:
        return await self.store.client_messages(thread.id)

    async def add_client_messages(self, thread: Thread, run: Run, message_ids: list[str]) -> None:
        """The client's ids of the messages that became `run`'s input; the last one stands for it."""
        last = len(message_ids) - 1
        await self.store.add_client_messages(
            [ClientMessage(thread.id, m, run.id, is_input=i == last) for i, m in enumerate(message_ids)]
        )


def _ends_run(event: events.Event) -> bool:
    """A run's stream ends at RUN_ERROR, or RUN_FINISHED that is not a pause for approval."""
    if event.type == events.RUN_ERROR:
        return True
    return event.type == events.RUN_FINISHED and '"type":"interrupt"' not in event.data


def _check_model(model: str) -> None:
    try:
        infer_model(model)
    except Exception as exc:
        raise BadRequest(f"model {model!r} is not available: {exc}", code="invalid_model") from exc


def _encode_cursor(thread: Thread) -> str:
    """Where the next page of a thread list begins: after this thread (opaque to clients)."""
    return base64.urlsafe_b64encode(json.dumps([thread.updated_at, thread.id]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        updated_at, thread_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(updated_at, int | float) and not isinstance(updated_at, bool) and isinstance(thread_id, str):
            return float(updated_at), thread_id
    except (ValueError, TypeError):
        pass
    raise BadRequest(
        f"cursor {cursor[:40]!r} is not one this server gave (pass a list's next_cursor)", code="invalid_cursor"
    )


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"
