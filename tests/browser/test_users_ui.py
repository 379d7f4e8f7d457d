"""Signing in and out in the browser: with a users file each person sees only their own threads,
in the list, in the feed and at a thread's URL; signing out forgets everything the last one saw."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tether.client import TetherClient

from .ui import ChatPage, settled_runs

pytestmark = pytest.mark.sqlite_only  # the UI against one engine; the engines are tested beside

TOKENS = {"alice": "alice-token-1b7e", "bob": "bob-token-93c0"}


def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.toml"
    path.write_text("".join(f'[[users]]\nid = "{user}"\ntoken = "{token}"\n\n' for user, token in TOKENS.items()))
    return path


async def sign_in(page: Page, token: str) -> None:
    """Sign in through the dialog, whose heading says how this server signs people in (/healthz)."""
    dialog = page.locator("#token-dialog")
    await expect(dialog).to_be_visible()
    heading = "Sign in with your token" if token in TOKENS.values() else "Sign in"
    await expect(page.locator("#sign-in-title")).to_have_text(heading)
    await page.fill("#token-input", token)
    await page.press("#token-input", "Enter")
    await expect(dialog).to_be_hidden()


async def start_thread(chat: ChatPage, title: str) -> str:
    """A new thread from the UI, named by its first message, with its answer in."""
    thread_id = await chat.new_thread()
    await chat.send(title)
    await expect(chat.page.locator(f"#thread-list li[data-thread-id={thread_id}]")).to_contain_text(title)
    await chat.wait_until_idle()
    return thread_id


async def listed(page: Page) -> set[str]:
    return set(await page.locator("#thread-list li").evaluate_all("items => items.map(li => li.dataset.threadId)"))


async def test_two_users_see_only_their_own_threads(start_server, new_context, tmp_path):
    server = start_server(users_file=users_file(tmp_path))
    alice = await ChatPage(await (await new_context()).new_page(), server.url).open()
    bob = await ChatPage(await (await new_context()).new_page(), server.url).open()
    await sign_in(alice.page, TOKENS["alice"])
    await sign_in(bob.page, TOKENS["bob"])
    await expect(alice.page.get_by_test_id("signed-in-as")).to_have_text("Signed in as alice")
    await expect(bob.page.get_by_test_id("signed-in-as")).to_have_text("Signed in as bob")

    alices = {await start_thread(alice, "alice's first plan")}
    bobs = {await start_thread(bob, "bob's shopping list")}
    alices.add(await start_thread(alice, "alice's second plan"))  # after bob's: the feed must not have shown his
    await expect(alice.page.locator("#thread-list li")).to_have_count(2)
    await expect(bob.page.locator("#thread-list li")).to_have_count(1)
    assert await listed(alice.page) == alices
    assert await listed(bob.page) == bobs
    await expect(alice.page.locator("#thread-list")).not_to_contain_text("bob")
    await expect(bob.page.locator("#thread-list")).not_to_contain_text("alice")
    async with TetherClient(server.url, TOKENS["alice"]) as client:
        assert {t["id"] for t in await client.list_threads()} == alices
        assert {t["user_id"] for t in await client.list_threads()} == {"alice"}

    # Another's thread, at its URL, does not exist for you.
    [alices_first] = [t for t in alices if t != alice.thread_id]
    await bob.page.goto(f"{server.url}/#/t/{alices_first}")
    await expect(bob.page.locator("#run-error")).to_contain_text("does not exist")
    await expect(bob.page.locator("#messages")).not_to_contain_text("alice")

    # After a reload, each list still comes from the server, each its own.
    await alice.page.reload()
    await expect(alice.page.locator("#thread-list li")).to_have_count(2)
    assert await listed(alice.page) == alices


async def test_sign_out_then_in_as_someone_else(start_server, context, tmp_path):
    server = start_server(users_file=users_file(tmp_path))
    async with TetherClient(server.url, TOKENS["bob"]) as client:
        bobs = {(await client.create_thread("bob's own thread"))["id"]}
    chat = await ChatPage(await context.new_page(), server.url).open()
    await sign_in(chat.page, TOKENS["alice"])
    alices = {await start_thread(chat, "alice's secret")}
    await expect(chat.page.get_by_test_id("signed-in-as")).to_contain_text("alice")

    await chat.page.get_by_test_id("sign-out").click()
    # Signed out: the token is forgotten, nothing of alice's is on the page, and the dialog asks again.
    await expect(chat.page.locator("#token-dialog")).to_be_visible()
    await expect(chat.page.locator("#sign-in-title")).to_have_text("Sign in with your token")
    await expect(chat.page.locator("#thread-list li")).to_have_count(0)
    await expect(chat.page.locator("#empty")).to_be_visible()
    await expect(chat.page.locator("#messages")).to_be_hidden()
    await expect(chat.page.get_by_test_id("signed-in-as")).to_be_hidden()
    assert await chat.page.evaluate("localStorage.getItem('tether.token')") is None
    assert await chat.page.evaluate("Object.keys(sessionStorage).filter(k => k.startsWith('tether.thread.'))") == []
    assert "#/t/" not in chat.page.url

    await sign_in(chat.page, TOKENS["bob"])
    await expect(chat.page.get_by_test_id("signed-in-as")).to_have_text("Signed in as bob")
    await expect(chat.page.locator("#thread-list li")).to_have_count(1)
    assert await listed(chat.page) == bobs
    await expect(chat.page.locator("#thread-list")).not_to_contain_text("alice")
    # The new user's feed is live: bob's new thread shows, and alice's old one stays unknown.
    bobs.add(await start_thread(chat, "bob again"))
    assert await listed(chat.page) == bobs
    [alices_thread] = alices
    await chat.page.goto(f"{server.url}/#/t/{alices_thread}")
    await expect(chat.page.locator("#run-error")).to_contain_text("does not exist")
    await expect(chat.page.locator("#messages")).not_to_contain_text("alice's secret")


async def test_a_shared_token_signs_in_without_a_name(start_server, context):
    server = start_server(token="s3cret")
    chat = await ChatPage(await context.new_page(), server.url).open()
    await sign_in(chat.page, "s3cret")
    await expect(chat.page.get_by_test_id("signed-in-as")).to_have_text("Signed in")
    thread_id = await chat.new_thread()
    await chat.send("/tools 1")
    await settled_runs(server.url, thread_id, 1, token="s3cret")
    await chat.page.get_by_test_id("sign-out").click()
    await expect(chat.page.locator("#thread-list li")).to_have_count(0)
    await sign_in(chat.page, "s3cret")
    await expect(chat.page.locator("#thread-list li")).to_have_count(1)
    await chat.open(thread_id)
    await expect(chat.page.locator("#messages li.assistant").last).to_contain_text("Ran 1 sleep call")


async def test_a_token_refused_mid_session_signs_out(start_server, context, tmp_path):
    """A token that stops working (revoked) signs the tab out: the next person to sign in there
    sees nothing the last one had open."""
    server = start_server(users_file=users_file(tmp_path))
    chat = await ChatPage(await context.new_page(), server.url).open()
    await sign_in(chat.page, TOKENS["alice"])
    await start_thread(chat, "alice's notes")
    await chat.page.evaluate("localStorage.setItem('tether.token', 'revoked')")
    await chat.page.click("#new-thread")
    await expect(chat.page.locator("#token-dialog")).to_be_visible()
    await expect(chat.page.locator("#token-reason")).to_contain_text("refused")
    await expect(chat.page.locator("#thread-list li")).to_have_count(0)
    await expect(chat.page.locator("#messages")).to_be_hidden()
    await sign_in(chat.page, TOKENS["bob"])
    await expect(chat.page.get_by_test_id("signed-in-as")).to_have_text("Signed in as bob")
    await expect(chat.page.locator("#empty")).to_be_visible()
    await expect(chat.page.locator("#thread-list")).not_to_contain_text("alice")
    async with TetherClient(server.url, TOKENS["bob"]) as client:
        assert await client.list_threads() == []  # the click that met the refusal created nothing


async def test_signing_out_in_one_tab_signs_out_the_others(start_server, context, tmp_path):
    server = start_server(users_file=users_file(tmp_path))
    first = await ChatPage(await context.new_page(), server.url).open()
    await sign_in(first.page, TOKENS["alice"])
    thread_id = await start_thread(first, "alice's open thread")
    second = await ChatPage(await context.new_page(), server.url).open(thread_id)  # the saved token: no dialog
    await expect(second.page.locator("#messages li.assistant")).to_have_count(1)
    await first.page.get_by_test_id("sign-out").click()
    await expect(second.page.locator("#token-dialog")).to_be_visible()
    await expect(second.page.locator("#thread-list li")).to_have_count(0)
    await expect(second.page.locator("#messages")).to_be_hidden()
    # Signing in again in one tab signs in the others.
    await sign_in(first.page, TOKENS["alice"])
    await expect(second.page.locator("#token-dialog")).to_be_hidden()
    await expect(second.page.locator("#thread-list li")).to_have_count(1)


async def test_no_auth_shows_no_account(server, context):
    chat = await ChatPage(await context.new_page(), server.url).open()
    await expect(chat.page.locator("#account")).to_have_attribute("data-auth", "none")
    await expect(chat.page.get_by_test_id("signed-in-as")).to_be_hidden()
    await expect(chat.page.get_by_test_id("sign-out")).to_be_hidden()
