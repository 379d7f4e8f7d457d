"""The rest of the UI: the live thread list, untrusted Markdown, the token prompt, small screens
and the keyboard."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tether.client import TetherClient

from .ui import ChatPage, new_chat, settled_runs

pytestmark = pytest.mark.sqlite_only  # the UI against one engine; the engines are tested beside


async def test_the_thread_list_follows_the_api_live(server, context):
    chat = ChatPage(await context.new_page(), server.url)
    await chat.open()
    threads = chat.page.locator("#thread-list li")
    async with TetherClient(server.url) as client:
        busy = await client.create_thread("started elsewhere")
        await expect(threads.filter(has_text="started elsewhere")).to_have_count(1)
        await client.send(busy["id"], "/stream 200 ms=10")
        await expect(chat.page.locator(f"li[data-thread-id={busy['id']}]")).to_have_attribute("data-status", "running")
        waiting = await client.create_thread("needs a human")
        await client.send(waiting["id"], "/approve x")
        row = chat.page.locator(f"li[data-thread-id={waiting['id']}]")
        await expect(row).to_have_attribute("data-status", "awaiting_approval")
        # Newest first: the thread that last had a run is on top.
        await expect(threads.first).to_have_attribute("data-thread-id", waiting["id"])
        failing = await client.create_thread("fails")
        await client.send(failing["id"], "/fail")
        failed = chat.page.locator(f"li[data-thread-id={failing['id']}]")
        await expect(failed).to_have_attribute("data-status", "failed")
        await settled_runs(server.url, busy["id"], 1)
        await expect(chat.page.locator(f"li[data-thread-id={busy['id']}]")).to_have_attribute("data-status", "idle")

        # Rename and delete from the UI; the API sees both.
        await row.click()
        await chat.page.click("#chat-title")
        await chat.page.keyboard.press("ControlOrMeta+a")
        await chat.page.keyboard.type("renamed in the UI")
        await chat.page.keyboard.press("Enter")
        await expect(row).to_contain_text("renamed in the UI")
        assert (await client.get_thread(waiting["id"]))["title"] == "renamed in the UI"
        chat.page.once("dialog", lambda dialog: dialog.accept())
        await chat.page.click("#delete-thread")
        await expect(row).to_have_count(0)
        await expect(chat.page.locator("#empty")).to_be_visible()
        assert waiting["id"] not in [t["id"] for t in await client.list_threads()]


async def test_the_first_screen_takes_a_message_at_once(server, context):
    chat = await ChatPage(await context.new_page(), server.url).open()
    await expect(chat.page.locator("#empty")).to_be_visible()
    await expect(chat.page.locator("#input")).to_be_focused()  # no click needed before typing
    await chat.page.keyboard.press("Enter")  # nothing typed: nothing is created
    await chat.page.keyboard.type("/stream 5")
    await chat.page.keyboard.press("Enter")
    await chat.page.keyboard.press("Enter")  # a second Enter while the thread is made sends nothing more
    await chat.page.wait_for_function("() => location.hash.startsWith('#/t/')")
    await expect(chat.page.locator("#chat-title")).to_have_text("/stream 5")
    await chat.assert_last_answer("w1 w2 w3 w4 w5")
    await expect(chat.page.locator("#input")).to_be_focused()
    [run] = await settled_runs(server.url, chat.thread_id, 1)
    assert run["input"] == "/stream 5"
    await chat.page.keyboard.type("/stream 2")
    await chat.page.keyboard.press("Enter")
    await chat.page.keyboard.press("Enter")  # in an open thread too: one message, one run
    await chat.assert_last_answer("w1 w2")
    assert [run["input"] for run in await settled_runs(server.url, chat.thread_id, 2)] == ["/stream 5", "/stream 2"]
    async with TetherClient(server.url) as client:
        [thread] = await client.list_threads()
    assert (thread["id"], thread["title"]) == (chat.thread_id, "/stream 5")
    await expect(chat.page.locator(f"#thread-list li[data-thread-id={chat.thread_id}]")).to_contain_text("/stream 5")


async def test_the_first_message_names_a_new_thread(server, context):
    chat = await new_chat(context, server.url, "/tools 1")
    await expect(chat.page.locator("#chat-title")).to_have_text("/tools 1")
    async with TetherClient(server.url) as client:
        assert (await client.get_thread(chat.thread_id))["title"] == "/tools 1"


HOSTILE = (
    'hi <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> '
    '[click me](javascript:window.__pwned=3) <a href="javascript:window.__pwned=4">or me</a> '
    '<svg onload="window.__pwned=5"></svg> <iframe src="javascript:window.__pwned=6"></iframe>'
)


async def test_a_hostile_reply_runs_nothing(server, context):
    chat = await new_chat(context, server.url)
    await chat.send(HOSTILE)  # the demo agent quotes the message back, as its own (Markdown) reply
    await settled_runs(server.url, chat.thread_id, 1)
    await expect(chat.page.locator("#messages li.assistant .text")).to_contain_text("You said")
    answer = chat.page.locator("#messages li.assistant .text").last
    for link in await answer.locator("a").all():
        await link.click()
    await chat.page.reload()
    await expect(answer).to_contain_text("You said")
    html = await answer.inner_html()
    assert not re.search(r"<script|<iframe|onerror|onload|javascript:", html, re.IGNORECASE), html
    # The user's own message is shown as text, the hostile markup visible and inert.
    await expect(chat.page.locator("#messages li.user .bubble")).to_have_text(HOSTILE)
    assert await chat.page.evaluate("window.__pwned") is None


async def test_markdown_is_rendered(server, context):
    chat = await new_chat(context, server.url, "**bold** `code` [a link](https://example.org/)")
    answer = chat.page.locator("#messages li.assistant .text")
    await expect(answer.locator("strong")).to_have_text("bold")
    await expect(answer.locator("code")).to_have_text("code")
    link = answer.locator("a")
    await expect(link).to_have_attribute("href", "https://example.org/")
    await expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")


async def test_a_token_is_asked_for_once(start_server, context):
    server = start_server(token="s3cret")
    chat = ChatPage(await context.new_page(), server.url)
    await chat.page.goto(server.url)
    dialog = chat.page.locator("#token-dialog")
    await expect(dialog).to_be_visible()
    await chat.page.fill("#token-input", "wrong")
    await chat.page.press("#token-input", "Enter")
    await expect(chat.page.locator("#token-reason")).to_contain_text("wrong bearer token")
    await chat.page.fill("#token-input", "s3cret")
    await chat.page.press("#token-input", "Enter")
    await expect(dialog).to_be_hidden()
    await chat.new_thread()
    await chat.send("/tools 1")
    await settled_runs(server.url, chat.thread_id, 1, token="s3cret")
    await chat.page.reload()
    await expect(chat.page.locator("#messages li.assistant").last).to_contain_text("Ran 1 sleep call")
    await expect(dialog).to_be_hidden()


async def test_a_phone_sized_screen_and_the_keyboard_alone(server, browser):
    context = await browser.new_context(viewport={"width": 390, "height": 800}, is_mobile=True, has_touch=True)
    page = await context.new_page()
    chat = ChatPage(page, server.url)
    await chat.open()
    sidebar = page.locator("#sidebar")
    await page.click("#show-threads")
    await expect(sidebar).to_be_in_viewport()
    await page.click("#new-thread")
    await expect(sidebar).not_to_be_in_viewport()
    await expect(page.locator("#input")).to_be_focused()
    # Shift+Enter is a new line; Enter sends; Esc stops.
    await page.keyboard.type("/stream 3000")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("ms=2")
    await expect(page.locator("#input")).to_have_value("/stream 3000\nms=2")
    await page.keyboard.press("Enter")
    await expect(page.locator("#stop")).to_be_visible()
    await expect(page.locator("#messages li.assistant .text")).to_contain_text("w20")
    await page.keyboard.press("Escape")
    [run] = await settled_runs(server.url, chat.thread_id, 1)
    assert run["status"] == "cancelled"
    assert run["input"] == "/stream 3000\nms=2"
    box = await page.locator("#composer").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    await context.close()
