"""Agents for the browser tests: each answers with its own name, so a test sees which agent ran.

Served as `--agent NAME=tests.browser.agents:ATTRIBUTE`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel


def _answering_as(name: str) -> Callable[[list[ModelMessage], AgentInfo], AsyncIterator[str]]:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        prompts = [
            part.content
            for message in messages
            if isinstance(message, ModelRequest)
            for part in message.parts
            if isinstance(part, UserPromptPart)
        ]
        yield f"{name} heard: {prompts[-1] if prompts else ''}"

    return stream


first: Agent[None, str] = Agent(FunctionModel(stream_function=_answering_as("first")), name="first")
second: Agent[None, str] = Agent(FunctionModel(stream_function=_answering_as("second")), name="second")
