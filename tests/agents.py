"""Small agents for tests that the demo agent cannot drive (loaded with --agent tests.agents:NAME)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.tools import DeferredToolRequests


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
