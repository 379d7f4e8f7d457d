"""AG-UI mapping: pydantic-ai's event stream, as Tether records it.

pydantic-ai's `AGUIEventStream` does the mapping; Tether adds what a durable,
shared log needs, so that folding the log always renders the stored history
(invariant 3):
- the user's message, as TEXT_MESSAGE_START/CONTENT/END with role "user",
  right after RUN_STARTED, then, if it has attachments, a CUSTOM
  `tether.attachments` with their references (and a steering message where
  it was applied, after a CUSTOM `tether.steer_applied`);
- a MESSAGES_SNAPSHOT of the history a retry rewinds to, right after
  RUN_STARTED, and of the stored history just before a run ends in error or
  is cancelled, so clients drop what the history does not keep;
- CUSTOM events for what AG-UI has no word for: `tether.approval_requested`,
  `tether.steer_applied`, `tether.run_cancelled` (with the reason),
  `tether.attachments`, and `tether.tool_failed` just before the
  TOOL_CALL_RESULT of a call that failed or is to be retried (a TOOL_CALL_RESULT
  cannot say so; the AI SDK's stream sends such a result as `tool-output-error`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ag_ui.core import (
    BaseEvent,
    CustomEvent,
    MessagesSnapshotEvent,
    RunErrorEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
)
from pydantic_ai.exceptions import RunCancelled
from pydantic_ai.messages import (
    EnqueuedMessagesEvent,
    FunctionToolResultEvent,
    ModelMessage,
    PartDeltaEvent,
    TextPartDelta,
)
from pydantic_ai.ui.ag_ui import AGUIEventStream

from tether import attachments

APPROVAL_REQUESTED = "tether.approval_requested"
STEER_APPLIED = "tether.steer_applied"
RUN_CANCELLED = "tether.run_cancelled"
TOOL_FAILED = "tether.tool_failed"
TOOL_FAILURES = ("failed", "retried")
"""The outcomes of a tool return that make its result an error (pydantic-ai's ToolReturnPart.outcome)."""


class ServerStopping(Exception):
    """Raised at a step boundary when the server shuts down gracefully: the run stops without ending."""


def now_ms() -> int:
    return int(time.time() * 1000)


def messages_snapshot(history: list[ModelMessage], refs: Mapping[str, Mapping[str, Any]]) -> MessagesSnapshotEvent:
    """The history as clients show it; `refs`: what each of its attachments is (see tether.attachments)."""
    return MessagesSnapshotEvent(messages=attachments.dump_messages(history, refs), timestamp=now_ms())


def custom(name: str, value: dict[str, Any]) -> CustomEvent:
    return CustomEvent(name=name, value=value, timestamp=now_ms())


def user_message(text: str, shown: list[dict[str, Any]] | None = None) -> list[BaseEvent]:
    """A user's message; one of attachments only has no content event, and `shown` are its attachments."""
    message_id = str(uuid.uuid4())
    timestamp = now_ms()
    return [
        TextMessageStartEvent(message_id=message_id, role="user", timestamp=timestamp),
        *([TextMessageContentEvent(message_id=message_id, delta=text, timestamp=timestamp)] if text else []),
        TextMessageEndEvent(message_id=message_id, timestamp=timestamp),
        *([custom(attachments.ATTACHMENTS, {"messageId": message_id, "attachments": shown})] if shown else []),
    ]


@dataclass
class TetherEventStream(AGUIEventStream[Any, Any]):
    user_input: str | None = None
    """The message that starts this run (its text); None when a paused run resumes."""
    user_attachments: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """The references of its attachments (see tether.attachments)."""
    refs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)
    """What each attachment of the thread is, for the snapshots."""
    rewound_history: list[ModelMessage] | None = field(default=None, repr=False)
    """For a retry: the history the thread was rewound to."""
    history_after_failure: Callable[[Exception], list[ModelMessage]] | None = field(default=None, repr=False)
    """Called when the run fails or is cancelled: the history that will be stored, for the snapshot."""
    steer_applied: Callable[[EnqueuedMessagesEvent], dict[str, Any] | None] | None = field(default=None, repr=False)
    """Called when pydantic-ai delivers enqueued content: the steering message it was, if any."""
    cancel_reason: Callable[[], str] | None = field(default=None, repr=False)
    error: Exception | None = None
    stopped: bool = False
    """The server stopped the run at a step boundary: no terminal event; it resumes on the next start."""

    async def handle_event(self, event: Any) -> AsyncIterator[BaseEvent]:
        """A text delta, by far the most common event, skips the three generators that dispatch it.

        It yields what `AGUIEventStream.handle_text_delta` yields, stamped as its `handle_event` stamps
        it. `transform_stream` keeps its own state (the open part's deltas, for the error path)
        around this call, so nothing else changes. Every other event takes the general path.
        """
        if type(event) is PartDeltaEvent and type(event.delta) is TextPartDelta:
            if event.delta.content_delta:
                yield TextMessageContentEvent(
                    message_id=self.message_id, delta=event.delta.content_delta, timestamp=now_ms()
                )
            return
        async for agui_event in super().handle_event(event):
            yield agui_event

    async def before_stream(self) -> AsyncIterator[BaseEvent]:
        async for event in super().before_stream():
            yield event
        if self.rewound_history is not None:
            yield messages_snapshot(self.rewound_history, self.refs)
        if self.user_input is not None:
            for event in user_message(self.user_input, self.user_attachments):
                yield event

    async def handle_function_tool_result(self, event: FunctionToolResultEvent) -> AsyncIterator[BaseEvent]:
        part = event.part
        if part.outcome in TOOL_FAILURES:
            yield custom(TOOL_FAILED, {"toolCallId": part.tool_call_id, "outcome": part.outcome})
        async for agui_event in super().handle_function_tool_result(event):
            yield agui_event

    async def handle_enqueued_messages(self, event: EnqueuedMessagesEvent) -> AsyncIterator[BaseEvent]:
        async for agui_event in super().handle_enqueued_messages(event):
            yield agui_event
        steer = self.steer_applied(event) if self.steer_applied is not None else None
        if steer is not None:
            yield custom(STEER_APPLIED, steer)
            for agui_event in user_message(steer["input"]):
                yield agui_event

    async def on_error(self, error: Exception) -> AsyncIterator[BaseEvent]:
        if isinstance(error, ServerStopping):
            self.stopped = True
            return
        self.error = error
        if self.history_after_failure is not None:
            yield messages_snapshot(self.history_after_failure(error), self.refs)
        async for event in super().on_error(error):
            if isinstance(event, RunErrorEvent) and event.code is None:
                event.code = type(error).__name__  # which kind of failure, for clients that branch on it
            yield event

    async def after_stream(self) -> AsyncIterator[BaseEvent]:
        if self.stopped:
            return
        async for event in super().after_stream():
            yield event

    async def on_cancelled(self, cancelled: RunCancelled) -> AsyncIterator[BaseEvent]:
        if self.history_after_failure is not None:
            yield messages_snapshot(self.history_after_failure(cancelled), self.refs)
        reason = self.cancel_reason() if self.cancel_reason is not None else "cancelled"
        yield custom(RUN_CANCELLED, {"reason": reason})
        async for event in super().on_cancelled(cancelled):
            yield event
