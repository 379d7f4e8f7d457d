"""A thread's history as protocol clients know it, and which of a client's messages are new.

AG-UI and AI SDK clients send their whole conversation with every request, each message with an id.
Tether keeps the conversation itself, so a request's new input is the messages it has not stored, and
stored messages are recognised by id. `GET /v1/threads/{tid}` cannot say which ids those are: it
renders the stored history afresh, with new ids each time. The durable log can: it holds the exact
events every client was sent, ids included. One exception: a run's input message. The client that sent
it gave it an id of its own (recorded with the run, `ClientMessage`), so the events that show that
message are sent, and folded, under the client's id. `ClientIds` applies that renaming to the log, in
order, the same way for a stream and for a fold, so the two always agree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tether.errors import BadRequest, Conflict
from tether.events import Event
from tether.store import ClientMessage
from tether.transcript import fold

CLIENT_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
"""A thread or run id a protocol client chose (as a JSON Schema pattern, for the OpenAPI too)."""
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN)


def check_client_id(value: str, field: str) -> str:
    """A thread or run id a client chose: it names a thread in URLs and channels, so keep it plain."""
    if not _CLIENT_ID.fullmatch(value):
        raise BadRequest(
            f"{field} must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit; "
            f"got {value[:40]!r}",
            code=f"invalid_{re.sub(r'(?<!^)(?=[A-Z])', '_', field).lower()}",
        )
    return value


class ClientIds:
    """The log's events under the ids their clients know, fed in log order.

    A run's first user message is its input; if a protocol client sent it, its events take the client's
    id. `known` gathers every message id the renamed log mentions, and every id a client gave.
    """

    def __init__(self, recorded: list[ClientMessage]) -> None:
        self._inputs = {m.run_id: m.message_id for m in recorded if m.is_input}
        self.known = {m.message_id for m in recorded}
        self._renamed: dict[str, str] = {}
        self._input_seen: set[str] = set()

    def expect(self, run_id: str, message_id: str) -> None:
        """A run about to start with the client's message `message_id` as its input."""
        self._inputs[run_id] = message_id
        self.known.add(message_id)

    def rename(self, run_id: str, event: dict[str, Any]) -> dict[str, Any]:
        """The event as its client knows it (the same dict when nothing changes)."""
        if event["type"] == "TEXT_MESSAGE_START" and event.get("role") == "user" and run_id not in self._input_seen:
            self._input_seen.add(run_id)
            if run_id in self._inputs:
                self._renamed[event["messageId"]] = self._inputs[run_id]
        message_id = event.get("messageId")
        if message_id in self._renamed:
            event = {**event, "messageId": self._renamed[message_id]}
        for key in ("messageId", "parentMessageId"):
            if key in event:
                self.known.add(event[key])
        if event["type"] == "MESSAGES_SNAPSHOT":
            self.known.update(m["id"] for m in event["messages"])
        return event


def transcript(log: list[Event], ids: ClientIds) -> list[dict[str, Any]]:
    """The thread's messages (AG-UI) by their clients' ids: the log renamed, then folded."""
    return fold([ids.rename(e.run_id, json.loads(e.data)) for e in log])


@dataclass(frozen=True)
class Incoming:
    """One message of a client's request, as far as telling new from stored needs."""

    id: str
    role: str
    text: str | None
    """Its text; None if it holds something Tether cannot take as input (a file, an image)."""


def new_input(messages: Sequence[Incoming], known: set[str]) -> list[Incoming]:
    """The messages Tether has not stored: they come after every stored one, and they are the user's text.

    An unknown message before a known one means the client's history differs from the stored one
    (edited, reordered, or another conversation): a 409, never a fork.
    """
    last_known = max((i for i, m in enumerate(messages) if m.id in known), default=-1)
    strangers = [m.id for m in messages[:last_known] if m.id not in known]
    if strangers:
        raise Conflict(
            f"message(s) {', '.join(map(repr, strangers[:5]))} are not in the thread's history but come before "
            "messages that are: this history contradicts the stored one; load the thread's messages again",
            code="history_conflict",
        )
    new = list(messages[last_known + 1 :])
    for message in new:
        if message.role != "user":
            raise BadRequest(
                f"message {message.id!r} is a new {message.role} message: Tether takes only new user messages "
                "(the agent's instructions and answers are its own)",
                code="unsupported_message",
            )
        if message.text is None:
            raise BadRequest(
                f"message {message.id!r} holds content other than text, which Tether cannot take yet",
                code="unsupported_content",
            )
        if not message.text.strip():
            raise BadRequest(f"message {message.id!r} has no text", code="empty_message")
        if "\x00" in message.id + message.text:  # as the v1 API: the store cannot hold it
            raise BadRequest(
                f"message {message.id!r} holds a NUL character (U+0000), which Tether cannot store",
                code="unsupported_content",
            )
    return new


def joined(messages: list[Incoming]) -> str:
    """Several new user messages (an earlier one never reached Tether) become one input."""
    return "\n\n".join(m.text or "" for m in messages)
