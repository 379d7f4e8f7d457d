"""Accessibility in the browser: axe-core (pinned in tests/js) finds no serious or critical violation
on the main screens, in the light and the dark theme, and the chat works from the keyboard alone, its
focus always in sight."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tether.client import TetherClient

from ..conftest import IN_CI, notes, wait_for_status
from .ui import ChatPage, new_chat, tab_to

pytestmark = pytest.mark.sqlite_only  # the UI against one engine; the engines are tested beside

AXE = Path(__file__).resolve().parents[1] / "js" / "node_modules" / "axe-core" / "axe.min.js"
THEMES = {"light": "rgb(255, 255, 255)", "dark": "rgb(21, 23, 28)"}  # each theme's page background
# An answer with Markdown and highlighted code: the demo agent quotes the message back as its reply.
CODE_MESSAGE = (
    "Some **code**, a [link](https://example.org/) and a table:\n\n"
    "```python\ndef greet(name: str) -> str:\n    # a comment, and a line too long for the screen: " + "x" * 300 + "\n"
    '    return f"hello {name}" + str(42)\n```\n\n'
    "| a | b |\n|---|---|\n| 1 | 2 |\n\nend"
)


def require_axe() -> Path:
    """axe-core's browser build, installed by `make test` (`npm ci` in tests/js)."""
    if not AXE.exists():
        message = f"{AXE} is missing: run `make test` (it runs `npm ci` in tests/js)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return AXE


async def serious_violations(page: Page) -> list[str]:
    """What axe-core finds serious or critical on the page as it is now, one line per element."""
    axe = require_axe()
    # The UI's CSP (script-src 'self') refuses the inline script add_script_tag(path=...) would add,
    # so axe is served at a URL of the page's own origin instead, answered here from node_modules:
    # the page is checked as it is served, its CSP in force (bypass_csp would also let through inline
    # styles the real page never gets).
    axe_url = page.url.split("#")[0].rstrip("/") + "/test-only/axe.min.js"
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.route(axe_url, lambda route: route.fulfill(path=axe, content_type="text/javascript"))
        await page.add_script_tag(url=axe_url)
    return await page.evaluate(
        """async () => {
          const { violations } = await axe.run(document, { resultTypes: ['violations'] });
          return violations
            .filter((v) => v.impact === 'serious' || v.impact === 'critical')
            .flatMap((v) => v.nodes.map((n) => `${v.id} (${v.impact}) at ${n.target.join(' ')}: ${n.failureSummary}`));
        }"""
    )


async def assert_accessible(page: Page, screen: str) -> None:
    for scheme, background in THEMES.items():
        await page.emulate_media(color_scheme=scheme)
        assert await page.evaluate("getComputedStyle(document.documentElement).backgroundColor") == background
        found = await serious_violations(page)
        assert not found, f"{screen}, {scheme} theme:\n" + "\n".join(found)


async def test_the_main_screens_have_no_serious_axe_violation(server, context):
    require_axe()  # before the screens are set up, when it is missing
    chat = await ChatPage(await context.new_page(), server.url).open()
    await expect(chat.page.locator("#empty")).to_be_visible()
    await assert_accessible(chat.page, "the first screen")

    # A thread with answers: Markdown, highlighted code, a table, tool cards (one open), usage.
    await chat.new_thread()
    await chat.send("/tools 2")
    await chat.wait_until_idle()
    await chat.send(CODE_MESSAGE)
    await chat.wait_until_idle()
    await expect(chat.page.locator("#messages code.hljs")).to_have_count(1)
    await chat.page.locator(".tool summary").first.click()
    await assert_accessible(chat.page, "a thread with answers")

    # A failed run, with its reason and Retry.
    await chat.send("/fail")
    await expect(chat.page.locator("#run-error")).to_contain_text("demo model failed")
    await assert_accessible(chat.page, "a failed run")

    # A thread waiting for an approval, its arguments' editor open; then the call's result, too long
    # for its card (which scrolls).
    waiting = await new_chat(context, server.url, "/approve " + "a long note " * 300)
    await expect(waiting.approval()).to_be_visible()
    await waiting.approval().get_by_test_id("edit-args").click()
    await assert_accessible(waiting.page, "a thread waiting for an approval")
    await waiting.approval().get_by_role("button", name="Approve").click()
    await waiting.wait_until_idle()
    await waiting.page.locator(".tool summary").click()
    await assert_accessible(waiting.page, "a long tool result")

    # The thread list, searched.
    async with TetherClient(server.url) as client:
        for i in range(3):
            thread = await client.create_thread(f"okapi notes {i}")
            run = await client.send(thread["id"], "/stream 3")
            await wait_for_status(client, run["run_id"], {"completed"})
    await waiting.page.get_by_test_id("thread-search").fill("okapi")
    await expect(waiting.page.locator("#thread-list li")).to_have_count(3)
    await assert_accessible(waiting.page, "the thread list, searched")
    await waiting.page.get_by_test_id("thread-search").fill("no such word")
    await expect(waiting.page.get_by_test_id("search-state")).to_have_text("No thread matches.")
    await assert_accessible(waiting.page, "a search that finds nothing")


async def test_the_sign_in_screen_has_no_serious_axe_violation(start_server, context):
    require_axe()
    server = start_server(token="s3cret")
    page = await context.new_page()
    await page.goto(server.url)
    await expect(page.locator("#token-dialog")).to_be_visible()
    await assert_accessible(page, "the sign-in dialog")
    await page.fill("#token-input", "s3cret")
    await page.press("#token-input", "Enter")
    await expect(page.get_by_test_id("signed-in-as")).to_have_text("Signed in")
    await assert_accessible(page, "signed in")


async def test_the_keyboard_alone_sends_steers_stops_approves_denies_and_switches_threads(server, context):
    page = await context.new_page()
    chat = await ChatPage(page, server.url).open()
    box = page.locator("#input")
    messages = page.locator("#messages")
    await expect(box).to_be_focused()

    # Send, with the Send button, from the first screen: the thread is made and the run starts.
    await page.keyboard.type("/steps 3 ms=400")
    await tab_to(page, page.locator("#send"))
    await page.keyboard.press("Enter")
    await expect(page.locator("#steer")).to_be_visible()
    first = chat.thread_id
    await expect(box).to_be_focused()

    # Steer, with the Steer button, while the run is under way.
    await page.keyboard.type("and then say goodbye")
    await tab_to(page, page.locator("#steer"))
    await page.keyboard.press("Enter")
    await expect(messages.locator("li.user .bubble").last).to_have_text("and then say goodbye")
    await chat.wait_until_idle()
    await expect(box).to_be_focused()  # the Steer button went away with the run; the focus did not

    # Stop, with the Stop button.
    await page.keyboard.type("/stream 3000 ms=2")
    await page.keyboard.press("Enter")
    await expect(messages.locator("li.assistant").last).to_contain_text("w20")
    await tab_to(page, page.locator("#stop"))
    await page.keyboard.press("Enter")
    await expect(page.locator("#run-error")).to_contain_text("Stopped")
    await expect(box).to_be_focused()

    # Approve: the panel is just before the message box.
    await page.keyboard.type("/approve yes")
    await page.keyboard.press("Enter")
    await tab_to(page, chat.approval().get_by_role("button", name="Approve"), "Shift+Tab")
    await page.keyboard.press("Enter")
    await chat.assert_last_answer("write_note says: saved the note 'yes'")
    await expect(box).to_be_focused()

    # Deny, with a reason.
    await page.keyboard.type("/approve no")
    await page.keyboard.press("Enter")
    await tab_to(page, chat.approval().get_by_role("textbox", name="Reason for a denial"), "Shift+Tab")
    await page.keyboard.type("not now")
    await page.keyboard.press("Escape")  # in the reason, Esc does not stop the run
    await tab_to(page, chat.approval().get_by_role("button", name="Deny"))
    await page.keyboard.press("Enter")
    await expect(page.locator(".tool[data-status=denied]")).to_have_count(1)
    await expect(messages.locator("li.assistant").last).to_contain_text("not now")
    await expect(box).to_be_focused()
    assert notes(server.settings.data_dir) == ["yes"]

    # Switch threads: a new one, then back to the first from the list, and on to the second.
    await tab_to(page, page.get_by_role("button", name="New thread"))
    await page.keyboard.press("Enter")
    another = "before => location.hash.startsWith('#/t/') && location.hash !== before"
    await page.wait_for_function(another, arg=f"#/t/{first}")
    second = chat.thread_id
    await expect(box).to_be_focused()
    await page.keyboard.type("/stream 2")
    await page.keyboard.press("Enter")
    await chat.assert_last_answer("w1 w2")
    for thread_id, answer in [(first, "no"), (second, "w1 w2")]:
        link = page.locator(f"#thread-list li[data-thread-id={thread_id}] a")
        await tab_to(page, link)
        await page.keyboard.press("Enter")
        await expect(link).to_have_attribute("aria-current", "page")
        await expect(messages.locator("li.assistant").last).to_contain_text(answer)
        await expect(link).to_be_focused()  # still there to go on from
