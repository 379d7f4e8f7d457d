"""The event model: what is stored, what is streamed.

A thread's log is a list of AG-UI events, each stored as the exact JSON text
that clients receive, with a per-thread sequence number (the SSE `id:`). The
JSON is encoded once, when the event is made: AG-UI message ids are random per
encoding, so re-deriving events at replay time would break exact resume.

The feed (`GET /v1/events`) is a second, global log of small Tether-specific
notices (a run started, changed status, finished; a thread was created or
deleted) with its own sequence.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ag_ui.core import BaseEvent, EventType, TextMessageContentEvent
from pydantic_core import to_json

RUN_FINISHED = "RUN_FINISHED"
RUN_ERROR = "RUN_ERROR"

NO_RUN = ""
"""The run id of an event that no run wrote: the MESSAGES_SNAPSHOT that begins a forked thread's log."""


@dataclass(slots=True)
class Event:
    """One committed event of a thread's log; never changed once made.

    Not a frozen dataclass: a frozen one takes 1.5 µs to make instead of 0.3, and a replay makes
    hundreds of thousands a second."""

    thread_id: str
    seq: int
    run_id: str
    type: str
    data: str
    """The AG-UI event as JSON text, exactly as sent to clients."""
    _frame: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def sse(self) -> bytes:
        """The event as an SSE frame; built once, however many connections it is sent to."""
        if self._frame is None:
            self._frame = f"id: {self.seq}\ndata: {self.data}\n\n".encode()
        return self._frame


@dataclass(slots=True)
class FeedItem:
    """One committed notice of the global feed; never changed once made (not frozen, as Event)."""

    seq: int
    thread_id: str
    run_id: str | None
    data: str
    user_id: str
    """The user whose thread it is about: only their feed shows it."""

    def sse(self) -> bytes:
        return f"id: {self.seq}\ndata: {self.data}\n\n".encode()


def encode(event: BaseEvent) -> str:
    """The wire form of an AG-UI event: camelCase keys, no nulls (what ag-ui's EventEncoder sends)."""
    if FAST_TEXT_CONTENT and type(event) is TextMessageContentEvent and _plain_text_content(event):
        # Most events of a streamed answer are this one: written out directly, the same bytes as
        # model_dump_json (the same serialiser escapes the strings) at a third of its cost.
        return (
            f'{{"type":"TEXT_MESSAGE_CONTENT","timestamp":{event.timestamp},'
            f'"messageId":{to_json(event.message_id).decode()},"delta":{to_json(event.delta).decode()}}}'
        )
    return event.model_dump_json(by_alias=True, exclude_none=True)


FAST_TEXT_CONTENT = set(TextMessageContentEvent.model_fields) == {
    "type",
    "timestamp",
    "raw_event",
    "metadata",
    "subagent_run_id",
    "message_id",
    "delta",
}
"""The fast path knows every field of this ag-ui's TextMessageContentEvent (if not, every event takes the slow path)."""


def _plain_text_content(event: TextMessageContentEvent) -> bool:
    """Only the fields the fast path writes are set."""
    return (
        type(event.timestamp) is int
        and event.raw_event is None
        and event.metadata is None
        and event.subagent_run_id is None
    )


def type_name(event: BaseEvent) -> str:
    """The event's type as a plain string, as it is stored and sent between workers. (ag-ui's
    EventType is a str enum, but formatted it reads "EventType.RUN_FINISHED".)"""
    return EventType(event.type).value


def is_terminal(event_type: str) -> bool:
    """Whether an event can end a run (a run paused for approval also ends with RUN_FINISHED)."""
    return event_type in (RUN_FINISHED, RUN_ERROR)


def feed_notice(kind: str, thread_id: str, run_id: str | None = None, **fields: Any) -> str:
    """A feed notice as JSON: `{"type": "run.status", "threadId": ..., "runId": ..., ...}`."""
    body: dict[str, Any] = {"type": kind, "threadId": thread_id}
    if run_id is not None:
        body["runId"] = run_id
    body.update(fields)
    body["timestamp"] = int(time.time() * 1000)
    return json.dumps(body, separators=(",", ":"))
