"""One run, executing in the background: pydantic-ai events in, durable AG-UI events out.

An execution covers one stretch of a run: from its start (or from a resume
after approval decisions) to its terminal event: RUN_FINISHED, RUN_ERROR, or
RUN_FINISHED with an interrupt outcome when it pauses for approval.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Literal

from ag_ui.core import BaseEvent, RunErrorEvent, RunFinishedEvent, RunStartedEvent
from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, Tracer
from pydantic_ai import Agent, RunContext
from pydantic_ai.capabilities import Hooks
from pydantic_ai.exceptions import RunCancelled, UserError
from pydantic_ai.messages import (
    EnqueuedMessagesEvent,
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    ToolCallPart,
    ToolReturnPart,
    UserContent,
    UserPromptPart,
    repair_messages,
)
from pydantic_ai.run import AgentRun, AgentRunResult, AgentRunResultEvent
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults, ToolApproved, ToolDenied
from pydantic_ai.usage import UsageLimits
from pydantic_core import to_json

from tether import attachments, events
from tether.agents import Agents, RunInfo, ServedAgent
from tether.engine.agui import (
    APPROVAL_REQUESTED,
    RUN_CANCELLED,
    ServerStopping,
    TetherEventStream,
    custom,
    messages_snapshot,
    now_ms,
)
from tether.engine.journal import Journal
from tether.engine.usage import UsageMeter, usage_event
from tether.faults import crash_point
from tether.logs import about_run
from tether.store import (
    Checkpoint,
    CheckpointKind,
    Decision,
    InboxItem,
    LeaseLost,
    PendingCall,
    Run,
    RunStatus,
    Store,
    Thread,
    ToolMark,
)

log = logging.getLogger("tether.run")


TURN = 0.001
"""Seconds a run may hold the event loop: a model that streams without ever waiting (a fast local
model, the demo agent's /stream) would otherwise keep reconnects, POSTs and /healthz waiting."""
DENIED = "The user denied this tool call"
UNKNOWN_OUTCOME = (
    "The outcome of this tool call is unknown: the server restarted while it was running, so it may or may "
    "not have taken effect. It was not run again."
)


class RunExecution:
    """Drives one run to its next terminal event, and records every step.

    `mode` says where it starts: "start" (a new run), "resume" (after approval decisions), or
    "recover" (a run claimed from another worker: it died or lost its lease, which counts as a
    recovery, or it stopped at a step boundary and handed the run over, which does not).

    The thread's agent answers, with deps made by its factory for this execution. The model is the
    run's own, else the server's `--model`, else the served agent's, else the agent's.
    """

    def __init__(
        self,
        run: Run,
        agents: Agents,
        journal: Journal,
        store: Store,
        *,
        model: str | None,
        named_users: bool = False,
        tracer: Tracer | None = None,
        mode: Literal["start", "resume", "recover"] = "start",
        checkpoints: bool = True,
        request_limit: int | None = None,
        counts_as_recovery: bool = True,
    ) -> None:
        self.run = run
        self._agents = agents
        self._named_users = named_users
        self._tracer = tracer or NoOpTracer()
        """Whether the server has users: else the deps factory is told `user=None`."""
        self._thread: Thread | None = None
        self._journal = journal
        self._store = store
        self._model = run.model or model
        self._allowed_tools: set[str] = set()
        """Tools the user chose to always allow in this thread (read when the execution starts)."""
        self._mode = mode
        self._counts_as_recovery = counts_as_recovery
        self._checkpoints = checkpoints
        self._usage_limits = UsageLimits(request_limit=request_limit)
        self._resume: DeferredToolResults | None = None
        self._agent_run: AgentRun[Any, Any] | None = None
        self._base_history: list[ModelMessage] = []
        self._message: str | list[UserContent] = run.input
        """The run's message as the model takes it (with its attachments, once they are loaded)."""
        self._refs: dict[str, dict[str, Any]] = {}
        """What each attachment of the thread is, for the snapshots (see tether.attachments)."""
        self._final_history: list[ModelMessage] | None = None
        self._pause: tuple[list[PendingCall], dict[str, Decision]] | None = None
        self._cancel_reason: str | None = None
        self._discard_partial = False
        self._batch_response: ModelResponse | None = None  # the response whose tool calls are executing
        self._stopping = False
        self._steers_waiting: list[InboxItem] = []
        self._steers_known: set[str] = set()
        self._steers_sent: dict[str, InboxItem] = {}
        """enqueue_id → steering message handed to pydantic-ai."""
        self._steers_recorded: set[str] = set()
        """Ids of steering messages whose application is recorded (after a checkpoint that holds them)."""
        self._usage = UsageMeter(run)
        self._tool_marks: dict[str, ToolMark] = {}
        self._dumped: dict[int, tuple[ModelMessage, bytes]] = {}
        self._checkpointed: list[bytes] = []
        """The messages of the thread's latest checkpoint: what the next one is stored as a delta of."""
        self.status: RunStatus | Literal["abandoned"] = "running"
        self.elapsed = 0.0
        """How long the execution took, once it has ended."""

    # called by the engine while the run executes

    def cancel(self, reason: str, *, discard_partial: bool = False) -> None:
        """Stop at once. With `discard_partial` (interrupt), the unfinished model response is dropped."""
        self._cancel_reason = reason
        self._discard_partial = discard_partial
        if self._agent_run is not None:
            self._agent_run.cancel()

    @property
    def cancelling(self) -> bool:
        return self._cancel_reason is not None

    def stop_at_step_boundary(self) -> None:
        """For a graceful shutdown: stop before the next model request; another worker (or the next
        start) continues the run from there."""
        self._stopping = True

    def steer(self, item: InboxItem) -> None:
        """Deliver a steering message before the next model request (pydantic-ai's enqueue), once:
        the same message may come both from the bus and from the inbox."""
        if item.id in self._steers_known:
            return
        self._steers_known.add(item.id)
        if self._agent_run is None:
            self._steers_waiting.append(item)
        else:
            self._enqueue(item)

    def _enqueue(self, item: InboxItem) -> None:
        assert self._agent_run is not None
        try:
            enqueue_id = self._agent_run.enqueue(item.input)
        except UserError:
            # The agent run has just ended. The message stays in the inbox: a next agent iteration of
            # this execution takes it, or it becomes the follow-up run (see Engine._after_run).
            self._steers_waiting.append(item)
            return
        if enqueue_id is not None:
            self._steers_sent[enqueue_id] = item

    # the execution

    async def execute(self) -> None:
        run = self.run
        attributes = {"tether.thread_id": run.thread_id, "tether.run_id": run.id, "tether.execution": self._mode}
        span_of_run = self._tracer.start_as_current_span("tether run", attributes=attributes)
        with about_run(run.thread_id, run.id), span_of_run as span:
            await self._execute()
            span.set_attribute("tether.status", self.status)

    async def _execute(self) -> None:
        run, journal = self.run, self._journal
        started = time.monotonic()
        try:
            prompt, snapshot = await self._prepare()
            prompt = await self._load_attachments(prompt)
            log.info("run %s %s on thread %s", run.id, _VERBS[self._mode], run.thread_id)
            crash_point("run_started")
            for item in await self._store.inbox(run.id):
                if item.applied_at is None:
                    self.steer(item)
            stream = TetherEventStream(
                thread_id=run.thread_id,
                run_id=run.id,
                user_input=None if prompt is None else run.input,
                user_attachments=attachments.shown(run.parts),
                refs=self._refs,
                rewound_history=self._base_history if snapshot else None,
                history_after_failure=self._history_after_failure,
                steer_applied=self._steer_applied,
                cancel_reason=lambda: self._cancel_reason or "cancelled",
            )
            agui_events = stream.transform_stream(self._agent_events(prompt), on_complete=self._on_complete)
            # aclosing: if recording fails, the agent run is closed here, in this task, not by the GC.
            async with aclosing(agui_events):
                async for event in agui_events:
                    if event.timestamp is None:  # pydantic-ai's error path closes parts without one
                        event.timestamp = now_ms()
                    self._usage.saw(event)
                    if events.is_terminal(event.type):
                        usage = usage_event(run, self._finish(stream))
                        journal.event(run.thread_id, run.id, events.type_name(usage), events.encode(usage))
                    journal.event(run.thread_id, run.id, events.type_name(event), events.encode(event))
                    if event.type == "TEXT_MESSAGE_CONTENT":
                        crash_point("text_delta")
            if self.status == "running":
                # Stopped at a step boundary: hand the run over to another worker now, not when the lease lapses.
                journal.update_run(run.id, worker=None, lease_expires_at=None, released="stopped")
            await journal.commit(run.id)
            if self.status == "awaiting_approval":
                crash_point("approval_requested")
        except LeaseLost:
            self.status = "abandoned"
            log.warning("run %s: another worker took over its lease; this worker abandons it", run.id)
            return
        except Exception as exc:
            log.exception("run %s crashed inside Tether", run.id)
            await self._record_crash(exc)
        elapsed = self.elapsed = time.monotonic() - started
        if self.status == "failed":
            log.warning("run %s failed after %.2fs: %s", run.id, elapsed, run.error)
        elif self.status == "awaiting_approval":
            log.info("run %s paused for approval after %.2fs", run.id, elapsed)
        elif self.status == "running":
            log.info("run %s stopped at a step boundary after %.2fs; another worker resumes it", run.id, elapsed)
        else:
            log.info("run %s %s in %.2fs", run.id, self.status, elapsed)

    async def _prepare(self) -> tuple[str | None, bool]:
        """Load the history this execution starts from.

        Returns the user prompt to send (None when continuing a run) and whether clients need a
        MESSAGES_SNAPSHOT of that history first (a retry's rewind, or a recovery after a crash).
        """
        run, journal = self.run, self._journal
        await journal.open_thread(run.thread_id)
        thread = self._thread = await self._store.get_thread(run.thread_id)
        self._allowed_tools = set(thread.allowed_tools) if thread is not None else set()
        latest = await self._store.latest_checkpoint(run.thread_id)
        self._checkpointed = latest.messages if latest is not None else []
        if self._mode == "resume":
            self._base_history = self._load_remembered(latest)
            self._resume = deferred_results(run.decisions or {})
            self._tool_marks = {m.tool_call_id: m for m in await self._store.tool_marks(run.id)}
            journal.run_status(run, "running")
            return None, False
        if self._mode == "recover":
            self._tool_marks = {m.tool_call_id: m for m in await self._store.tool_marks(run.id)}
            journal.run_status(run, "running", recoveries=run.recoveries + int(self._counts_as_recovery))
            if latest is not None and latest.run_id == run.id and latest.kind in ("step", "pause"):
                # The run got as far as a checkpoint: continue from it, with the tool batch that was in
                # flight (its calls go through _tool_execute, which knows which of them already ran).
                self._base_history = self._load_remembered(latest)
                if latest.kind == "pause":
                    self._resume = deferred_results(run.decisions or {})
                elif run.inflight_response is not None:
                    self._base_history += _unanswered(self._base_history, run.inflight_response)
                return None, True
            # It died before its first model request: start it again from where it started.
            base = await self._store.get_checkpoint(run.base_checkpoint_id) if run.base_checkpoint_id else None
            self._base_history = self._load_remembered(base)
            return run.input, True
        if run.retry_of is not None:
            base = await self._store.get_checkpoint(run.base_checkpoint_id) if run.base_checkpoint_id else None
            self._base_history = self._load_remembered(base)
            # The rewind is durable no later than the snapshot that announces it.
            self._checkpoint(self._base_history, "start")
            run.started_at = time.time()
            journal.run_status(run, "running", started_at=run.started_at)
            return run.input, True
        self._base_history = self._load_remembered(latest)
        run.started_at = time.time()
        journal.run_status(run, "running", started_at=run.started_at, base_checkpoint_id=latest.id if latest else None)
        return run.input, False

    async def _load_attachments(self, prompt: str | None) -> str | list[UserContent] | None:
        """Give the history's attachments their bytes back (checkpoints keep none), and the run's message
        its own, from the thread's attachments; the prompt to send, with them."""
        run = self.run
        held = attachments.referenced(self._base_history)
        ids = {item.identifier for item in held} | {p["id"] for p in run.parts or [] if "id" in p}
        data = await self._store.attachment_data(run.thread_id, sorted(ids)) if ids else {}
        attachments.hydrate(held, data)
        if ids:
            self._refs = {a.id: attachments.ref(a) for a in await self._store.attachments(run.thread_id)}
        if run.parts is not None:
            self._message = attachments.prompt(run.parts, data)
        return None if prompt is None else self._message

    def _capabilities(self) -> list[Hooks[Any]]:
        """The hooks that make a run durable: a checkpoint before every model request, and tool marks."""
        hooks: Hooks[Any] = Hooks()

        @hooks.on.before_model_request
        async def checkpoint(ctx: RunContext[Any], request_context: Any) -> Any:
            # Here the history holds every return of the last tool batch (and any steering just
            # applied), and no response without its returns: exactly what recovery can resume from.
            # Not awaited: the journal commits it in order, before any later event, and before the
            # next tool acts (a tool's start is awaited). Awaiting here cost 40% on /steps 200.
            if self._checkpoints:
                self._checkpoint(list(ctx.messages), "step")
                self._flush_applied_steers()
                self._journal.update_run(self.run.id, inflight_response=None, usage=self._usage.stored())
            if self._stopping:
                raise ServerStopping
            return request_context

        hooks.on.tool_execute(self._tool_execute)
        return [hooks]

    async def _tool_execute(
        self, ctx: RunContext[Any], *, call: ToolCallPart, tool_def: Any, args: Any, handler: Any
    ) -> Any:
        """Run a tool at most once (or, if it is declared idempotent, at least once) across crashes."""
        run, journal = self.run, self._journal
        mark = self._tool_marks.get(call.tool_call_id)
        if mark is not None and mark.finished_at is not None:
            return json.loads(mark.result or "null")  # it finished before the crash: reuse its result
        idempotent = bool((tool_def.metadata or {}).get("idempotent"))
        if mark is not None and not idempotent:
            log.warning(
                "run %s: %s (%s) was in flight at a crash; not running it again",
                run.id,
                call.tool_name,
                call.tool_call_id,
            )
            self._mark_tool(call, finished=True, result=UNKNOWN_OUTCOME)
            return UNKNOWN_OUTCOME
        self._mark_tool(call, finished=False)
        await journal.commit(run.id)  # durable before the tool acts (invariant 4), and still ours
        crash_point("approval_resumed" if self._mode == "resume" else "tools_started")
        result = await handler(args)
        self._mark_tool(call, finished=True, result=result)
        return result

    def _mark_tool(self, call: ToolCallPart, *, finished: bool, result: Any = None) -> None:
        now = time.time()
        mark = ToolMark(
            self.run.id,
            call.tool_call_id,
            call.tool_name,
            now,
            finished_at=now if finished else None,
            result=to_json(result, fallback=str).decode() if finished else None,
        )
        self._journal.tool_mark(mark)

    def _checkpoint(self, history: list[ModelMessage], kind: CheckpointKind) -> None:
        run, messages = self.run, self._dump(history)
        checkpoint = Checkpoint(run.thread_id, run.id, messages, time.time(), kind=kind, follows=self._checkpointed)
        self._journal.checkpoint(checkpoint)
        self._checkpointed = messages

    def _load_remembered(self, checkpoint: Checkpoint | None) -> list[ModelMessage]:
        """A stored history, each message remembered with its stored JSON: the next checkpoint does not
        serialise the history again (for a long thread, most of a run's checkpoint work)."""
        history = load_history(checkpoint)
        if checkpoint is not None and len(checkpoint.messages) == len(history):
            for message, stored in zip(history, checkpoint.messages, strict=True):
                self._dumped[id(message)] = (message, stored)
        return history

    def _dump(self, history: list[ModelMessage]) -> list[bytes]:
        """The history as pydantic-ai JSON, serialising each settled message once.

        A checkpoint before every model request would otherwise re-serialise the whole history each
        step (quadratic in the run's length). Only the last two messages (the request being built and
        the response it answers) can still change, so they are always serialised afresh.
        """
        pieces = []
        settled = len(history) - 2
        for index, message in enumerate(history):
            cached = self._dumped.get(id(message))
            if index >= settled or cached is None or cached[0] is not message:
                cached = (message, ModelMessagesTypeAdapter.dump_json([attachments.stored(message)])[1:-1])
                if index < settled:
                    self._dumped[id(message)] = cached
            pieces.append(cached[1])
        return pieces

    def _flush_applied_steers(self) -> None:
        """Mark delivered steering messages applied, right after the checkpoint that holds them.

        Delivered means pydantic-ai took them off its queue and into the history; the journal's order
        makes the mark durable no earlier than that checkpoint, so a crash cannot apply one twice.
        """
        if self._agent_run is None:
            return
        queued = {pending.enqueue_id for pending in self._agent_run.pending_messages}
        for enqueue_id, item in self._steers_sent.items():
            if enqueue_id not in queued and item.id not in self._steers_recorded:
                self._journal.inbox_applied(item.id)
                self._steers_recorded.add(item.id)

    async def _agent_events(self, prompt: str | list[UserContent] | None) -> AsyncIterator[Any]:
        """pydantic-ai's event stream for this run, ending with its AgentRunResultEvent.

        Calls of tools the user chose to always allow in this thread are approved on the spot:
        the run continues in a new agent iteration instead of pausing.
        """
        # What came before the agent's first step (RUN_STARTED) is written first: that step holds the
        # loop, and so the GIL that the writer's thread needs, for milliseconds. Awaited here, before the
        # agent run exists, a cancel meanwhile is only noted (and the agent run is cancelled at its start).
        await self._journal.drained()
        served, deps = await self._served_agent()
        loop = asyncio.get_running_loop()
        turn_ends = loop.time() + TURN
        deferred = self._resume
        history = self._base_history
        while True:
            async with served.agent.iter(
                prompt,
                message_history=history,
                deferred_tool_results=deferred,
                deps=deps,
                model=self._model or served.model,
                usage_limits=self._usage_limits,
                capabilities=self._capabilities(),
            ) as agent_run:
                self._agent_run = agent_run
                self._usage.iteration(agent_run)
                for item in self._steers_waiting:
                    self._enqueue(item)
                self._steers_waiting = []
                if self._cancel_reason is not None:
                    agent_run.cancel()
                async for node in agent_run:
                    if Agent.is_call_tools_node(node):
                        self._usage.answered_by(node.model_response.model_name)
                    if Agent.is_call_tools_node(node) and _has_tool_calls(node.model_response):
                        # Recorded so that recovery can answer the calls of a batch cut off by a crash.
                        self._journal.update_run(
                            self.run.id, inflight_response=ModelMessagesTypeAdapter.dump_json([node.model_response])
                        )
                        self._batch_response = node.model_response
                    if Agent.is_model_request_node(node) or Agent.is_call_tools_node(node):
                        async with node.stream(agent_run.ctx) as node_events:
                            async for event in node_events:
                                yield event
                                # Waits go here, inside the agent run: pydantic-ai delivers a cancel as
                                # CancelledError at the next await, which only inside it becomes the
                                # run's RunCancelled (anywhere else it would escape, the run unfinished).
                                if self._journal.congested:
                                    await self._journal.drained()
                                elif loop.time() >= turn_ends:
                                    await asyncio.sleep(0)  # let whatever else is ready run
                                else:
                                    continue
                                turn_ends = loop.time() + TURN
            result = agent_run.result
            assert result is not None
            requests = result.output if isinstance(result.output, DeferredToolRequests) else None
            if (
                requests
                and requests.approvals
                and not requests.calls
                and all(call.tool_name in self._allowed_tools for call in requests.approvals)
            ):
                history, prompt = result.all_messages(), None
                deferred = DeferredToolResults(approvals={c.tool_call_id: True for c in requests.approvals})
                continue
            yield AgentRunResultEvent(result=result)
            return

    async def _served_agent(self) -> tuple[ServedAgent, Any]:
        """The thread's agent and this execution's deps. Raised here, inside the event stream, an unknown
        agent or a failing deps factory fails the run like any agent error: stored and shown."""
        thread, run = self._thread, self.run
        name = self._agents.resolve(thread.agent if thread is not None else None)
        info = RunInfo(
            thread_id=run.thread_id,
            run_id=run.id,
            user=thread.user_id if thread is not None and self._named_users else None,
            agent=name,
            thread_metadata=thread.metadata if thread is not None else {},
            state=self._agents.state(name),
            execution=self._mode,
        )
        span = trace.get_current_span()
        span.set_attribute("tether.agent", name)
        if info.user is not None:
            span.set_attribute("tether.user", info.user)
        return self._agents.served[name], await self._agents.make_deps(info)

    async def _on_complete(self, result: AgentRunResult[Any]) -> AsyncIterator[BaseEvent]:
        self._final_history = result.all_messages()
        output = result.output
        if not isinstance(output, DeferredToolRequests):
            return
        if output.calls:
            raise RuntimeError(
                "the agent deferred tool calls to the client ("
                + ", ".join(c.tool_name for c in output.calls)
                + "), which Tether does not run"
            )
        pending = [PendingCall(c.tool_call_id, c.tool_name, c.args_as_dict()) for c in output.approvals]
        allowed = {c.tool_call_id: Decision(approved=True) for c in pending if c.tool_name in self._allowed_tools}
        self._pause = (pending, allowed)
        yield custom(
            APPROVAL_REQUESTED,
            {"runId": self.run.id, "calls": [_pending_json(c) for c in pending if c.tool_call_id not in allowed]},
        )

    def _steer_applied(self, event: EnqueuedMessagesEvent) -> dict[str, Any] | None:
        item = self._steers_sent.get(event.enqueue_id)
        if item is None:
            return None
        crash_point("steer_applied")
        return {"steerId": item.id, "runId": self.run.id, "input": item.input}

    def _history_after_failure(self, exc: Exception) -> list[ModelMessage]:
        """The history a failed or cancelled run leaves: what completed, never a half-done tool batch.

        A cancelled run keeps what the model said so far, unless it was interrupted by a new
        message, which discards a response still being streamed. Tool calls that were executing
        are answered "interrupted" here, as pydantic-ai's history repair would answer them at the
        next run, so that the snapshot on the stream is the history the next run starts from.
        A failed run drops a trailing response whose tool calls never returned, or the next run
        would execute them.
        """
        if isinstance(exc, RunCancelled):
            history = list(exc.all_messages())
            while history and isinstance(history[-1], ModelRequest) and not history[-1].parts:
                history.pop()  # the next request pydantic-ai had begun to build
            if self._discard_partial and history and isinstance(history[-1], ModelResponse):
                if history[-1] != self._batch_response:
                    history.pop()
            history = repair_messages(history)
        else:
            if self._agent_run is not None:
                history = list(self._agent_run.all_messages())
            else:
                history = [*self._base_history, ModelRequest(parts=[UserPromptPart(self._message)])]
            while history and _has_tool_calls(history[-1]):
                history.pop()
        self._final_history = history
        return history

    def _finish(self, stream: TetherEventStream) -> dict[str, Any]:
        """Record the run's outcome in the same group commit as its terminal event; its usage so far."""
        run, journal = self.run, self._journal
        run.usage = self._usage.stored()
        fields: dict[str, Any] = {"usage": run.usage}
        if stream.error is not None:
            self.status, error = "failed", f"{type(stream.error).__name__}: {stream.error}"
        elif stream.cancelled is not None:
            self.status, error = "cancelled", self._cancel_reason or "cancelled"
        elif self._pause is not None:
            self.status, error = "awaiting_approval", None
            pending, allowed = self._pause
            fields.update(pending_approvals=pending, decisions=allowed or None)
        else:
            self.status, error = "completed", None
        if self._final_history is not None:
            self._checkpoint(self._final_history, "pause" if self.status == "awaiting_approval" else "end")
        self._flush_applied_steers()
        run.error = error
        paused = self.status == "awaiting_approval" and self._pause is not None
        notice = {"pendingApprovals": [_pending_json(c) for c in self._pause[0]]} if paused else None
        journal.run_status(run, self.status, error=error, notice=notice, **fields)
        return run.usage

    async def _record_crash(self, exc: Exception, attempts: int = 6) -> None:
        """A failure in Tether's own code or a failed write: end the run as failed, loudly.

        Recording the failure is a write too; if the store is failing (a full disk), it is retried
        with backoff. If it never succeeds, the run stays `running` and is resumed at the next start.
        """
        run, journal = self.run, self._journal
        self.status = "failed"
        run.error = f"internal error: {type(exc).__name__}: {exc}"
        for attempt in range(attempts):
            journal.forget_thread(run.thread_id)
            try:
                await journal.open_thread(run.thread_id)
                journal.run_status(run, "failed", error=run.error)
                journal.event(
                    run.thread_id,
                    run.id,
                    events.RUN_ERROR,
                    events.encode(RunErrorEvent(message=run.error, code="internal_error", timestamp=now_ms())),
                )
                await journal.commit(run.id)
                return
            except LeaseLost:
                self.status = "abandoned"
                log.warning("run %s: another worker took over its lease; its failure is not recorded here", run.id)
                return
            except Exception:
                log.exception("could not record the failure of run %s (attempt %d)", run.id, attempt + 1)
                await asyncio.sleep(0.2 * 2**attempt)
        self.status = "running"
        log.error("run %s: its failure could not be recorded; it will be resumed at the next start", run.id)


async def cancel_paused_run(run: Run, journal: Journal, store: Store, reason: str) -> None:
    """End a run that waits for approval: its pending calls are answered "not run", and it is cancelled.

    Answering them keeps the history valid: a later run must not find tool calls without returns
    (pydantic-ai would execute them, unapproved).
    """
    latest = await store.latest_checkpoint(run.thread_id)
    history = load_history(latest)
    returns = [
        ToolReturnPart(
            tool_name=c.tool_name,
            tool_call_id=c.tool_call_id,
            content=f"Not run: the run was cancelled before this call was approved ({reason}).",
        )
        for c in run.pending_approvals or []
    ]
    if returns:
        history = [*history, ModelRequest(parts=returns)]
    refs = await attachments.references(store, run.thread_id, history)
    await journal.open_thread(run.thread_id)
    follows = latest.messages if latest is not None else []
    journal.checkpoint(
        Checkpoint(run.thread_id, run.id, dump_history(history), time.time(), kind="end", follows=follows)
    )
    for event in (
        RunStartedEvent(thread_id=run.thread_id, run_id=run.id, timestamp=now_ms()),
        messages_snapshot(history, refs),
        custom(RUN_CANCELLED, {"reason": reason}),
        usage_event(run, run.usage),
        RunFinishedEvent(thread_id=run.thread_id, run_id=run.id, timestamp=now_ms()),
    ):
        journal.event(run.thread_id, run.id, events.type_name(event), events.encode(event))
    journal.run_status(run, "cancelled", error=reason)
    await journal.commit()


def denial_message(reason: str | None) -> str:
    """What the model is told of a denied call. The fixed start lets clients mark the call "denied"."""
    return f"{DENIED}: {reason}" if reason else f"{DENIED}."


def deferred_results(decisions: dict[str, Decision]) -> DeferredToolResults:
    """Human decisions as pydantic-ai's deferred tool results."""
    approvals: dict[str, bool | ToolApproved | ToolDenied] = {}
    for tool_call_id, decision in decisions.items():
        if not decision.approved:
            approvals[tool_call_id] = ToolDenied(denial_message(decision.reason))
        elif decision.args is not None:
            approvals[tool_call_id] = ToolApproved(override_args=decision.args)
        else:
            approvals[tool_call_id] = True
    return DeferredToolResults(approvals=approvals)


def _pending_json(call: PendingCall) -> dict[str, Any]:
    return {"toolCallId": call.tool_call_id, "toolName": call.tool_name, "args": call.args}


_VERBS = {"start": "started", "resume": "resumed after approval", "recover": "recovered"}


def _unanswered(history: list[ModelMessage], inflight: bytes) -> list[ModelMessage]:
    """The in-flight response, if the checkpoint does not already hold the returns of its calls."""
    answered = {
        part.tool_call_id
        for message in history
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    }
    responses = ModelMessagesTypeAdapter.validate_json(inflight)
    calls = [p for r in responses if isinstance(r, ModelResponse) for p in r.parts if isinstance(p, ToolCallPart)]
    return responses if calls and not any(c.tool_call_id in answered for c in calls) else []


def _has_tool_calls(message: ModelMessage) -> bool:
    return isinstance(message, ModelResponse) and any(isinstance(p, ToolCallPart) for p in message.parts)


def load_history(checkpoint: Checkpoint | None) -> list[ModelMessage]:
    return ModelMessagesTypeAdapter.validate_json(checkpoint.json()) if checkpoint is not None else []


def dump_history(history: list[ModelMessage]) -> list[bytes]:
    """One JSON text per message, as checkpoints store them (attachments without their bytes)."""
    return [ModelMessagesTypeAdapter.dump_json([attachments.stored(message)])[1:-1] for message in history]
