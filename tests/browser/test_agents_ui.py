"""Several agents in the browser: a new thread can be given any of the server's agents, and each
thread says which one it has."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import expect

from tether.client import TetherClient

from .ui import ChatPage, settled_runs

pytestmark = pytest.mark.sqlite_only  # the UI against one engine; the engines are tested beside

AGENTS = ("first=tests.browser.agents:first", "second=tests.browser.agents:second")


async def test_a_new_thread_gets_the_agent_chosen(start_server, context):
    server = start_server(agents=AGENTS)
    chat = await ChatPage(await context.new_page(), server.url).open()
    picker = chat.page.get_by_test_id("agent-select")
    await expect(picker).to_be_visible()
    await expect(picker).to_have_value("first")  # the server's default
    assert await picker.locator("option").all_inner_texts() == ["first", "second"]

    await picker.select_option("second")
    thread_id = await chat.new_thread()
    await chat.send("which one are you?")
    await chat.assert_last_answer("second heard: which one are you?")
    row = chat.page.locator(f"#thread-list li[data-thread-id={thread_id}]")
    await expect(row.get_by_test_id("thread-agent")).to_have_text("second")
    await expect(chat.page.get_by_test_id("chat-agent")).to_have_text("second")
    async with TetherClient(server.url) as client:
        assert (await client.get_thread(thread_id))["agent"] == "second"
    await settled_runs(server.url, thread_id, 1)

    # The choice stays for the next thread; the default is one choice away.
    await expect(picker).to_have_value("second")
    await picker.select_option("first")
    other = await chat.new_thread()
    await chat.send("and you?")
    await chat.assert_last_answer("first heard: and you?")
    await expect(chat.page.get_by_test_id("chat-agent")).to_have_text("first")

    # After a reload, each thread still says its agent: from the list, and from the thread itself.
    await chat.open(thread_id)
    await chat.page.reload()
    await expect(chat.page.get_by_test_id("chat-agent")).to_have_text("second")
    other_row = chat.page.locator(f"#thread-list li[data-thread-id={other}]")
    await expect(other_row.get_by_test_id("thread-agent")).to_have_text("first")


async def test_the_first_screen_starts_a_thread_with_the_agent_chosen(start_server, context):
    server = start_server(agents=AGENTS)
    chat = await ChatPage(await context.new_page(), server.url).open()
    await chat.page.get_by_test_id("agent-select").select_option("second")
    await chat.send("who answers?")
    await chat.assert_last_answer("second heard: who answers?")
    await expect(chat.page.get_by_test_id("chat-agent")).to_have_text("second")
    async with TetherClient(server.url) as client:
        thread = await client.get_thread(chat.thread_id)
    assert (thread["agent"], thread["title"]) == ("second", "who answers?")
    await settled_runs(server.url, chat.thread_id, 1)


async def test_a_thread_made_elsewhere_shows_its_agent(start_server, context):
    server = start_server(agents=AGENTS)
    chat = await ChatPage(await context.new_page(), server.url).open()
    await expect(chat.page.get_by_test_id("agent-select")).to_be_visible()
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/v1/threads", json={"title": "from the API", "agent": "second"})
        assert response.status_code == 201, response.text
        thread_id = response.json()["id"]
        unknown = await http.post("/v1/threads", json={"agent": "third"})
        assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_agent"
    row = chat.page.locator(f"#thread-list li[data-thread-id={thread_id}]")
    await expect(row).to_contain_text("from the API")
    await expect(row.get_by_test_id("thread-agent")).to_have_text("second")


async def test_one_agent_needs_no_picker(server, context):
    chat = await ChatPage(await context.new_page(), server.url).open()
    thread_id = await chat.new_thread()
    await chat.send("/tools 1")
    await settled_runs(server.url, thread_id, 1)
    async with TetherClient(server.url) as client:
        assert (await client.get_thread(thread_id))["agent"] == "demo"
    await expect(chat.page.get_by_test_id("agent-select")).to_be_hidden()
    await expect(chat.page.get_by_test_id("chat-agent")).to_be_hidden()
    await expect(chat.page.get_by_test_id("thread-agent")).to_be_hidden()
