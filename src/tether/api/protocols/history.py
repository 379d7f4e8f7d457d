"""Which of a protocol client's messages are new, and the ids clients may choose.

AG-UI and AI SDK clients send their whole conversation with every request, each message with an id.
Tether keeps the conversation itself, so a request's new input is the messages it has not stored, and
stored messages are recognised by id: the ids the durable log gave them, or the client's own id for a
run's input message (`tether.transcript.ClientIds`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tether.errors import BadRequest, Conflict

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
