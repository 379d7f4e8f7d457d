"""Attachments: a run's input as a list of parts, with images and files sent as base64 or as urls.

Their bytes are stored once (never in the event log or the checkpoints), reach the model in every run of
the thread, are served to the thread's user alone, and every limit has its own clear error.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tether.client import TetherClient, attachment
from tether.transcript import comparable, fold

from .conftest import ServerThread, thread_events, wait_for_status
from .test_agents_and_users import ALICE, BOB, users_file
from .test_bad_input import assert_error, no_runs, read_stream, still_serves

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
NOTES = b"line one\nline two\n"
LINKED = {"type": "image", "media_type": "image/png", "url": "https://example.com/a.png"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image(data: bytes = PNG, **more: Any) -> dict[str, Any]:
    return {"type": "image", "media_type": "image/png", "data": b64(data), **more}


def text_file(data: bytes = NOTES, **more: Any) -> dict[str, Any]:
    return {"type": "file", "media_type": "text/plain", "data": b64(data), **more}


def text(words: str) -> dict[str, str]:
    return {"type": "text", "text": words}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


async def answered(client: TetherClient, thread_id: str, message: Any, **send: Any) -> str:
    """Send a message, wait for its run, and give the last answer's text."""
    run = await client.send(thread_id, message, **send)
    await wait_for_status(client, run["run_id"], {"completed"})
    return (await client.get_thread(thread_id))["messages"][-1]["content"]


async def stored_rows(server: ServerThread, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return server.call(server.engine.store.db.fetch(sql, args))


async def test_an_image_and_a_file_are_answered_stored_once_and_served(server):
    big = os.urandom(200_000)  # a size whose base64 could not hide in a log line or a checkpoint
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url) as http:
        thread = await client.create_thread()
        message = [text("what are these?"), image(big, name="photo.png"), text_file(name="notes.txt")]
        answer = await answered(client, thread["id"], message)
        assert answer == (
            f'You said: "what are these?" and attached image/png, {len(big)} bytes; text/plain, {len(NOTES)} bytes.'
        )
        stored = await client.get_thread(thread["id"])
        user = stored["messages"][0]
        assert user["role"] == "user" and user["content"] == "what are these?"
        photo, notes = user["attachments"]
        assert photo == {
            "type": "image",
            "media_type": "image/png",
            "name": "photo.png",
            "size": len(big),
            "id": photo["id"],
            "url": f"/v1/attachments/{photo['id']}",
        }
        assert (notes["type"], notes["media_type"], notes["name"], notes["size"]) == (
            "file",
            "text/plain",
            "notes.txt",
            len(NOTES),
        )
        # The log carries the references after the user's text, and folds to the stored history.
        events = await thread_events(client, thread["id"])
        [shown] = [e for e in events if e["type"] == "CUSTOM" and e["name"] == "tether.attachments"]
        assert shown["value"] == {"messageId": user["id"], "attachments": [photo, notes]}
        assert comparable(fold(events)) == comparable(stored["messages"])
        as_ag_ui = (await http.get(f"/v1/ag-ui/{thread['id']}")).json()["messages"][0]
        assert (as_ag_ui["content"], as_ag_ui["attachments"]) == ("what are these?", [photo, notes])
        [run] = await client.list_runs(thread["id"])
        assert run["input"] == "what are these?"
        assert [a["id"] for a in run["attachments"]] == [photo["id"], notes["id"]]

        served = await http.get(photo["url"])
        assert served.status_code == 200 and served.content == big
        assert served.headers["content-type"] == "image/png"
        assert served.headers["content-disposition"].startswith('inline; filename="photo.png"')
        download = await http.get(notes["url"])
        assert download.content == NOTES and download.headers["content-type"].startswith("text/plain")
        assert download.headers["content-disposition"].startswith('attachment; filename="notes.txt"')
        for response in (served, download):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["content-security-policy"] == "default-src 'none'; sandbox"
            assert response.headers["cache-control"] == "private, no-store"
        assert await client.get_attachment(notes["id"]) == NOTES

    # The bytes are in the attachments table once, and nowhere else: not in the log, not in a checkpoint.
    encoded = b64(big)[:5000]
    rows = await stored_rows(server, "SELECT data FROM attachments WHERE id = ?", photo["id"])
    assert [bytes(data) for (data,) in rows] == [big]
    for sql in ("SELECT data FROM events WHERE thread_id = ?", "SELECT messages FROM checkpoints WHERE thread_id = ?"):
        for (data,) in await stored_rows(server, sql, thread["id"]):
            held = data if isinstance(data, str) else bytes(data).decode()
            assert encoded not in held, sql


async def test_every_run_of_the_thread_gives_the_model_the_bytes_again(start_server, tmp_path: Path):
    """Checkpoints hold references only: the bytes come back from the table in later runs, in a retry,
    in a fork (which keeps its own copy once its parent is deleted) and after a restart."""
    data_dir = tmp_path / "seen"
    server = start_server(agents=("tests.agents:attachments_seen",), data_dir=data_dir)
    first, second = os.urandom(3000), b"col\n1\n"
    seen_first = f"image/png:{len(first)}:{digest(first)}"
    both = f"{seen_first} text/csv:{len(second)}:{digest(second)}"
    async with TetherClient(server.url) as client:
        thread_id = (await client.create_thread())["id"]
        assert await answered(client, thread_id, [image(first)]) == seen_first
        assert await answered(client, thread_id, "and now?") == seen_first
        second_part = {"type": "file", "media_type": "text/csv", "data": b64(second)}
        assert await answered(client, thread_id, [text("one more"), second_part]) == both
        retried = await client.retry(thread_id)
        await wait_for_status(client, retried["run_id"], {"completed"})
        assert (await client.get_thread(thread_id))["messages"][-1]["content"] == both
        stored = await client.get_thread(thread_id)
        before = [m for m in stored["messages"] if m["role"] == "user"][2]
        async with httpx.AsyncClient(base_url=server.url) as http:
            fork = (await http.post(f"/v1/threads/{thread_id}/fork", json={"before_message_id": before["id"]})).json()
        forked = (await client.get_thread(fork["id"]))["messages"]
        assert forked[0]["attachments"] == stored["messages"][0]["attachments"]
        await client.delete_thread(thread_id)
        assert await answered(client, fork["id"], "still there?") == seen_first
        kept = (await client.get_thread(fork["id"]))["messages"][0]["attachments"][0]
        assert await client.get_attachment(kept["id"]) == first
    server.stop()
    again = start_server(agents=("tests.agents:attachments_seen",), data_dir=data_dir)
    async with TetherClient(again.url) as client:
        assert await answered(client, fork["id"], "after a restart?") == seen_first


async def test_an_attachment_alone_a_url_and_text_parts_alone(server):
    async with TetherClient(server.url) as client:
        thread_id = (await client.create_thread())["id"]
        assert await answered(client, thread_id, [image()]) == f"You attached image/png, {len(PNG)} bytes."
        url = "https://example.com/chart.webp"
        linked = {"type": "image", "media_type": "image/webp", "url": url}
        assert (
            await answered(client, thread_id, [text("see"), linked])
            == f'You said: "see" and attached image/webp at {url}.'
        )
        # A message of text parts only is that text (joined by a blank line), as if sent as a string.
        assert await answered(client, thread_id, [text("/stream"), text("2")]) == "w1 w2"
        assert await answered(client, thread_id, [text("/stream 3")]) == "w1 w2 w3"
        stored = await client.get_thread(thread_id)
        users = [m for m in stored["messages"] if m["role"] == "user"]
        assert users[0]["content"] == "" and [a["type"] for a in users[0]["attachments"]] == ["image"]
        assert users[1]["attachments"] == [{"type": "image", "media_type": "image/webp", "url": url}]
        assert users[2] == {"id": users[2]["id"], "role": "user", "content": "/stream\n\n2"}
        assert "attachments" not in users[3]
        events = await thread_events(client, thread_id)
        assert comparable(fold(events)) == comparable(stored["messages"])
        # Every message keeps the id its stream gave it, an attachment alone too (a fork can name it).
        assert [m["id"] for m in fold(events)] == [m["id"] for m in stored["messages"]]
        assert [m["id"] for m in (await client.get_thread(thread_id))["messages"]] == [
            m["id"] for m in stored["messages"]
        ]
        runs = await client.list_runs(thread_id)
        assert runs[2]["input"] == "/stream\n\n2" and runs[2]["attachments"] == []


async def test_the_python_client_attaches_a_file_by_path(server, tmp_path: Path):
    path = tmp_path / "table.csv"
    path.write_bytes(b"a,b\n1,2\n")
    assert attachment(path) == {
        "type": "file",
        "media_type": "text/csv",
        "data": b64(b"a,b\n1,2\n"),
        "name": "table.csv",
    }
    assert attachment(PNG, "image/png")["type"] == "image"
    with pytest.raises(ValueError, match="media_type"):
        attachment(tmp_path / "unknown.zzz")
    async with TetherClient(server.url) as client:
        thread_id = (await client.create_thread())["id"]
        assert await answered(client, thread_id, [attachment(path)]) == "You attached text/csv, 8 bytes."


async def test_an_attachment_is_its_user_s_alone(start_server, tmp_path: Path):
    server = start_server(users_file=users_file(tmp_path))
    alice = httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ALICE}"})
    bob = httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {BOB}"})
    async with alice, bob:
        tid = (await alice.post("/v1/threads")).json()["id"]
        run_id = (await alice.post(f"/v1/threads/{tid}/runs", json={"input": [image()]})).json()["run_id"]
        await read_stream(alice, f"/v1/runs/{run_id}/stream")
        [shown] = (await alice.get(f"/v1/threads/{tid}")).json()["messages"][0]["attachments"]
        assert (await alice.get(shown["url"])).content == PNG
        assert_error(await bob.get(shown["url"]), 404, "not_found")
        assert_error(await httpx.AsyncClient(base_url=server.url).get(shown["url"]), 401, "unauthorized")
        assert_error(await alice.get("/v1/attachments/att_" + "0" * 32), 404, "not_found")
        assert (await alice.delete(f"/v1/threads/{tid}")).status_code == 204
        assert_error(await alice.get(shown["url"]), 404, "not_found")  # gone with its thread
        assert await stored_rows(server, "SELECT id FROM attachments") == []


@pytest.mark.parametrize(
    "parts, status, code, says",
    [
        ([image(os.urandom(101))], 413, "attachment_too_large", "101 bytes"),
        ([text_file(b"x" * 100), image(), image()], 413, "too_many_attachments", "--max-attachments"),
        ([{**image(), "media_type": "image/svg+xml"}], 415, "unsupported_media_type", "image/svg+xml"),
        ([{**text_file(), "media_type": "application/zip"}], 415, "unsupported_media_type", "--attachment-types"),
        ([{**text_file(), "media_type": "image/png"}], 422, "invalid_request", "send it as type 'image'"),
        ([{**image(), "media_type": "text/plain"}], 422, "invalid_request", "send it as type 'file'"),
        ([{**image(), "data": "not base64!"}], 422, "invalid_request", "base64"),
        ([{**image(), "data": "AAAAA"}], 422, "invalid_request", "base64"),
        ([{**image(), "url": "https://example.com/a.png"}], 422, "invalid_request", "one of the two"),
        ([{"type": "image", "media_type": "image/png"}], 422, "invalid_request", "one of the two"),
        ([{"type": "image", "data": b64(PNG)}], 422, "invalid_request", "media_type"),
        (
            [{"type": "image", "media_type": "image/png", "url": "ftp://example.com/a.png"}],
            422,
            "invalid_request",
            "url",
        ),
        (
            [{"type": "image", "media_type": "image/png", "url": "https://e.com/a", "name": "a"}],
            422,
            "invalid_request",
            "name",
        ),
        ([{"type": "audio", "media_type": "audio/mp3", "data": b64(PNG)}], 422, "invalid_request", "audio"),
        ([text("  "), image()], 422, "invalid_request", "text"),
        ([], 422, "invalid_request", "input"),
        ([text("x" * 60), image()], 413, "input_too_long", "--max-input-chars"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_each_limit_and_mistake_has_its_own_error_and_creates_nothing(start_server, parts, status, code, says):
    server = start_server(max_attachment_bytes=100, max_attachments=2, max_input_chars=50)
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = (await http.post("/v1/threads")).json()["id"]
        error = assert_error(await http.post(f"/v1/threads/{tid}/runs", json={"input": parts}), status, code)
        assert says in error["message"], error
        await no_runs(http, tid)
        assert await stored_rows(server, "SELECT id FROM attachments") == []
        fits = await http.post(f"/v1/threads/{tid}/runs", json={"input": [image(b"x" * 100)]})
        assert fits.status_code == 202, fits.text  # the limit is the limit: exactly 100 bytes are taken
    await still_serves(server.url)


async def test_a_steering_message_is_text_only(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = (await http.post("/v1/threads")).json()["id"]
        error = assert_error(
            await http.post(f"/v1/threads/{tid}/steer", json={"input": [image()]}), 422, "invalid_request"
        )
        assert "text only" in error["message"]
        body = {"input": [text("hi"), image()], "multitask": "steer"}
        error = assert_error(await http.post(f"/v1/threads/{tid}/runs", json=body), 422, "invalid_request")
        assert "text only" in error["message"] and "enqueue" in error["message"]
        await no_runs(http, tid)
        # Text parts alone are text, and steer as they always did.
        steered = await http.post(f"/v1/threads/{tid}/runs", json={"input": [text("/stream 2")], "multitask": "steer"})
        assert steered.status_code == 202 and steered.json()["delivery"] == "new_run"


async def test_a_message_s_body_may_hold_its_attachments_and_other_bodies_stay_small(start_server):
    """--max-body-bytes limits every body; a message's may also hold as many attachments as it may carry,
    each as large as it may be, in base64: so within those limits it never gets body_too_large."""
    server = start_server(max_body_bytes=1000, max_attachment_bytes=30_000, max_attachments=2)
    largest = 1000 + 2 * 40_000  # 30,000 bytes are 40,000 in base64
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = (await http.post("/v1/threads")).json()["id"]
        two = {"input": [text("two"), image(os.urandom(30_000)), image(os.urandom(30_000))]}
        accepted = await http.post(f"/v1/threads/{tid}/runs", json=two)
        assert accepted.status_code == 202, accepted.text
        await read_stream(http, f"/v1/runs/{accepted.json()['run_id']}/stream")
        too_big = {"input": [text("x" * 1500), image(os.urandom(30_000)), image(os.urandom(30_000))]}
        error = assert_error(await http.post(f"/v1/threads/{tid}/runs", json=too_big), 413, "body_too_large")
        assert str(largest) in error["message"]
        error = assert_error(await http.patch(f"/v1/threads/{tid}", json={"title": "x" * 2000}), 413, "body_too_large")
        assert "1000 bytes" in error["message"]
        steer = {"input": "x" * 2000}
        assert_error(await http.post(f"/v1/threads/{tid}/steer", json=steer), 413, "body_too_large")
