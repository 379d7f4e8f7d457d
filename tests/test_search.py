"""Searching and paging thread lists: `GET /v1/threads?q=…` finds words of titles and of messages (the
user's and the agent's), newest first, a page at a time with `cursor`; `before` still pages by time."""

from __future__ import annotations

import httpx

from tether.client import TetherClient

from .conftest import wait_for_status
from .test_agents_and_users import ALICE, BOB, users_file
from .test_bad_input import assert_error


async def listed(http: httpx.AsyncClient, **params: object) -> tuple[list[str], str | None]:
    response = await http.get("/v1/threads", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    return [t["id"] for t in body["threads"]], body["next_cursor"]


async def every_page(http: httpx.AsyncClient, **params: object) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        ids, cursor = await listed(http, **params, **({"cursor": cursor} if cursor else {}))
        pages.append(ids)
        if cursor is None:
            return pages


async def test_search_finds_words_of_messages_and_titles(server):
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url) as http:
        zebra = await client.create_thread()
        stream = await client.create_thread("Quarterly café numbers")
        for thread_id, text in ((zebra["id"], "where do zebras sleep?"), (stream["id"], "/stream 2500")):
            run = await client.send(thread_id, text)
            await wait_for_status(client, run["run_id"], {"completed"})
        # The user's words, the agent's (the demo agent quotes them in its answer), and word prefixes.
        assert await listed(http, q="zebras") == ([zebra["id"]], None)
        assert await listed(http, q="ZEBR sle") == ([zebra["id"]], None)
        assert await listed(http, q="offline demo agent") == ([zebra["id"]], None)
        # Deep in a long answer, and in the title; accents and case as typed or not.
        assert await listed(http, q="w2499") == ([stream["id"]], None)
        assert await listed(http, q="Café quarterly") == ([stream["id"]], None)
        assert await listed(http, q="zebras w2499") == ([], None)  # every word, in one message or the title
        assert await listed(http, q="?!") == ([], None)  # no word to look for: nothing matches
        # Most recently updated first, as the list without a search.
        assert (await listed(http, q="w1"))[0] == [stream["id"]]
        run = await client.send(zebra["id"], "/stream 1")
        await wait_for_status(client, run["run_id"], {"completed"})
        both, _ = await listed(http, q="w1")
        assert both == [zebra["id"], stream["id"]]
        # A rename is found by its new title only; a deleted thread is found no more.
        await http.patch(f"/v1/threads/{stream['id']}", json={"title": "Budget"})
        assert await listed(http, q="quarterly") == ([], None)
        assert await listed(http, q="budget") == ([stream["id"]], None)
        await client.delete_thread(zebra["id"])
        assert await listed(http, q="zebras") == ([], None)


async def test_pages_follow_the_cursor_and_before_still_works(server):
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url) as http:
        made = [(await client.create_thread(f"page {i}"))["id"] for i in range(7)]
        other = await client.create_thread("unrelated")
        newest_first = made[::-1]
        pages = await every_page(http, limit=3, q="page")
        assert pages == [newest_first[:3], newest_first[3:6], newest_first[6:]]
        assert [i for page in await every_page(http, limit=2) for i in page] == [other["id"], *newest_first]
        assert await listed(http, limit=7, q="page") == (newest_first, None)  # exactly one page: no cursor
        # `before` (a time) and a cursor together: the older threads, a page at a time.
        threads = {t["id"]: t for t in await client.list_threads()}
        before = threads[made[4]]["updated_at"]
        assert await every_page(http, limit=2, before=before) == [[made[3], made[2]], [made[1], made[0]]]


async def test_a_search_never_finds_another_user_s_threads(start_server, tmp_path):
    server = start_server(users_file=users_file(tmp_path))
    async with TetherClient(server.url, ALICE) as alice, TetherClient(server.url, BOB) as bob:
        mine = await alice.create_thread("secret plans")
        await bob.create_thread("bob's plans")
        run = await alice.send(mine["id"], "the launch code is swordfish")
        await wait_for_status(alice, run["run_id"], {"completed"})
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {BOB}"}) as http:
            assert await listed(http, q="swordfish") == ([], None)
            assert await listed(http, q="secret") == ([], None)
            assert len((await listed(http, q="plans"))[0]) == 1
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ALICE}"}) as http:
            assert await listed(http, q="swordfish") == ([mine["id"]], None)


async def test_bad_search_and_paging_input_is_refused_clearly(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        for cursor in ("nonsense", "W10=", "WyJ4IiwgMV0"):  # not base64 JSON; [] ; ["x", 1]
            assert_error(await http.get("/v1/threads", params={"cursor": cursor}), 400, "invalid_cursor")
        assert_error(await http.get("/v1/threads", params={"q": ""}), 422, "invalid_request")
        assert_error(await http.get("/v1/threads", params={"q": "x" * 501}), 422, "invalid_request")
