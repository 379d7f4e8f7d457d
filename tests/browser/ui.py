"""The web UI as a test sees it: a page object over Playwright, and the transcript it renders."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from playwright.async_api import BrowserContext, Locator, Page, expect

from tether.client import TetherClient

# What the chat shows, message by message: (role, text, [(tool, result)]) with spacing normalised.
Rendered = list[tuple[str, str, list[tuple[str, str]]]]

_READ_MESSAGES = """
() => [...document.querySelectorAll('#messages > li')].map((li) => ({
  role: li.dataset.role,
  text: li.dataset.role === 'user' ? li.querySelector('.bubble').textContent : li.querySelector('.text').innerText,
  tools: [...li.querySelectorAll('.tool')].map((card) => [card.querySelector('.name').textContent,
                                                        card.querySelector('.result').textContent]),
}))
"""


def _squash(text: str) -> str:
    return " ".join(text.split())


def stored_rendering(messages: list[dict[str, Any]]) -> Rendered:
    """How the UI should draw a stored history (`GET /v1/threads/{tid}` → messages)."""
    results = {m["toolCallId"]: m["content"] for m in messages if m["role"] == "tool"}
    out: Rendered = []
    for message in messages:
        content = message.get("content") or ""
        if message["role"] == "user":
            out.append(("user", _squash(content if isinstance(content, str) else json.dumps(content)), []))
        elif message["role"] == "assistant":
            calls = message.get("toolCalls", [])
            tools = [(c["function"]["name"], _squash(results.get(c["id"], "No result yet."))) for c in calls]
            if content or tools:
                out.append(("assistant", _squash(content), sorted(tools)))
    return out


class ChatPage:
    """One browser tab on the Tether UI."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url

    async def open(self, thread_id: str | None = None) -> ChatPage:
        await self.page.goto(f"{self.base_url}/" + (f"#/t/{thread_id}" if thread_id else ""))
        if thread_id:
            await expect(self.page.locator("#delete-thread")).to_be_visible()  # the thread is open
        return self

    async def new_thread(self) -> str:
        before = await self.page.evaluate("location.hash")
        await self.page.click("#new-thread")
        # The new thread's own URL, not the one that was open before.
        opened = "before => location.hash.startsWith('#/t/') && location.hash !== before"
        await self.page.wait_for_function(opened, arg=before)
        await expect(self.page.locator("#delete-thread")).to_be_visible()
        return self.thread_id

    @property
    def thread_id(self) -> str:
        match = re.search(r"#/t/([\w-]+)$", self.page.url)
        assert match, self.page.url
        return match[1]

    async def send(self, text: str) -> None:
        await self.page.fill("#input", text)
        await self.page.press("#input", "Enter")
        await expect(self.page.locator("#input")).to_have_value("")

    async def messages(self) -> Rendered:
        items = await self.page.evaluate(_READ_MESSAGES)
        return [(i["role"], _squash(i["text"]), sorted((n, _squash(r)) for n, r in i["tools"])) for i in items]

    async def wait_for_answer_longer_than(self, characters: int) -> None:
        """Until the first assistant message has streamed more than this many characters."""
        await self.page.wait_for_function(
            "n => (document.querySelector('#messages > li.assistant .text')?.innerText || '').length > n",
            arg=characters,
        )

    async def assert_shows(self, messages: list[dict[str, Any]]) -> Rendered:
        """The chat comes to show exactly this stored history (the feed may say "idle" a moment
        before the stream's last events are drawn, so this waits for them)."""
        return await eventually(self.messages, stored_rendering(messages))

    async def assert_last_answer(self, text: str) -> None:
        """The last assistant message comes to read exactly `text` (spacing aside)."""
        await eventually(self.last_assistant_text, text)

    async def last_assistant_text(self) -> str:
        texts = await self.page.locator("#messages > li.assistant .text").all_inner_texts()
        return _squash(texts[-1]) if texts else ""

    async def wait_until_idle(self, within_ms: float = 30_000) -> None:
        """Until the open thread has no active run (Send is offered again)."""
        await expect(self.page.locator("#send")).to_be_visible(timeout=within_ms)
        await expect(self.page.locator("#chat-status")).to_have_text("", timeout=within_ms)

    def approval(self, index: int = 0) -> Locator:
        return self.page.locator("[data-testid=approval]").nth(index)


async def new_chat(context: BrowserContext, base_url: str, message: str | None = None) -> ChatPage:
    """A new tab on the UI with a new thread open, and `message` sent to it."""
    chat = await ChatPage(await context.new_page(), base_url).open()
    await chat.new_thread()
    if message is not None:
        await chat.send(message)
    return chat


# The focused element if it does not show its focus (no outline: the UI's own, or the browser's ring), else null.
_UNSEEN_FOCUS = """() => {
  const element = document.activeElement;
  const style = getComputedStyle(element);
  const shown = element === document.body || (style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0);
  return shown ? null : element.outerHTML.slice(0, 200);
}"""


async def tab_to(page: Page, target: Locator, key: str = "Tab", most: int = 40) -> None:
    """Press Tab (or Shift+Tab) until `target` has the focus; every element on the way shows its focus."""
    for _ in range(most):
        await page.keyboard.press(key)
        unseen = await page.evaluate(_UNSEEN_FOCUS)
        assert unseen is None, f"the focus is not shown on {unseen}"
        if await target.evaluate("element => element === document.activeElement"):
            return
    raise AssertionError(f"{key} never reached {target}")


async def eventually(read: Callable[[], Awaitable[Any]], expected: Any, within: float = 10) -> Any:
    """Poll `read()` until it returns `expected`; assert on the last value read if it never does."""
    deadline = time.monotonic() + within
    value = await read()
    for _ in itertools.count():
        if value == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
        value = await read()
    assert value == expected
    return value


async def settled_runs(
    base_url: str, thread_id: str, count: int, within: float = 60, token: str | None = None
) -> list[dict[str, Any]]:
    """The thread's runs, once there are `count` of them and none is active."""
    deadline = time.monotonic() + within
    async with TetherClient(base_url, token) as client:
        while True:
            runs = await client.list_runs(thread_id)
            if len(runs) >= count and all(r["status"] in ("completed", "failed", "cancelled") for r in runs):
                return runs
            if time.monotonic() > deadline:
                raise AssertionError(f"runs of {thread_id} not settled: {runs}")
            await asyncio.sleep(0.02)
