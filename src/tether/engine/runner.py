"""One run, executing in the background: pydantic-ai events in, durable AG-UI events out."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from ag_ui.core import RunErrorEvent
from pydantic_ai import Agent
from pydantic_ai.exceptions import RunCancelled
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    ToolCallPart,
    UserPromptPart,
)
from pydantic_ai.run import AgentRun, AgentRunResult, AgentRunResultEvent
from pydantic_ai.tools import DeferredToolRequests

from tether import events
from tether.engine.agui import TetherEventStream
from tether.engine.journal import Journal
from tether.events import feed_notice
from tether.store import Checkpoint, Run, RunStatus, Store

log = logging.getLogger("tether.run")


class ApprovalsUnsupported(RuntimeError):
    pass


class RunExecution:
    """Drives one run from its first event to its terminal event, and records every step."""

    def __init__(self, run: Run, agent: Agent[Any, Any], journal: Journal, store: Store,
                 model: str | None) -> None:
        self.run = run
        self._agent = agent
        self._journal = journal
        self._store = store
        self._model = run.model or model
        self._agent_run: AgentRun[Any, Any] | None = None
        self._base_history: list[ModelMessage] = []
        self._final_history: list[ModelMessage] | None = None
        self._cancel_reason: str | None = None
        self.status: RunStatus = "running"

    def cancel(self, reason: str) -> None:
        """Ask the run to stop at once; it records RUN_FINISHED and the history it had."""
        self._cancel_reason = reason
        if self._agent_run is not None:
            self._agent_run.cancel()

    async def execute(self) -> None:
        run, journal = self.run, self._journal
        started = time.monotonic()
        journal.update_run(run.id, status="running", started_at=time.time())
        journal.feed(run.thread_id, run.id, feed_notice("run.status", run.thread_id, run.id, status="running"))
        log.info("run %s started on thread %s", run.id, run.thread_id)
        try:
            checkpoint = await self._store.latest_checkpoint(run.thread_id)
            if checkpoint is not None:
                self._base_history = ModelMessagesTypeAdapter.validate_json(checkpoint.messages)
            stream = TetherEventStream(
                thread_id=run.thread_id, run_id=run.id, user_input=run.input,
                history_after_failure=self._history_after_failure,
            )
            async for event in stream.transform_stream(self._agent_events(), on_complete=self._on_complete):
                if events.is_terminal(event.type):
                    self._finish(stream)
                journal.event(run.thread_id, run.id, event.type, events.encode(event))
                if journal.congested:
                    await journal.commit()
            await journal.commit()
        except Exception as exc:
            log.exception("run %s crashed inside Tether", run.id)
            await self._record_crash(exc)
        elapsed = time.monotonic() - started
        if self.status == "failed":
            log.warning("run %s failed after %.2fs: %s", run.id, elapsed, self.run.error)
        else:
            log.info("run %s %s in %.2fs", run.id, self.status, elapsed)

    async def _agent_events(self) -> AsyncIterator[Any]:
        """pydantic-ai's event stream for this run, ending with its AgentRunResultEvent."""
        async with self._agent.iter(
            self.run.input, message_history=self._base_history, model=self._model
        ) as agent_run:
            self._agent_run = agent_run
            if self._cancel_reason is not None:
                agent_run.cancel()
            async for node in agent_run:
                if Agent.is_model_request_node(node) or Agent.is_call_tools_node(node):
                    async with node.stream(agent_run.ctx) as node_events:
                        async for event in node_events:
                            yield event
            assert agent_run.result is not None
            yield AgentRunResultEvent(result=agent_run.result)

    async def _on_complete(self, result: AgentRunResult[Any]) -> None:
        if isinstance(result.output, DeferredToolRequests):
            # The approval flow is not built yet: fail clearly rather than hang.
            raise ApprovalsUnsupported(
                "this run asked for tool approval ("
                + ", ".join(call.tool_name for call in result.output.approvals)
                + "), which this Tether version does not support yet"
            )
        self._final_history = result.all_messages()

    def _history_after_failure(self, exc: Exception) -> list[ModelMessage]:
        """The history a failed or cancelled run leaves: what completed, never a half-done tool batch.

        A cancelled run keeps pydantic-ai's own snapshot (partial response marked interrupted; it
        fills unanswered calls with an "interrupted" return on the next run). A failed run drops a
        trailing response whose tool calls never returned, or the next run would execute them.
        """
        if isinstance(exc, RunCancelled):
            history = list(exc.all_messages())
        elif self._agent_run is not None:
            history = list(self._agent_run.all_messages())
        else:
            history = [*self._base_history, ModelRequest(parts=[UserPromptPart(self.run.input)])]
        if not isinstance(exc, RunCancelled):
            while history and _has_unanswered_calls(history[-1]):
                history.pop()
        self._final_history = history
        return history

    def _finish(self, stream: TetherEventStream) -> None:
        """Record the run's outcome in the same group commit as its terminal event."""
        run, journal = self.run, self._journal
        if stream.error is not None:
            self.status, error = "failed", f"{type(stream.error).__name__}: {stream.error}"
        elif stream.cancelled is not None:
            self.status, error = "cancelled", self._cancel_reason or "cancelled"
        else:
            self.status, error = "completed", None
        if self._final_history is not None:
            journal.checkpoint(Checkpoint(run.thread_id, run.id, _dump(self._final_history), time.time()))
        self.run.error = error
        journal.update_run(run.id, status=self.status, finished_at=time.time(), error=error)
        journal.feed(run.thread_id, run.id,
                     feed_notice("run.status", run.thread_id, run.id, status=self.status, error=error))

    async def _record_crash(self, exc: Exception) -> None:
        """A failure in Tether's own code (or a failed write): end the run as failed, loudly."""
        run, journal = self.run, self._journal
        self.status = "failed"
        self.run.error = f"internal error: {type(exc).__name__}: {exc}"
        journal.forget_thread(run.thread_id)
        try:
            await journal.open_thread(run.thread_id)
            journal.update_run(run.id, status="failed", finished_at=time.time(), error=self.run.error)
            journal.feed(run.thread_id, run.id,
                         feed_notice("run.status", run.thread_id, run.id, status="failed", error=self.run.error))
            journal.event(run.thread_id, run.id, events.RUN_ERROR,
                          events.encode(RunErrorEvent(message=self.run.error, code="internal_error")))
            await journal.commit()
        except Exception:
            log.exception("could not record the failure of run %s", run.id)


def _has_unanswered_calls(message: ModelMessage) -> bool:
    return isinstance(message, ModelResponse) and any(isinstance(p, ToolCallPart) for p in message.parts)


def _dump(history: list[ModelMessage]) -> bytes:
    return ModelMessagesTypeAdapter.dump_json(history)
