"""Export in the browser: a thread's stored history saved as JSON (exactly its messages) and as
Markdown (every message in order, with tool calls and their results)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from playwright.async_api import Page

from tether.client import TetherClient

from ..conftest import wait_for_status
from .ui import new_chat, settled_runs

pytestmark = pytest.mark.sqlite_only  # the UI against one engine; the engines are tested beside


async def export(page: Page, what: str) -> tuple[str, str]:
    """Save the open thread as `what` (Markdown or JSON): the file's name and its text."""
    await page.get_by_test_id("export").click()
    async with page.expect_download() as saving:
        await page.get_by_role("button", name=what, exact=True).click()
    download = await saving.value
    return download.suggested_filename, await asyncio.to_thread(Path(await download.path()).read_text)


async def test_a_thread_exports_as_json_and_markdown(server, context):
    chat = await new_chat(context, server.url, "/tools 2")
    await chat.wait_until_idle()
    await chat.send("/approve the *note*")
    async with TetherClient(server.url) as client:
        runs = await client.list_runs(chat.thread_id)
        paused = await wait_for_status(client, runs[-1]["id"], {"awaiting_approval"})
        await client.decide(paused["id"], {paused["pending_approvals"][0]["tool_call_id"]: {"approved": True}})
    await chat.wait_until_idle()
    await chat.send("# not a heading\nsecond line")
    await settled_runs(server.url, chat.thread_id, 3)
    await chat.wait_until_idle()
    async with TetherClient(server.url) as client:
        stored = await client.get_thread(chat.thread_id)

    name, text = await export(chat.page, "JSON")
    assert name == "tools-2.json"
    exported = json.loads(text)
    assert exported["messages"] == stored["messages"]
    assert {k: exported[k] for k in ("id", "title", "agent", "parent_thread_id")} == {
        k: stored[k] for k in ("id", "title", "agent", "parent_thread_id")
    }

    name, markdown = await export(chat.page, "Markdown")
    assert name == "tools-2.md"
    assert markdown.startswith("# /tools 2\n")
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    shown = [m for m in stored["messages"] if m["role"] in ("user", "assistant")]
    assert headings == [f"## {m['role'].capitalize()}" for m in shown]
    position = 0
    for message in stored["messages"]:  # every message's words, in the stored order
        if message["role"] == "tool":
            continue
        words = message.get("content") or ""
        if message["role"] == "user":
            words = "\n".join(f"> {line}" for line in words.splitlines())  # a user's words as typed, quoted
        for call in message.get("toolCalls", []):
            words = f"Tool call `{call['function']['name']}`"
        found = markdown.find(words, position)
        assert found >= 0, (words, markdown[position:])
        position = found
    results = [m["content"] for m in stored["messages"] if m["role"] == "tool"]
    assert all(f"```\n{result}\n```" in markdown for result in results)
    assert "> # not a heading\n> second line" in markdown
