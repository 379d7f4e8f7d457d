"""AG-UI mapping: pydantic-ai's event stream, as Tether records it.

pydantic-ai's `AGUIEventStream` does the mapping; Tether adds two things a
durable log needs:
- the user's message, as TEXT_MESSAGE_START/CONTENT/END with role "user",
  right after RUN_STARTED, so that folding the log renders the whole
  conversation and not only the agent's side of it;
- a MESSAGES_SNAPSHOT of the stored history just before a run ends in error
  or is cancelled, so clients drop partial output that the history does not
  keep (invariant 3: folding the log renders the stored history).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ag_ui.core import (
    BaseEvent,
    MessagesSnapshotEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
)
from pydantic_ai.exceptions import RunCancelled
from pydantic_ai.messages import ModelMessage
from pydantic_ai.ui.ag_ui import AGUIAdapter, AGUIEventStream


def messages_snapshot(history: list[ModelMessage]) -> MessagesSnapshotEvent:
    return MessagesSnapshotEvent(messages=AGUIAdapter.dump_messages(history))


@dataclass
class TetherEventStream(AGUIEventStream[Any, Any]):
    user_input: str = ""
    history_after_failure: Callable[[Exception], list[ModelMessage]] | None = field(default=None, repr=False)
    """Called when the run fails or is cancelled: the history that will be stored, for the snapshot."""
    error: Exception | None = None

    async def before_stream(self) -> AsyncIterator[BaseEvent]:
        async for event in super().before_stream():
            yield event
        message_id = str(uuid.uuid4())
        timestamp = self._get_timestamp()
        yield TextMessageStartEvent(message_id=message_id, role="user", timestamp=timestamp)
        yield TextMessageContentEvent(message_id=message_id, delta=self.user_input, timestamp=timestamp)
        yield TextMessageEndEvent(message_id=message_id, timestamp=timestamp)

    async def on_error(self, error: Exception) -> AsyncIterator[BaseEvent]:
        self.error = error
        if self.history_after_failure is not None:
            yield messages_snapshot(self.history_after_failure(error))
        async for event in super().on_error(error):
            yield event

    async def on_cancelled(self, cancelled: RunCancelled) -> AsyncIterator[BaseEvent]:
        if self.history_after_failure is not None:
            yield messages_snapshot(self.history_after_failure(cancelled))
        async for event in super().on_cancelled(cancelled):
            yield event
