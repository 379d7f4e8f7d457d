"""The thread list in the browser: it loads a page at a time as it is scrolled, and searches titles
and messages as one types."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tether.client import TetherClient

from ..conftest import wait_for_status
from .ui import ChatPage

pytestmark = pytest.mark.sqlite_only  # the UI against one engine; the engines are tested beside


async def scroll_list_to_the_end(page: Page) -> None:
    await page.locator("#thread-list").evaluate("list => { list.scrollTop = list.scrollHeight; }")


async def test_the_list_pages_on_scroll_and_searches_as_one_types(server, context):
    async with TetherClient(server.url) as client:
        zebras = [(await client.create_thread(f"zebra {i}"))["id"] for i in range(60)]
        okapi = await client.create_thread()
        run = await client.send(okapi["id"], "have you ever seen an okapi?")
        await wait_for_status(client, run["run_id"], {"completed"})
        newest = await client.create_thread("newest")
    chat = await ChatPage(await context.new_page(), server.url).open()
    rows = chat.page.locator("#thread-list li")
    await expect(rows).to_have_count(50)  # the first page
    await expect(rows.first).to_have_attribute("data-thread-id", newest["id"])
    await scroll_list_to_the_end(chat.page)
    await expect(rows).to_have_count(62)
    await expect(rows.last).to_have_attribute("data-thread-id", zebras[0])

    # A word from inside a message, typed in part: the one thread that has it.
    search = chat.page.get_by_test_id("thread-search")
    await search.press_sequentially("oka")
    await expect(rows).to_have_count(1)
    await expect(rows).to_have_attribute("data-thread-id", okapi["id"])
    await rows.first.click()
    await expect(chat.page.locator("#messages li.user .bubble")).to_have_text("have you ever seen an okapi?")

    # Many matches: a page, then the rest as the results are scrolled.
    await search.fill("zebra")
    await expect(rows).to_have_count(50)
    await expect(rows.first).to_contain_text("zebra 59")
    await scroll_list_to_the_end(chat.page)
    await expect(rows).to_have_count(60)
    assert sorted(await rows.evaluate_all("rows => rows.map(r => r.dataset.threadId)")) == sorted(zebras)

    await search.fill("no such word")
    await expect(rows).to_have_count(0)
    await expect(chat.page.get_by_test_id("search-state")).to_have_text("No thread matches.")
    await search.fill("")
    await expect(rows.first).to_have_attribute("data-thread-id", newest["id"])
    await expect(chat.page.get_by_test_id("search-state")).to_have_text("")
