"""Usage in the browser: under each answer, the model, what its run used and how long it took, equal to
the stored run's; the thread's total in its header; the same after a reload and in a new tab."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tether.client import TetherClient

from .ui import ChatPage, new_chat, settled_runs

pytestmark = pytest.mark.sqlite_only  # the UI against one engine; the engines are tested beside


def expected_line(usage: dict) -> re.Pattern[str]:
    """The usage line of a run: its model, requests and tokens, then how long the run took."""
    requests = f"{usage['requests']} request{'' if usage['requests'] == 1 else 's'}"
    said = f"{usage['model']} · {requests} · {usage['input_tokens']} in + {usage['output_tokens']} out tokens · "
    return re.compile(f"^{re.escape(said)}" + r"(\d+ ms|\d+\.\d s)$")


async def test_usage_is_shown_under_each_answer_and_in_total(server, context):
    chat = await new_chat(context, server.url, "/tools 2")
    await chat.wait_until_idle()
    await chat.send("/stream 3")
    await chat.wait_until_idle()
    runs = await settled_runs(server.url, chat.thread_id, 2)
    lines = chat.page.get_by_test_id("usage")
    await expect(lines).to_have_count(2)
    async with TetherClient(server.url) as client:
        stored = [(await client.get_run(run["id"]))["usage"] for run in runs]
    for line, usage in zip(await lines.all(), stored, strict=True):
        await expect(line).to_have_text(expected_line(usage))
    # Under the answer its run gave: the last assistant message of the run (the tool calls' is another).
    answers = chat.page.locator("#messages > li.assistant", has=chat.page.get_by_test_id("usage"))
    await expect(answers.locator(".text")).to_have_text(["Ran 2 sleep calls in parallel.", "w1 w2 w3"])
    requests = sum(r["usage"]["requests"] for r in runs)
    tokens = sum(r["usage"]["total_tokens"] for r in runs)
    total = chat.page.get_by_test_id("thread-usage")
    await expect(total).to_have_text(f"2 runs · {requests} requests · {tokens} tokens")

    await chat.page.reload()
    await expect(lines).to_have_count(2)
    await expect(total).to_have_text(f"2 runs · {requests} requests · {tokens} tokens")
    fresh = await ChatPage(await context.new_page(), server.url).open(chat.thread_id)
    await expect(fresh.page.get_by_test_id("usage")).to_have_count(2)
    await expect(fresh.page.get_by_test_id("usage").last).to_have_text(expected_line(stored[1]))
    await expect(fresh.page.get_by_test_id("thread-usage")).to_have_text(
        f"2 runs · {requests} requests · {tokens} tokens"
    )
