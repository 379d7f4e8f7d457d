"""The offline demo agent: a scripted model that streams and calls real tools.

It needs no API key, and its directives make every behaviour of the server
easy to trigger from curl, the UI or a test:

    /stream N [ms=D]   reply `w1 w2 … wN`, one word per delta, D ms apart
    /tools K [ms=D]    one batch of K parallel `sleep` calls, then a one-line reply
    /steps S [ms=D]    S model steps, each calling `sleep` once, then a one-line reply
    /approve TEXT [ms=D]  call `write_note(text=TEXT)`, which needs a human's approval (and takes D ms)
    /fail              the model raises, so the run fails

A message with attachments (images, files) is answered with what each one is, its media type and
size ("image/png, 1234 bytes"), so that attachments can be tried offline; directives are text alone.

Every tool execution appends `{"tool": name, "tool_call_id": id}` to
`demo_tools.log` in the data directory, so tests can count executions.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import (
    BinaryContent,
    FileUrl,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.tools import DeferredToolRequests

HELP = "Try /stream 20, /tools 3, /steps 3, /approve hello or /fail."

_DIRECTIVE = re.compile(r"^/(stream|tools|steps)\s+(\d+)(?:\s+ms=(\d+))?\s*$")
_APPROVE_DELAY = re.compile(r"\s+ms=(\d+)\s*$")


class DemoModelError(RuntimeError):
    """Raised by the demo model on `/fail`."""


@dataclass
class _Turn:
    """What the model knows when it is asked for its next response."""

    prompt: str
    tool_returns: list[ToolReturnPart]
    attachments: list[str]
    """What each attachment of the prompt is: "image/png, 1234 bytes" (or "… at URL")."""


def _current_turn(messages: list[ModelMessage]) -> _Turn:
    """The latest user prompt, and the tool returns that came after it."""
    returns: list[ToolReturnPart] = []
    for message in reversed(messages):
        if not isinstance(message, ModelRequest):
            continue
        prompts = [i for i, p in enumerate(message.parts) if isinstance(p, UserPromptPart)]
        # In the request that holds the prompt, the returns before it answer the turn before (a
        # cancelled approval's "not run", say): this turn's are the ones after it.
        since = prompts[-1] + 1 if prompts else 0
        returns[:0] = [p for p in message.parts[since:] if isinstance(p, ToolReturnPart)]
        if prompts:
            content = message.parts[prompts[-1]].content
            items = [content] if isinstance(content, str) else list(content)
            text = " ".join(item for item in items if isinstance(item, str))
            return _Turn(text.strip(), returns, [_described(item) for item in items if not isinstance(item, str)])
    return _Turn("", returns, [])


def _described(item: object) -> str:
    if isinstance(item, BinaryContent):
        return f"{item.media_type}, {len(item.data)} bytes"
    if isinstance(item, FileUrl):
        return f"{item.media_type} at {item.url}"
    return type(item).__name__


def _call(name: str, args: dict) -> DeltaToolCalls:
    return {0: DeltaToolCall(name=name, json_args=json.dumps(args), tool_call_id=_new_call_id())}


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:16]}"


async def _words(text: str) -> AsyncIterator[str]:
    for i, word in enumerate(text.split(" ")):
        yield word if i == 0 else f" {word}"


async def demo_stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    """The scripted model: reads the directive of the current turn and plays it."""
    turn = _current_turn(messages)
    prompt = turn.prompt
    if turn.attachments:
        said = f'You said: "{prompt}" and attached ' if prompt else "You attached "
        async for piece in _words(f"{said}{'; '.join(turn.attachments)}."):
            yield piece
        return
    if prompt == "/fail":
        raise DemoModelError("the demo model failed, as /fail asked")
    if prompt.startswith("/approve"):
        text = prompt.removeprefix("/approve").strip()
        slow = _APPROVE_DELAY.search(text)
        args: dict = {"text": text[: slow.start()].rstrip(), "ms": int(slow[1])} if slow else {"text": text}
        if not turn.tool_returns:
            yield _call("write_note", args)
        else:
            async for piece in _words(f"write_note says: {turn.tool_returns[-1].model_response_str()}"):
                yield piece
        return
    match = _DIRECTIVE.match(prompt)
    if match is None:
        async for piece in _words(f'You said: "{prompt}". This is the offline demo agent. {HELP}'):
            yield piece
        return
    kind, count, ms = match[1], int(match[2]), int(match[3] or 0)
    if kind == "stream":
        for i in range(1, count + 1):
            if ms and i > 1:
                await asyncio.sleep(ms / 1000)
            yield f"w{i}" if i == 1 else f" w{i}"
    elif kind == "tools":
        if not turn.tool_returns and count > 0:
            yield {
                i: DeltaToolCall(name="sleep", json_args=json.dumps({"ms": ms}), tool_call_id=_new_call_id())
                for i in range(count)
            }
        else:
            async for piece in _words(f"Ran {len(turn.tool_returns)} sleep calls in parallel."):
                yield piece
    else:
        if len(turn.tool_returns) < count:
            yield _call("sleep", {"ms": ms})
        else:
            async for piece in _words(f"Finished {count} steps."):
                yield piece


async def demo_request(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """The same script for non-streamed requests: gathers the streamed pieces into one response."""
    text: list[str] = []
    calls: list[ToolCallPart] = []
    async for piece in demo_stream(messages, info):
        if isinstance(piece, str):
            text.append(piece)
        else:
            calls += [
                ToolCallPart(c.name or "", c.json_args, tool_call_id=c.tool_call_id or _new_call_id())
                for c in piece.values()
            ]
    parts: list[TextPart | ToolCallPart] = [TextPart("".join(text))] if text else []
    return ModelResponse(parts=[*parts, *calls])


def build_demo_agent(data_dir: Path) -> Agent[None, str | DeferredToolRequests]:
    """The demo agent, logging its tool executions to `data_dir/demo_tools.log`."""
    tools_log = data_dir / "demo_tools.log"
    notes = data_dir / "notes.txt"

    def record(ctx: RunContext[None], tool: str) -> None:
        with tools_log.open("a") as f:
            f.write(json.dumps({"tool": tool, "tool_call_id": ctx.tool_call_id}) + "\n")

    agent: Agent[None, str | DeferredToolRequests] = Agent(
        FunctionModel(demo_request, stream_function=demo_stream, model_name="tether-demo"),
        output_type=[str, DeferredToolRequests],
        name="tether-demo",
    )

    @agent.tool(metadata={"idempotent": True})
    async def sleep(ctx: RunContext[None], ms: int) -> str:
        """Wait `ms` milliseconds. Idempotent: after a crash mid-call, Tether runs it again."""
        record(ctx, "sleep")
        await asyncio.sleep(ms / 1000)
        return f"slept {ms} ms"

    @agent.tool(requires_approval=True)
    async def write_note(ctx: RunContext[None], text: str, ms: int = 0) -> str:
        """Append a line to notes.txt in the data directory, after `ms` milliseconds (needs approval).

        Not idempotent: after a crash mid-call it is not run again; the model is told the outcome is unknown.
        """
        record(ctx, "write_note")
        await asyncio.sleep(ms / 1000)
        with notes.open("a") as f:
            f.write(text + "\n")
        return f"saved the note {text!r}"

    return agent
