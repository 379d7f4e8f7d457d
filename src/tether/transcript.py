"""Folding a thread's event log into its transcript (AG-UI messages).

Invariant 3 says folding the log from the start renders the same transcript
as the thread's stored history (`GET /v1/threads/{tid}` → `messages`). This
module is the reference fold (the web UI's JavaScript mirrors it), and
`comparable` strips what legitimately differs between the two renderings:
message ids (random per encoding) and the spacing of tool-call JSON.
"""

from __future__ import annotations

import json
from typing import Any


def fold(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply AG-UI events in order; MESSAGES_SNAPSHOT replaces everything folded so far."""
    messages: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    calls: dict[str, dict[str, Any]] = {}

    for event in events:
        kind = event["type"]
        if kind == "TEXT_MESSAGE_START":
            message = {"id": event["messageId"], "role": event.get("role", "assistant"), "content": ""}
            existing = by_id.get(message["id"])
            if existing is None:
                messages.append(message)
                by_id[message["id"]] = message
        elif kind == "TEXT_MESSAGE_CONTENT":
            by_id[event["messageId"]]["content"] += event["delta"]
        elif kind == "TOOL_CALL_START":
            parent_id = event.get("parentMessageId")
            parent = by_id.get(parent_id) if parent_id else None
            if parent is None:
                parent = {"id": parent_id or event["toolCallId"], "role": "assistant", "content": ""}
                messages.append(parent)
                by_id[parent["id"]] = parent
            call = {
                "id": event["toolCallId"],
                "type": "function",
                "function": {"name": event["toolCallName"], "arguments": ""},
            }
            parent.setdefault("toolCalls", []).append(call)
            calls[call["id"]] = call
        elif kind == "TOOL_CALL_ARGS":
            calls[event["toolCallId"]]["function"]["arguments"] += event["delta"]
        elif kind == "TOOL_CALL_RESULT":
            message = {
                "id": event["messageId"],
                "role": "tool",
                "content": event["content"],
                "toolCallId": event["toolCallId"],
            }
            messages.append(message)
            by_id[message["id"]] = message
        elif kind == "MESSAGES_SNAPSHOT":
            messages = [dict(m) for m in event["messages"]]
            by_id = {m["id"]: m for m in messages}
            calls = {c["id"]: c for m in messages for c in m.get("toolCalls", [])}
    return messages


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
