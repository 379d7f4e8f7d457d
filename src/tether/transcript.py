"""Folding a thread's event log into its transcript (AG-UI messages), and the ids its messages go by.

Invariant 3 says folding the log from the start renders the same transcript
as the thread's stored history (`GET /v1/threads/{tid}` → `messages`). This
module is the reference fold (the web UI's JavaScript mirrors it), and
`comparable` strips what legitimately differs between the two renderings:
message ids and the spacing of tool-call JSON.

Message ids. The stored history has none of its own: rendering it (`AGUIAdapter.dump_messages`)
makes new ones every time. The log holds the exact events every client was sent, ids included,
so its fold names each message by the id its stream carried, and that id never changes. It is
the one scheme of stable ids: `with_log_ids` gives the stored history's messages the log's ids,
and protocol clients (AG-UI, the AI SDK) get them too, except that a run's input message that a
client sent under an id of its own goes by that id (`ClientIds`, applied to the log in order, the
same way for a stream and for a fold, so the two always agree).
"""

from __future__ import annotations

import json
from typing import Any

from tether.attachments import ATTACHMENTS
from tether.events import Event
from tether.store import ClientMessage


def fold(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply AG-UI events in order; MESSAGES_SNAPSHOT replaces everything folded so far. A user message's
    attachments (a CUSTOM `tether.attachments` after it) are its `attachments`."""
    transcript = Transcript()
    for event in events:
        transcript.apply(event)
    return transcript.messages()


class Transcript:
    """A fold that goes on: events are applied one by one, and `messages()` gives the transcript so far
    (as the UI's fold.js keeps one)."""

    def __init__(self) -> None:
        self._messages: list[dict[str, Any]] = []
        self._by_id: dict[str, dict[str, Any]] = {}
        self._calls: dict[str, dict[str, Any]] = {}
        self._texts: dict[str, list[str]] = {}
        """Streamed text not yet joined, by message: a long answer is 100,000 deltas, joined once."""

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "TEXT_MESSAGE_START":
            message = {"id": event["messageId"], "role": event.get("role", "assistant"), "content": ""}
            if message["id"] not in self._by_id:
                self._add(message)
        elif kind == "TEXT_MESSAGE_CONTENT":
            message_id = event["messageId"]
            pieces = self._texts.get(message_id)
            if pieces is None:
                pieces = self._texts[message_id] = [self._by_id[message_id]["content"]]
            pieces.append(event["delta"])
        elif kind == "TOOL_CALL_START":
            parent_id = event.get("parentMessageId")
            parent = self._by_id.get(parent_id) if parent_id else None
            if parent is None:
                parent = self._add({"id": parent_id or event["toolCallId"], "role": "assistant", "content": ""})
            call = {
                "id": event["toolCallId"],
                "type": "function",
                "function": {"name": event["toolCallName"], "arguments": ""},
            }
            parent.setdefault("toolCalls", []).append(call)
            self._calls[call["id"]] = call
        elif kind == "TOOL_CALL_ARGS":
            self._calls[event["toolCallId"]]["function"]["arguments"] += event["delta"]
        elif kind == "TOOL_CALL_RESULT":
            self._add(
                {
                    "id": event["messageId"],
                    "role": "tool",
                    "content": event["content"],
                    "toolCallId": event["toolCallId"],
                }
            )
        elif kind == "CUSTOM" and event.get("name") == ATTACHMENTS:
            message = self._by_id.get(event["value"]["messageId"])
            if message is not None:
                message["attachments"] = event["value"]["attachments"]
        elif kind == "MESSAGES_SNAPSHOT":
            self._messages = [dict(m) for m in event["messages"]]
            self._by_id = {m["id"]: m for m in self._messages}
            self._calls = {c["id"]: c for m in self._messages for c in m.get("toolCalls", [])}
            self._texts = {}

    def messages(self) -> list[dict[str, Any]]:
        """The transcript so far, as new dicts (applying more events later does not change them)."""
        for message_id, pieces in self._texts.items():
            joined = "".join(pieces)
            self._by_id[message_id]["content"] = joined
            pieces[:] = [joined]
        return [
            {**m, "toolCalls": [{**c, "function": dict(c["function"])} for c in m["toolCalls"]]}
            if "toolCalls" in m
            else dict(m)
            for m in self._messages
        ]

    def _add(self, message: dict[str, Any]) -> dict[str, Any]:
        self._messages.append(message)
        self._by_id[message["id"]] = message
        return message


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


def with_log_ids(stored: list[dict[str, Any]], logged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored history's messages (freshly rendered) under the ids of the log's fold.

    Invariant 3 pairs them up: a tool message by its call, an assistant message with tool calls by its
    first call, and the other messages with text or attachments (the user's, the assistant's) in order,
    checked by both. A message the log does not show (a system prompt) keeps the id it was rendered with.
    """
    results: dict[str, str] = {}
    callers: dict[str, str] = {}
    said: list[dict[str, Any]] = []
    for message in logged:
        if message["role"] == "tool":
            results[message["toolCallId"]] = message["id"]
        elif message.get("toolCalls"):
            callers[message["toolCalls"][0]["id"]] = message["id"]
        elif message.get("content") or message.get("attachments"):
            said.append(message)
    out, next_said = [], 0
    for message in stored:
        log_id = None
        if message["role"] == "tool":
            log_id = results.get(message.get("toolCallId", ""))
        elif message.get("toolCalls"):
            log_id = callers.get(message["toolCalls"][0]["id"])
        elif next_said < len(said) and _said(said[next_said]) == _said(message):
            log_id = said[next_said]["id"]
            next_said += 1
        out.append({**message, "id": log_id} if log_id is not None else message)
    return out


def _said(message: dict[str, Any]) -> tuple[Any, ...]:
    return message["role"], message.get("content"), message.get("attachments")


def comparable(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages without their ids, with empty text dropped and tool arguments parsed.

    The results of one tool batch stream in the order the calls finish but are stored in the order
    they were made, so consecutive tool messages are compared in toolCallId order.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"role": message["role"]}
        if message.get("content"):
            item["content"] = message["content"]
        if message.get("toolCalls"):
            item["toolCalls"] = [
                {"id": c["id"], "name": c["function"]["name"], "args": _parse(c["function"]["arguments"])}
                for c in message["toolCalls"]
            ]
        if message.get("toolCallId"):
            item["toolCallId"] = message["toolCallId"]
        if message.get("attachments"):
            item["attachments"] = message["attachments"]
        if len(item) > 1:
            out.append(item)
    return _sort_tool_runs(out)


def _sort_tool_runs(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    for message in [*messages, {"role": "end"}]:
        if message["role"] == "tool":
            batch.append(message)
            continue
        out += sorted(batch, key=lambda m: m["toolCallId"])
        batch = []
        if message["role"] != "end":
            out.append(message)
    return out


def _parse(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments else {}
    except ValueError:
        return arguments
