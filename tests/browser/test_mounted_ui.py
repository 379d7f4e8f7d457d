"""The UI of a Tether app mounted under a prefix inside another app (`host.mount("/chat", tether)`):
every URL it uses is relative to the page, so it works at /chat/ as it does at /."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from playwright.async_api import expect

import tether
from tether.client import TetherClient
from tether.config import Settings

from ..conftest import ServerThread, host_of
from .ui import ChatPage

pytestmark = pytest.mark.sqlite_only  # the UI against one engine; the engines are tested beside

TOKEN = "mounted-s3cret"


def host_app(settings: Settings) -> FastAPI:
    """Someone else's app, with Tether mounted at /chat and started in the host's lifespan."""
    host = host_of(tether.create_app(settings))

    @host.get("/")
    async def home() -> dict[str, str]:
        return {"page": "the host's own"}

    return host


@pytest.fixture
def host(tmp_path: Path) -> Iterator[ServerThread]:
    settings = Settings(data_dir=tmp_path / "data", token=TOKEN)
    served = ServerThread(settings, app=host_app(settings)).start()
    yield served
    served.stop()


async def test_the_ui_works_under_a_prefix(host, context):
    chat_url = f"{host.url}/chat"
    async with TetherClient(chat_url, TOKEN) as client:
        made = await client.create_thread("made through the API")
    async with httpx.AsyncClient(base_url=host.url) as http:
        assert (await http.get("/")).json() == {"page": "the host's own"}
        refused = await http.get("/chat/v1/threads")  # the prefix does not get around the token
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"

    page = await context.new_page()
    chat = ChatPage(page, chat_url)
    await page.goto(chat_url)  # without its slash: the index is served at /chat/
    await expect(page).to_have_url(f"{chat_url}/")
    await page.fill("#token-input", TOKEN)
    await page.press("#token-input", "Enter")
    await expect(page.locator("#token-dialog")).to_be_hidden()
    await expect(page.locator("#thread-list li")).to_have_count(1)
    await expect(page.locator(f"#thread-list li[data-thread-id={made['id']}]")).to_contain_text("made through the API")

    await chat.new_thread()
    assert page.url.startswith(f"{chat_url}/#/t/")
    await chat.send("/stream 30 ms=10")
    await chat.assert_last_answer(" ".join(f"w{i}" for i in range(1, 31)))
    await chat.wait_until_idle()
    async with TetherClient(chat_url, TOKEN) as client:
        stored = await client.get_thread(chat.thread_id)
    await chat.assert_shows(stored["messages"])
    # A reload resumes from this tab's saved state, under the prefix too.
    await page.reload()
    await chat.assert_shows(stored["messages"])


async def test_the_mount_point_without_its_slash_redirects(tmp_path):
    """The page's relative URLs resolve under /chat/ only: /chat must become /chat/, whether the
    host's router mounts the app or a server passes only `root_path` (a proxy's prefix)."""
    hosted = host_app(Settings(data_dir=tmp_path / "hosted", token=TOKEN))
    proxied = tether.create_app(Settings(data_dir=tmp_path / "proxied", token=TOKEN))
    for app, root_path in ((hosted, ""), (proxied, "/chat")):
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            redirect = await http.get("/chat")
            assert redirect.status_code in (307, 308) and redirect.headers["location"] == "http://127.0.0.1/chat/"
            index = await http.get("/chat/")
            assert index.status_code == 200 and 'src="ui/js/app.js"' in index.text
            assert (await http.get("/chat/ui/js/app.js")).status_code == 200
            assert (await http.get("/chat/v1/threads")).status_code == 401


SESSIONS = {"s-ann": "ann", "s-ben": "ben"}


def host_with_own_sign_in(settings: Settings) -> FastAPI:
    """Someone's app that signs its people in itself (a session cookie) and tells Tether who they are."""

    def session_user(request: Request) -> str | None:
        return SESSIONS.get(request.cookies.get("session", ""))

    host = host_of(tether.create_app(settings, auth=session_user))

    @host.get("/login/{session}")
    async def login(session: str) -> RedirectResponse:
        response = RedirectResponse("/chat/", status_code=303)
        response.set_cookie("session", session, httponly=True, samesite="lax")
        return response

    return host


async def test_two_people_signed_in_by_the_host_each_see_their_own_threads(tmp_path, new_context):
    settings = Settings(data_dir=tmp_path / "data")
    server = ServerThread(settings, app=host_with_own_sign_in(settings)).start()
    try:
        chat_url = f"{server.url}/chat"
        pages = {}
        for session, person in SESSIONS.items():
            page = await (await new_context()).new_page()  # another browser: its own cookies
            await page.goto(f"{server.url}/login/{session}")  # the host's sign-in, then its chat
            await expect(page).to_have_url(f"{chat_url}/")
            await expect(page.get_by_test_id("signed-in-as")).to_have_text(f"Signed in as {person}")
            await expect(page.locator("#token-dialog")).to_be_hidden()  # the host's cookie is enough
            await expect(page.get_by_test_id("sign-out")).to_be_hidden()  # signing out is the host's
            pages[person] = ChatPage(page, chat_url)

        threads: dict[str, set[str]] = {"ann": set(), "ben": set()}
        for person in ("ann", "ben", "ann"):
            chat = pages[person]
            thread_id = await chat.new_thread()
            await chat.send("/stream 3")
            await expect(chat.page.locator(f"#thread-list li[data-thread-id={thread_id}]")).to_be_visible()
            await chat.assert_last_answer("w1 w2 w3")
            await chat.wait_until_idle()
            threads[person].add(thread_id)
        for person, chat in pages.items():
            await expect(chat.page.locator("#thread-list li")).to_have_count(len(threads[person]))
            shown = await chat.page.locator("#thread-list li").evaluate_all("lis => lis.map(li => li.dataset.threadId)")
            assert set(shown) == threads[person]

        # Ben opening one of Ann's threads by its URL finds nothing there.
        ben = pages["ben"].page
        [ann_first, *_] = sorted(threads["ann"])
        await ben.goto(f"{chat_url}/#/t/{ann_first}")
        await expect(ben.locator("#run-error")).to_contain_text("does not exist")
        async with httpx.AsyncClient(base_url=chat_url, cookies={"session": "s-ben"}) as http:
            assert {t["user_id"] for t in (await http.get("/v1/threads")).json()["threads"]} == {"ben"}
    finally:
        server.stop()
