"""Edit and branch in the browser: editing an earlier message answers the edited one in a new thread
forked from just before it, linked both ways; the original thread stays as it was."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tether.client import TetherClient
from tether.transcript import comparable

from .ui import ChatPage, new_chat, settled_runs

pytestmark = pytest.mark.sqlite_only  # the UI against one engine; the engines are tested beside


async def test_editing_a_message_answers_it_in_a_branch(server, context):
    chat = await new_chat(context, server.url)
    parent_id = chat.thread_id
    for text in ("/stream 3", "/tools 1", "/stream 2"):
        await chat.send(text)
        await chat.wait_until_idle()
    await settled_runs(server.url, parent_id, 3)
    async with TetherClient(server.url) as client:
        before = await client.get_thread(parent_id)

    edits = chat.page.get_by_test_id("edit-message")
    await expect(edits).to_have_count(3)
    await edits.nth(1).click()
    box = chat.page.get_by_test_id("edit-text")
    await expect(box).to_be_focused()
    await expect(box).to_have_value("/tools 1")
    await box.press("Escape")  # cancelled: nothing changes, nothing is stopped
    await expect(box).to_have_count(0)
    await edits.nth(1).click()
    await box.fill("/stream 4")
    await box.press("Enter")

    await chat.page.wait_for_function("id => location.hash !== `#/t/${id}`", arg=parent_id)
    branch_id = chat.thread_id
    await settled_runs(server.url, branch_id, 1)
    await chat.wait_until_idle()
    link = chat.page.get_by_test_id("branch-of")
    await expect(link).to_contain_text("/stream 3")  # the parent's title, its first message
    async with TetherClient(server.url) as client:
        branch = await client.get_thread(branch_id)
        assert branch["parent_thread_id"] == parent_id
        assert comparable(branch["messages"][:2]) == comparable(before["messages"][:2])
        rendered = await chat.assert_shows(branch["messages"])
        assert [text for _, text, _ in rendered] == ["/stream 3", "w1 w2 w3", "/stream 4", "w1 w2 w3 w4"]
        # The original is untouched, in the API and in its tab.
        after = await client.get_thread(parent_id)
        assert after["messages"] == before["messages"] and after["last_seq"] == before["last_seq"]

    # Across a reload, in a tab that never saw the branch made, and back to the parent by its link.
    await chat.page.reload()
    await chat.assert_shows(branch["messages"])
    fresh = await ChatPage(await context.new_page(), server.url).open(branch_id)
    await fresh.assert_shows(branch["messages"])
    await expect(fresh.page.get_by_test_id("branch-of")).to_be_visible()
    await link.click()
    await chat.page.wait_for_function("id => location.hash === `#/t/${id}`", arg=parent_id)
    await chat.assert_shows(before["messages"])
    await expect(chat.page.get_by_test_id("branch-of")).to_be_hidden()


async def test_messages_cannot_be_edited_while_a_run_is_active(server, context):
    chat = await new_chat(context, server.url, "/stream 3")
    await chat.wait_until_idle()
    await chat.send("/stream 300 ms=20")
    await expect(chat.page.locator("#stop")).to_be_visible()
    await expect(chat.page.get_by_test_id("edit-message").first).to_be_hidden()
    await chat.page.keyboard.press("Escape")
    await chat.wait_until_idle()
    await expect(chat.page.get_by_test_id("edit-message")).to_have_count(2)
    await expect(chat.page.get_by_test_id("edit-message").first).to_be_visible()
