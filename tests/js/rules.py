"""Each protocol's ordering rules, checked on every stream a test receives."""

from __future__ import annotations

from typing import Any


def check_ag_ui_run(events: list[dict[str, Any]], thread_id: str, run_id: str, *, complete: bool = True) -> None:
    """One AG-UI run: RUN_STARTED first, exactly one terminal event last, both under the client's ids;
    text messages and tool calls opened, continued and closed in order, per id, all closed at the end.
    `complete=False`: a stream the client cut off itself, which must keep the rules as far as it goes."""
    assert events, "no events"
    assert events[0]["type"] == "RUN_STARTED", events[0]
    terminals = [e for e in events if e["type"] in ("RUN_FINISHED", "RUN_ERROR")]
    if complete:
        assert len(terminals) == 1 and events[-1] is terminals[0], [e["type"] for e in events]
    else:
        assert not terminals or (len(terminals) == 1 and events[-1] is terminals[0]), [e["type"] for e in events]
    assert [e["type"] for e in events].count("RUN_STARTED") == 1
    for event in (events[0], *terminals):
        if event["type"] != "RUN_ERROR":
            assert (event["threadId"], event["runId"]) == (thread_id, run_id), event
    closed = complete or bool(terminals)
    _nested(events, "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "messageId", closed)
    calls = _nested(events, "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "toolCallId", closed)
    for index, event in enumerate(events):
        if event["type"] == "TOOL_CALL_RESULT" and event["toolCallId"] in calls:
            assert calls[event["toolCallId"]] < index, f"result before the end of call {event['toolCallId']}"


def check_ui_message_stream(chunks: list[dict[str, Any]], *, complete: bool = True) -> None:
    """One UI message stream: `start` first, exactly one `finish` or `error` last; steps not nested;
    text and reasoning parts started, continued and ended per id; tool inputs before their outputs.
    `complete=False`: a stream the client cut off itself, which must keep the rules as far as it goes."""
    assert chunks, "no chunks"
    kinds = [c["type"] for c in chunks]
    assert kinds[0] == "start" and kinds.count("start") == 1, kinds
    ends = [k for k in kinds if k in ("finish", "error")]
    if complete or ends:
        assert len(ends) == 1 and kinds[-1] in ("finish", "error"), kinds
    in_step = False
    for kind in kinds:
        if kind == "start-step":
            assert not in_step, "start-step inside a step"
            in_step = True
        elif kind == "finish-step":
            assert in_step, "finish-step outside a step"
            in_step = False
    closed = complete or bool(ends)
    assert not (closed and in_step), "a step is still open at the end"
    for part in ("text", "reasoning"):
        _nested(chunks, f"{part}-start", f"{part}-delta", f"{part}-end", "id", closed)
    inputs: dict[str, str] = {}
    for chunk in chunks:
        kind, call = chunk["type"], chunk.get("toolCallId")
        if kind == "tool-input-start":
            assert call not in inputs, f"tool call {call} started twice"
            inputs[call] = "streaming"
        elif kind == "tool-input-delta":
            assert inputs.get(call) == "streaming", f"input delta of {call} outside its input"
        elif kind == "tool-input-available":
            assert inputs.get(call) == "streaming", f"input of {call} not started"
            inputs[call] = "available"
        elif kind in ("tool-approval-request", "tool-output-available", "tool-output-denied", "tool-output-error"):
            # a continuation after approval answers calls of the stream before it
            assert inputs.get(call, "available") == "available", f"{kind} of {call} before its input"


def _nested(
    items: list[dict[str, Any]], start: str, middle: str, end: str, key: str, closed: bool = True
) -> dict[str, int]:
    """Check start/middle/end per id (all ended, if `closed`); the index where each id ended."""
    open_ids: set[str] = set()
    ended: dict[str, int] = {}
    for index, item in enumerate(items):
        kind = item["type"]
        if kind == start:
            assert item[key] not in open_ids and item[key] not in ended, f"{start} {item[key]} again"
            open_ids.add(item[key])
        elif kind in (middle, end):
            assert item[key] in open_ids, f"{kind} {item[key]} outside its {start}…{end}"
            if kind == end:
                open_ids.discard(item[key])
                ended[item[key]] = index
    assert not closed or not open_ids, f"still open at the end: {sorted(open_ids)}"
    return ended


def sse_data(body: str) -> list[str]:
    """The `data:` of each frame of an SSE body (comments and ids aside)."""
    frames = [frame for frame in body.split("\n\n") if frame.strip()]
    data = ["\n".join(line[5:].lstrip(" ") for line in f.splitlines() if line.startswith("data:")) for f in frames]
    return [d for d in data if d]
