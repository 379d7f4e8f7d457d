"""Branches: a thread's history as it was just before one of its user messages, for a fork to go on from."""

from __future__ import annotations

from dataclasses import replace

from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart


def history_before(history: list[ModelMessage], user_message: int) -> list[ModelMessage]:
    """The history before its `user_message`-th user prompt (0: the first).

    The request that holds the prompt keeps what comes before it in that request (the returns of the
    tool calls just made, a system prompt): without them the history would not be one a model takes.
    """
    seen = 0
    for index, message in enumerate(history):
        if not isinstance(message, ModelRequest):
            continue
        for position, part in enumerate(message.parts):
            if not isinstance(part, UserPromptPart):
                continue
            if seen == user_message:
                kept = message.parts[:position]
                return [*history[:index], *([replace(message, parts=kept)] if kept else [])]
            seen += 1
    raise ValueError(f"the history has {seen} user prompts, so none is number {user_message + 1}")
