"""Small agents for tests that the demo agent cannot drive (loaded with --agent tests.agents:NAME)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic_ai import Agent, ModelRetry, RunContext
from pydantic_ai.messages import BinaryContent, ModelMessage, ModelRequest, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.tools import DeferredToolRequests

from tether import RunInfo, ServedAgent


async def _two_approvals(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    returns = [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart)]
    if not returns:
        yield {
            0: DeltaToolCall(name="delete_file", json_args=json.dumps({"path": "a.txt"}), tool_call_id="call_a"),
            1: DeltaToolCall(name="delete_file", json_args=json.dumps({"path": "b.txt"}), tool_call_id="call_b"),
        }
    else:
        yield " | ".join(f"{r.tool_call_id}: {r.model_response_str()}" for r in returns)


two_approvals: Agent[None, str | DeferredToolRequests] = Agent(
    FunctionModel(stream_function=_two_approvals), output_type=[str, DeferredToolRequests]
)


@two_approvals.tool_plain(requires_approval=True)
def delete_file(path: str) -> str:
    """Pretend to delete a file."""
    return f"deleted {path}"


# An agent with deps, as most real agents have: its tools read who asks, and where, from `ctx.deps`.
# The factories log each call to $TETHER_TEST_DEPS_LOG (one JSON line), so that a test sees when
# (and in which process) deps were made.


@dataclass
class Caller:
    user: str | None
    thread_id: str
    run_id: str
    metadata: dict[str, Any]
    execution: str
    pool: str | None


def _log_deps(info: RunInfo, how: str) -> None:
    path = os.environ.get("TETHER_TEST_DEPS_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            entry = {"how": how, "agent": info.agent, "run_id": info.run_id, "execution": info.execution}
            log.write(json.dumps(entry) + "\n")


def _caller(info: RunInfo) -> Caller:
    pool = info.state["pool"] if info.state else None
    return Caller(info.user, info.thread_id, info.run_id, info.thread_metadata, info.execution, pool)


def sync_deps(info: RunInfo) -> Caller:
    _log_deps(info, "sync")
    return _caller(info)


async def async_deps(info: RunInfo) -> Caller:
    await asyncio.sleep(0)
    _log_deps(info, "async")
    return _caller(info)


def failing_deps(info: RunInfo) -> Caller:
    raise LookupError(f"no account for user {info.user!r}")


@asynccontextmanager
async def pool_lifespan() -> AsyncIterator[dict[str, str]]:
    yield {"pool": "pool-1"}


async def _who(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    """The last user message names the tools to call, in order ("who", "guarded who", "nap who"); then it
    answers with the last tool's result."""
    wanted = _last_user_text(messages).split()
    done = [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart)]
    asked = sum(1 for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, UserPromptPart))
    answered = [r for r in done if r.tool_call_id.startswith(f"t{asked}_")]
    if len(answered) < len(wanted):
        index = len(answered)
        name = {"who": "whoami", "guarded": "guarded_whoami", "nap": "nap"}[wanted[index]]
        yield {0: DeltaToolCall(name=name, json_args="{}", tool_call_id=f"t{asked}_{index}")}
    else:
        yield answered[-1].model_response_str() if answered else "nothing to do"


def _last_user_text(messages: list[ModelMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart):
                    return str(part.content)
    return ""


who_agent: Agent[Caller, str | DeferredToolRequests] = Agent(
    FunctionModel(stream_function=_who, model_name="who-model"),
    deps_type=Caller,
    output_type=[str, DeferredToolRequests],
)


def _describe(deps: Caller) -> str:
    return (
        f"user={deps.user} thread={deps.thread_id} run={deps.run_id} team={deps.metadata.get('team')} "
        f"execution={deps.execution} pool={deps.pool}"
    )


@who_agent.tool
def whoami(ctx: RunContext[Caller]) -> str:
    """Who is asking, from the run's deps."""
    return _describe(ctx.deps)


@who_agent.tool(requires_approval=True)
def guarded_whoami(ctx: RunContext[Caller]) -> str:
    """Who is asking, once a human approves."""
    return _describe(ctx.deps)


@who_agent.tool(metadata={"idempotent": True})
async def nap(ctx: RunContext[Caller]) -> str:
    """Sleep a little (safe to run again after a crash)."""
    await asyncio.sleep(0.5)
    return "rested"


served_sync = ServedAgent(who_agent, deps=sync_deps, description="Says who asks.", lifespan=pool_lifespan)
served_async = ServedAgent(who_agent, deps=async_deps)
served_failing = ServedAgent(who_agent, deps=failing_deps)


async def _served_model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    yield "answered by the served model"


served_with_model = ServedAgent(who_agent, model=FunctionModel(stream_function=_served_model, model_name="served"))


async def _attachments_seen(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    """Every attachment the model is given, in the whole history: its media type, size and digest."""
    seen = [
        f"{item.media_type}:{len(item.data)}:{hashlib.sha256(item.data).hexdigest()[:12]}"
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, UserPromptPart) and not isinstance(p.content, str)
        for item in p.content
        if isinstance(item, BinaryContent)
    ]
    yield " ".join(seen) or "no attachments"


attachments_seen: Agent[None, str] = Agent(FunctionModel(stream_function=_attachments_seen))


async def _retrying(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    """Looks the order up once; its tool asks for a retry (ModelRetry), and the model gives up."""
    returns = [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart)]
    if not returns:
        yield {0: DeltaToolCall(name="lookup_order", json_args=json.dumps({"order": "A-1"}), tool_call_id="call_1")}
    else:
        yield f"could not look it up: {returns[-1].outcome}"


retrying: Agent[None, str] = Agent(FunctionModel(stream_function=_retrying))


@retrying.tool_plain
def lookup_order(order: str) -> str:
    """Look an order up (there is none)."""
    raise ModelRetry(f"no order {order}: ask the user for its number")
