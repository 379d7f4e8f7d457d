"""Limits, each a setting with a clear error past it, and the metrics that count what a server does."""

from __future__ import annotations

import asyncio
import re

import httpx

from tether.client import TetherClient

from .conftest import wait_for_status
from .test_agents_and_users import ALICE, BOB, users_file
from .test_bad_input import assert_error


async def test_a_message_over_max_input_chars_is_413_and_creates_nothing(start_server):
    server = start_server(max_input_chars=50)
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = (await http.post("/v1/threads")).json()["id"]
        for path in (f"/v1/threads/{tid}/runs", f"/v1/threads/{tid}/steer"):
            error = assert_error(await http.post(path, json={"input": "x" * 51}), 413, "input_too_long")
            assert "51 characters" in error["message"] and "--max-input-chars" in error["message"]
        assert (await http.get(f"/v1/threads/{tid}/runs")).json()["runs"] == []
        assert (await http.post(f"/v1/threads/{tid}/runs", json={"input": "x" * 50})).status_code == 202


async def test_runs_queued_behind_the_active_one_are_limited_per_thread(start_server):
    server = start_server(max_queued_runs=2)
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url) as http:
        thread = await client.create_thread()
        active = await client.send(thread["id"], "/stream 400 ms=20")
        for _ in range(2):
            await client.send(thread["id"], "/stream 1", multitask="enqueue")
        body = {"input": "/stream 1", "multitask": "enqueue"}
        error = assert_error(await http.post(f"/v1/threads/{thread['id']}/runs", json=body), 429, "too_many_queued")
        assert "2 runs waiting" in error["message"]
        assert len(await client.list_runs(thread["id"])) == 3
        other = await client.create_thread()  # another thread has its own queue
        assert (await http.post(f"/v1/threads/{other['id']}/runs", json=body)).status_code == 202
        await client.cancel(active["run_id"])


async def test_open_streams_are_limited_per_user(start_server, tmp_path):
    server = start_server(max_streams=2, users_file=users_file(tmp_path))
    alice_headers = {"Authorization": f"Bearer {ALICE}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=alice_headers) as alice:
        tid = (await alice.post("/v1/threads")).json()["id"]
        async with (
            alice.stream("GET", "/v1/events") as first,
            alice.stream("GET", f"/v1/threads/{tid}/stream") as second,
        ):
            assert first.status_code == second.status_code == 200
            error = assert_error(await alice.get(f"/v1/threads/{tid}/stream"), 429, "too_many_streams")
            assert "--max-streams" in error["message"]
            async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {BOB}"}) as bob:
                async with bob.stream("GET", "/v1/events") as his:
                    assert his.status_code == 200  # Bob's streams are his own to count
        # Closed streams free their places (the server notices the disconnect at once).
        async with asyncio.timeout(10):
            while True:
                async with alice.stream("GET", "/v1/events") as again:
                    if again.status_code == 200:
                        break
                await asyncio.sleep(0.1)


async def test_a_request_rate_per_user_answers_429_with_retry_after(start_server, tmp_path):
    server = start_server(rate_limit=5, users_file=users_file(tmp_path))
    async with (
        httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ALICE}"}) as alice,
        httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {BOB}"}) as bob,
    ):
        codes = [(await alice.get("/v1/threads")).status_code for _ in range(5)]
        assert codes == [200] * 5
        limited = await alice.get("/v1/threads")
        error = assert_error(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1 and "--rate-limit" in error["message"]
        assert (await bob.get("/v1/threads")).status_code == 200  # one user's burst is not another's
        assert (await alice.get("/healthz")).status_code == 200  # the health check is not counted


def sample(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text format."""
    label = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(label) + r"\}" if label else "") + r" ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{name} {labels} not in the metrics"
    return float(found[1])


async def test_metrics_count_runs_events_streams_and_approvals(start_server):
    server = start_server(token="s3cret-metrics")
    auth = {"Authorization": "Bearer s3cret-metrics"}
    async with TetherClient(server.url, "s3cret-metrics") as client, httpx.AsyncClient(base_url=server.url) as http:
        assert_error(await http.get("/metrics"), 401, "unauthorized")
        thread = await client.create_thread()
        done = await client.send(thread["id"], "/stream 5")
        await wait_for_status(client, done["run_id"], {"completed"})
        paused = await client.send(thread["id"], "/approve hello")
        await wait_for_status(client, paused["run_id"], {"awaiting_approval"})
        async with http.stream("GET", f"/v1/threads/{thread['id']}/stream", headers=auth) as stream:
            assert stream.status_code == 200
            scraped = await http.get("/metrics", headers=auth)
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        text = scraped.text
        assert sample(text, "tether_runs_ended_total", outcome="completed") == 1
        assert sample(text, "tether_runs_ended_total", outcome="awaiting_approval") == 1
        assert sample(text, "tether_events_written_total") >= 10
        assert sample(text, "tether_group_commit_seconds_count") >= 1
        assert sample(text, "tether_active_runs", status="awaiting_approval") == 1
        assert sample(text, "tether_approvals_waiting") == 1
        assert sample(text, "tether_open_streams") == 1
        assert sample(text, "tether_run_duration_seconds_count") == 2


async def test_metrics_can_be_public(start_server):
    server = start_server(token="s3cret-metrics", metrics_public=True)
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/metrics")).status_code == 200
        assert_error(await http.get("/v1/threads"), 401, "unauthorized")  # the API is not


async def test_the_feed_keeps_its_last_notices_and_an_older_position_is_410(start_server):
    server = start_server(feed_keep=3)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for _ in range(6):
            assert (await http.post("/v1/threads")).status_code == 201
        assert server.call(server.engine.store.trim_feed(3)) == 3  # what the minutely housekeeping does
        error = assert_error(await http.get("/v1/events?after=1"), 410, "feed_expired")
        assert "fresh snapshot" in error["message"]
        async with http.stream("GET", "/v1/events?after=3") as resumed:  # right before the oldest kept
            assert resumed.status_code == 200
            ids = []
            async for line in resumed.aiter_lines():
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
                if len(ids) == 3:
                    break
        assert ids == [4, 5, 6]
