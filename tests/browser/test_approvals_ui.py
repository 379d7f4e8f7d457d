"""Approvals in the browser: the dialog comes from the server's state, so it survives reloads,
other tabs and server restarts, and a decision in one tab shows in every other."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest
from playwright.async_api import expect

from tether.client import TetherClient

from ..conftest import notes, tool_log
from .ui import ChatPage, new_chat, settled_runs

pytestmark = pytest.mark.sqlite_only  # the UI against one engine; the engines are tested beside


async def pause_on_approval(chat: ChatPage, text: str = "hello") -> None:
    await chat.send(f"/approve {text}")
    await expect(chat.approval()).to_contain_text(f'write_note({{"text":"{text}"}})')
    await expect(chat.page.locator(".tool[data-status='awaiting approval']")).to_have_count(1)
    await expect(chat.page.locator("#thread-list li[data-status=awaiting_approval]")).to_have_count(1)


async def decide(chat: ChatPage, approved: bool, reason: str = "") -> None:
    row = chat.approval()
    if reason:
        await row.locator("input.reason").fill(reason)
        await row.locator("input.reason").press("Escape")  # leaves the field; must not stop the run
    await row.get_by_role("button", name="Approve" if approved else "Deny").click()
    await expect(chat.page.locator("#approvals")).to_be_hidden()


async def assert_outcome(chat: ChatPage, data_dir: Path, note: str, approved: bool, reason: str) -> None:
    """An approved note is written once and reported; a denied one never runs, and the reason reaches the model."""
    if approved:
        await chat.assert_last_answer(f"write_note says: saved the note '{note}'")
        await expect(chat.page.locator(".tool[data-status=done]")).to_have_count(1)
        assert notes(data_dir) == [note]
        assert len(tool_log(data_dir)) == 1
    else:
        await expect(chat.page.locator(".tool[data-status=denied]")).to_have_count(1)
        assert reason in await chat.last_assistant_text()
        assert notes(data_dir) == [] and tool_log(data_dir) == []


@pytest.mark.parametrize("approved", [True, False], ids=["approve", "deny"])
async def test_the_approval_dialog_survives_a_reload(server, context, approved):
    chat = await new_chat(context, server.url)
    await pause_on_approval(chat)
    await chat.page.reload()
    await expect(chat.approval()).to_contain_text("write_note")
    await decide(chat, approved, reason="" if approved else "not today")
    await settled_runs(server.url, chat.thread_id, 1)
    await assert_outcome(chat, server.settings.data_dir, "hello", approved, "not today")
    async with TetherClient(server.url) as client:
        await chat.assert_shows((await client.get_thread(chat.thread_id))["messages"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("sig", "approved"), [(signal.SIGTERM, True), (signal.SIGKILL, False)], ids=["sigterm-approve", "sigkill-deny"]
)
async def test_the_approval_dialog_survives_a_server_restart(tether_process, context, sig, approved):
    # The page keeps its origin across the restart only if the server comes back on the same port.
    port = str(free_port())
    server = tether_process("--port", port).start()
    chat = await new_chat(context, server.url)
    await pause_on_approval(chat, "after restart")
    server.stop(sig)
    await expect(chat.page.locator("#stream-state")).to_have_text("Reconnecting…")
    restarted = tether_process("--port", port, data_dir=server.data_dir).start()
    await expect(chat.page.locator("#stream-state")).to_have_text("", timeout=15_000)
    await expect(chat.approval()).to_contain_text("after restart")
    await chat.page.reload()
    await expect(chat.approval()).to_contain_text("after restart")
    await decide(chat, approved, reason="" if approved else "not after a restart")
    await settled_runs(restarted.url, chat.thread_id, 1)
    await assert_outcome(chat, server.data_dir, "after restart", approved, "not after a restart")


async def test_two_tabs_share_runs_and_decisions(server, context):
    first = await new_chat(context, server.url)
    thread_id = first.thread_id
    second = await ChatPage(await context.new_page(), server.url).open(thread_id)

    # A run started in one tab streams in the other.
    await first.send("/stream 30 ms=20")
    await expect(second.page.locator("#chat-status")).to_have_text("running")
    await second.assert_last_answer(" ".join(f"w{i}" for i in range(1, 31)))

    # The approval shows in both; deciding in one clears it in the other.
    await pause_on_approval(first, "together")
    await expect(second.approval()).to_contain_text("together")
    await decide(second, approved=True)
    await expect(first.page.locator("#approvals")).to_be_hidden()
    await first.assert_last_answer("write_note says: saved the note 'together'")
    assert notes(server.settings.data_dir) == ["together"]
    async with TetherClient(server.url) as client:
        stored = (await client.get_thread(thread_id))["messages"]
    await first.assert_shows(stored)
    await second.assert_shows(stored)


async def test_several_pending_calls_are_decided_one_by_one(start_server, context):
    server = start_server(agents=("tests.agents:two_approvals",))
    chat = await new_chat(context, server.url)
    thread_id = chat.thread_id
    other = await ChatPage(await context.new_page(), server.url).open(thread_id)
    await chat.send("delete both")
    await expect(chat.page.locator("[data-testid=approval]")).to_have_count(2)
    await chat.approval(0).get_by_role("button", name="Approve").click()
    # The first decision is kept while the run waits for the second, here and in the other tab.
    await expect(chat.approval(0)).to_contain_text("Approved; waiting for the other calls.")
    await expect(chat.approval(1).get_by_test_id("edit-args")).to_be_focused()  # on to the next call
    await expect(other.approval(0)).to_contain_text("Approved; waiting for the other calls.")
    await other.approval(1).locator("input.reason").fill("keep b")
    await other.approval(1).get_by_role("button", name="Deny").click()
    await expect(chat.page.locator("#approvals")).to_be_hidden()
    await settled_runs(server.url, thread_id, 1)
    await chat.assert_last_answer(
        "call_a: deleted a.txt | call_b: The user denied this tool call: keep b",
    )
    await expect(chat.page.locator(".tool[data-status=denied]")).to_have_count(1)
    await expect(chat.page.locator(".tool[data-status=done]")).to_have_count(1)


async def test_approve_with_edited_arguments_checked_against_the_tool_s_schema(server, context):
    chat = await new_chat(context, server.url)
    await pause_on_approval(chat, "hello")
    row = chat.approval()
    await row.get_by_test_id("edit-args").click()
    box = row.get_by_test_id("args-text")
    await expect(box).to_be_focused()
    assert json.loads(await box.input_value()) == {"text": "hello"}
    approve = row.get_by_role("button", name="Approve")
    problem = row.get_by_test_id("args-problem")
    # Refused in the page, with the reason, before anything is sent.
    for typed, reason in (
        ('{"text": 5}', "text: must be a string"),
        ('{"text": "x", "colour": "red"}', "colour: is not an argument of this tool"),
        ("{}", "text: is required"),
        ('{"text": "x", "ms": 1.5}', "ms: must be an integer"),
        ('{"text": ', "not JSON"),
    ):
        await box.fill(typed)
        await expect(problem).to_contain_text(reason)
        await expect(approve).to_be_disabled()
    await box.press("Escape")  # inside the editor: the run is not stopped
    async with TetherClient(server.url) as client:
        [run] = await client.list_runs(chat.thread_id)
        assert run["status"] == "awaiting_approval" and run["pending_approvals"][0]["decision"] is None
    # A valid edit shows what it changes, and is what the tool gets, once.
    await box.fill('{"text": "hello, edited", "ms": 1}')
    await expect(problem).to_be_hidden()
    changes = row.get_by_test_id("args-changes").locator("li")
    await expect(changes).to_have_text(['text: "hello" → "hello, edited"', "ms: added 1"])
    await row.get_by_role("button", name="Approve with these arguments").click()
    await expect(chat.page.locator("#approvals")).to_be_hidden()
    [run] = await settled_runs(server.url, chat.thread_id, 1)
    await chat.assert_last_answer("write_note says: saved the note 'hello, edited'")
    assert notes(server.settings.data_dir) == ["hello, edited"]
    assert [entry["tool"] for entry in tool_log(server.settings.data_dir)] == ["write_note"]


async def test_always_allow_skips_the_dialog_next_time(server, context):
    chat = await new_chat(context, server.url)
    await pause_on_approval(chat, "first")
    await chat.approval().locator("input.remember").check()
    await decide(chat, approved=True)
    await settled_runs(server.url, chat.thread_id, 1)
    await chat.send("/approve second")
    await settled_runs(server.url, chat.thread_id, 2)
    await chat.assert_last_answer("write_note says: saved the note 'second'")
    assert notes(server.settings.data_dir) == ["first", "second"]
