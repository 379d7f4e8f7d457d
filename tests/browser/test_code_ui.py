"""Code in answers: highlighted, each block with a Copy that copies its code exactly, and a Copy for a
whole answer's Markdown; both from the keyboard."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tether.client import TetherClient

from .ui import new_chat, tab_to

pytestmark = pytest.mark.sqlite_only  # the UI against one engine; the engines are tested beside

# What a copy must keep: a tab, spaces at a line's end, a blank line, HTML and its entities, a backslash.
PYTHON = "def f(a, b):\n\tif a < b and '<b>&amp;</b>':  \n\n        return \"ünï\\\\cödé\"  # done"
PLAIN = "plain <i>text</i>\n  indented"
# The demo agent quotes the message back as its reply, so its answer holds these two code blocks.
MESSAGE = f"Two blocks:\n\n```python\n{PYTHON}\n```\n\n```\n{PLAIN}\n```\n\nthe end"


async def test_code_is_highlighted_and_copied_exactly(server, context):
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    chat = await new_chat(context, server.url, MESSAGE)
    await chat.wait_until_idle()
    page = chat.page
    answer = page.locator("#messages li.assistant").last
    python, plain = answer.locator("pre code").nth(0), answer.locator("pre code").nth(1)
    await expect(python).to_have_class("hljs language-python")
    await expect(python.locator(".hljs-keyword").first).to_have_text("def")
    await expect(python.locator(".hljs-string").first).to_have_text("'<b>&amp;</b>'")
    await expect(plain).not_to_have_class("hljs")  # no language: left plain

    # From the message box, back to each block's Copy; the clipboard gets the code as it was written.
    copies = answer.get_by_role("button", name="Copy code")
    for index, code in ((1, PLAIN), (0, PYTHON)):
        await tab_to(page, copies.nth(index), "Shift+Tab")
        await page.keyboard.press("Enter")
        await expect(copies.nth(index)).to_have_attribute("data-copied", "Copied")
        assert await page.evaluate("navigator.clipboard.readText()") == code

    # The whole answer: its Markdown source, as stored.
    async with TetherClient(server.url) as client:
        stored = (await client.get_thread(chat.thread_id))["messages"][-1]
    assert stored["role"] == "assistant" and PYTHON in stored["content"]
    copy_answer = answer.get_by_role("button", name="Copy this answer as Markdown")
    await tab_to(page, copy_answer)
    await page.keyboard.press("Enter")
    await expect(copy_answer).to_have_attribute("data-copied", "Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == stored["content"]
    # The buttons' word is drawn by CSS: it is no part of the answer's text.
    assert "Copy" not in await answer.locator(".text").inner_text()
