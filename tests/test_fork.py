"""Edit and branch: `POST /v1/threads/{tid}/fork {before_message_id}` makes a new thread holding the
history up to a user message (its own log, starting with a MESSAGES_SNAPSHOT), linked to its parent;
the parent is untouched. Message ids are the log's: the same in every GET and on the stream."""

from __future__ import annotations

from typing import Any

import httpx

from tether.client import TetherClient
from tether.transcript import comparable, fold

from .conftest import thread_events, wait_for_status
from .test_agents_and_users import ALICE, BOB, users_file
from .test_bad_input import assert_error


async def a_conversation(client: TetherClient, *inputs: str) -> str:
    thread = await client.create_thread("the original")
    for text in inputs:
        run = await client.send(thread["id"], text)
        await wait_for_status(client, run["run_id"], {"completed"})
    return thread["id"]


def users_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["role"] == "user"]


async def test_message_ids_are_the_stream_s_and_stay_the_same(server):
    async with TetherClient(server.url) as client:
        thread_id = await a_conversation(client, "/tools 2", "/stream 3", "hello")
        first = (await client.get_thread(thread_id))["messages"]
        again = (await client.get_thread(thread_id))["messages"]
        assert [m["id"] for m in first] == [m["id"] for m in again]
        streamed = fold(await thread_events(client, thread_id))
    assert len({m["id"] for m in first}) == len(first)
    # Every message has the id its stream gave it (the two renderings are otherwise the invariant's).
    assert sorted(m["id"] for m in first) == sorted(m["id"] for m in streamed)
    assert comparable(first) == comparable(streamed)
    # As the thread goes on, what it had keeps its ids, and what it gains has its stream's.
    async with TetherClient(server.url) as client:
        run = await client.send(thread_id, "/tools 1")
        await wait_for_status(client, run["run_id"], {"completed"})
        later = (await client.get_thread(thread_id))["messages"]
        streamed = fold(await thread_events(client, thread_id))
    assert [m["id"] for m in later[: len(first)]] == [m["id"] for m in first]
    assert sorted(m["id"] for m in later) == sorted(m["id"] for m in streamed)


async def test_a_fork_holds_the_history_before_a_user_message_and_leaves_its_parent(server):
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url) as http:
        parent_id = await a_conversation(client, "/tools 2", "/stream 3", "hello")
        parent = await client.get_thread(parent_id)
        second = users_of(parent["messages"])[1]
        response = await http.post(f"/v1/threads/{parent_id}/fork", json={"before_message_id": second["id"]})
        assert response.status_code == 201, response.text
        branch = response.json()
        assert (branch["parent_thread_id"], branch["title"], branch["agent"]) == (parent_id, "the original", "demo")
        forked = await client.get_thread(branch["id"])
        cut = parent["messages"].index(second)
        assert comparable(forked["messages"]) == comparable(parent["messages"][:cut])
        # Its own log: a snapshot of that history first, and it folds to what it stores.
        events = await thread_events(client, branch["id"])
        assert [e["type"] for e in events] == ["MESSAGES_SNAPSHOT"]
        assert forked["last_seq"] == forked["messages_seq"] == 1 and forked["status"] == "idle"
        # The branch goes on from there: the edited message is answered with the history before it.
        run = await client.send(branch["id"], "/stream 2")
        await wait_for_status(client, run["run_id"], {"completed"})
        forked = await client.get_thread(branch["id"])
        assert [m.get("content") for m in users_of(forked["messages"])] == ["/tools 2", "/stream 2"]
        assert comparable(forked["messages"]) == comparable(fold(await thread_events(client, branch["id"])))
        assert [r["retry_of"] for r in await client.list_runs(branch["id"])] == [None]
        # The parent is as it was, and lists show both, the branch newest.
        assert await client.get_thread(parent_id) == {**parent, "updated_at": parent["updated_at"]}
        assert [t["id"] for t in await client.list_threads()] == [branch["id"], parent_id]
        # A fork before the first message is an empty thread; a title can be given.
        first = users_of(parent["messages"])[0]
        response = await http.post(
            f"/v1/threads/{parent_id}/fork", json={"before_message_id": first["id"], "title": "from scratch"}
        )
        empty = response.json()
        assert (response.status_code, empty["title"]) == (201, "from scratch")
        assert (await client.get_thread(empty["id"]))["messages"] == []
        # Deleting the parent unlinks its branches.
        await client.delete_thread(parent_id)
        assert (await client.get_thread(branch["id"]))["parent_thread_id"] is None


async def test_a_fork_of_a_branch_and_after_a_retry(server):
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url) as http:
        parent_id = await a_conversation(client, "/stream 2", "/tools 1")
        retried = await client.retry(parent_id)
        await wait_for_status(client, retried["run_id"], {"completed"})
        parent = await client.get_thread(parent_id)
        last = users_of(parent["messages"])[-1]
        assert last["content"] == "/tools 1"
        branch = (await http.post(f"/v1/threads/{parent_id}/fork", json={"before_message_id": last["id"]})).json()
        messages = (await client.get_thread(branch["id"]))["messages"]
        assert [m.get("content") for m in users_of(messages)] == ["/stream 2"]
        run = await client.send(branch["id"], "/stream 1")
        await wait_for_status(client, run["run_id"], {"completed"})
        again = users_of((await client.get_thread(branch["id"]))["messages"])[-1]
        twig = (await http.post(f"/v1/threads/{branch['id']}/fork", json={"before_message_id": again["id"]})).json()
        assert twig["parent_thread_id"] == branch["id"]
        assert comparable((await client.get_thread(twig["id"]))["messages"]) == comparable(messages)


async def test_bad_forks_are_refused_clearly(start_server, tmp_path):
    server = start_server(users_file=users_file(tmp_path))
    headers = {"Authorization": f"Bearer {ALICE}"}
    async with (
        TetherClient(server.url, ALICE) as alice,
        httpx.AsyncClient(base_url=server.url, headers=headers) as http,
    ):
        thread_id = await a_conversation(alice, "/tools 1")
        user = users_of((await alice.get_thread(thread_id))["messages"])[0]
        running = await alice.send(thread_id, "/stream 400 ms=10")
        await wait_for_status(alice, running["run_id"], {"running"})
        fork = f"/v1/threads/{thread_id}/fork"
        assert_error(await http.post(fork, json={"before_message_id": user["id"]}), 409, "thread_busy")
        await alice.cancel(running["run_id"])
        # The stop's MESSAGES_SNAPSHOT renders the history again: its messages go by the snapshot's ids now.
        messages = (await alice.get_thread(thread_id))["messages"]
        answer = next(m for m in messages if m["role"] == "assistant")
        user = users_of(messages)[0]
        assert_error(await http.post(fork, json={"before_message_id": answer["id"]}), 400, "not_a_user_message")
        assert_error(await http.post(fork, json={"before_message_id": "nope"}), 400, "unknown_message")
        assert_error(await http.post(fork, json={}), 422, "invalid_request")
        assert_error(await http.post(fork, json={"before_message_id": ""}), 422, "invalid_request")
        assert_error(await http.post(fork, json={"before_message_id": user["id"], "x": 1}), 422, "invalid_request")
        assert_error(await http.post("/v1/threads/thr_nope/fork", json={"before_message_id": "x"}), 404, "not_found")
        assert (await http.post(fork, json={"before_message_id": user["id"]})).status_code == 201
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {BOB}"}) as http:
        assert_error(await http.post(fork, json={"before_message_id": user["id"]}), 404, "not_found")
