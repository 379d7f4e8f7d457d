"""What a run used: pydantic-ai's RunUsage summed over every execution of the run (its start, each resume
after approval, each recovery), the model that answered, and the answer it belongs to.

It is stored on the run (`runs.usage`, JSON) at every step and with the run's outcome, and streamed as a
CUSTOM `tether.usage` just before each terminal event of an execution. The stored form is what
`GET /v1/runs/{rid}` shows as `usage`, and what the event carries (under `usage`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ag_ui.core import BaseEvent, CustomEvent
from pydantic_ai.run import AgentRun
from pydantic_ai.usage import RunUsage
from pydantic_core import to_jsonable_python

from tether.engine.agui import custom
from tether.store import Run

USAGE = "tether.usage"

_FIELDS = {f.name for f in dataclasses.fields(RunUsage) if f.init}


class UsageMeter:
    """The usage of one run while one of its executions goes on.

    `message_id` follows the log: the id of the run's last answer, the last assistant message its events
    show after the last user message (a text message, or the message its tool calls hang from; in a
    MESSAGES_SNAPSHOT, as the snapshot has it): where a client shows the usage. None: no answer yet.
    """

    def __init__(self, run: Run) -> None:
        stored = run.usage or {}
        self._before = RunUsage(**{k: v for k, v in stored.items() if k in _FIELDS})
        self._done = RunUsage()
        self._current: AgentRun[Any, Any] | None = None
        self.model: str | None = stored.get("model")
        self.message_id: str | None = stored.get("message_id")

    def iteration(self, agent_run: AgentRun[Any, Any]) -> None:
        """An agent iteration of this execution has begun (an execution may take several): the one
        before it is done."""
        if self._current is not None:
            self._done = self._done + self._current.usage
        self._current = agent_run

    def answered_by(self, model_name: str | None) -> None:
        if model_name:
            self.model = model_name

    def saw(self, event: BaseEvent) -> None:
        """Follow the run's events to the answer its usage belongs to."""
        kind = event.type
        if kind == "TEXT_MESSAGE_START":
            role = getattr(event, "role", "assistant")
            self.message_id = event.message_id if role == "assistant" else None  # type: ignore[attr-defined]
        elif kind == "TOOL_CALL_START":
            self.message_id = event.parent_message_id or event.tool_call_id  # type: ignore[attr-defined]
        elif kind == "MESSAGES_SNAPSHOT":
            self.message_id = None
            for message in event.messages:  # type: ignore[attr-defined]
                if message.role in ("user", "assistant"):
                    self.message_id = message.id if message.role == "assistant" else None

    def total(self) -> RunUsage:
        current = self._current.usage if self._current is not None else RunUsage()
        return self._before + self._done + current

    def stored(self) -> dict[str, Any]:
        """The run's usage as it is stored and shown."""
        total = self.total()
        return {
            **to_jsonable_python(total),
            "total_tokens": total.total_tokens,
            "model": self.model,
            "message_id": self.message_id,
        }


def usage_event(run: Run, usage: dict[str, Any] | None) -> CustomEvent:
    """The CUSTOM `tether.usage` a run's execution ends with."""
    took = round((time.time() - run.started_at) * 1000) if run.started_at is not None else None
    return custom(USAGE, {"runId": run.id, "durationMs": took, "usage": usage})
