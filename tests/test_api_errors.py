"""Bad input over real HTTP: each gets its documented status and `{error: {code, message}}`, and the
server goes on serving."""

from __future__ import annotations

import httpx
import pytest

from tether.client import TetherClient

from .conftest import wait_for_status


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def still_serving(url: str) -> None:
    async with TetherClient(url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/stream 2")
        assert (await wait_for_status(client, run["run_id"], {"completed"}))["status"] == "completed"


async def test_bodies_that_are_not_what_the_schema_says(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = (await http.post("/v1/threads")).json()["id"]
        runs = f"/v1/threads/{tid}/runs"
        json_header = {"content-type": "application/json"}
        assert_error(await http.post(runs, content=b'{"input": "hi"', headers=json_header), 400, "invalid_json")
        assert_error(await http.post(runs, content=b"", headers=json_header), 422, "invalid_request")
        for body in (
            {"input": 123},
            {"input": ""},
            {"input": "   "},
            {"input": "hi", "multitask": "sometimes"},
            {"input": "hi", "surprise": True},
            {},
            [],
        ):
            assert_error(await http.post(runs, json=body), 422, "invalid_request")
        assert_error(await http.post("/v1/threads", json=["not", "an", "object"]), 422, "invalid_request")
        assert_error(await http.post("/v1/threads", json={"title": "x" * 500}), 422, "invalid_request")
        assert_error(await http.get("/v1/threads", params={"limit": 0}), 422, "invalid_request")
        message = (await http.post(runs, json={"input": 123})).json()["error"]["message"]
        assert "input" in message
    await still_serving(server.url)


async def test_unknown_ids_and_routes(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        for method, path in (
            ("GET", "/v1/threads/thr_nope"),
            ("DELETE", "/v1/threads/thr_nope"),
            ("GET", "/v1/threads/thr_nope/runs"),
            ("GET", "/v1/threads/thr_nope/stream"),
            ("GET", "/v1/runs/run_nope"),
            ("POST", "/v1/runs/run_nope/cancel"),
            ("GET", "/v1/runs/run_nope/stream"),
            ("GET", "/v1/nowhere"),
        ):
            assert_error(await http.request(method, path), 404, "not_found")
        assert_error(await http.post("/v1/threads/thr_nope/runs", json={"input": "hi"}), 404, "not_found")
        assert_error(await http.put("/v1/threads"), 405, "method_not_allowed")
    await still_serving(server.url)


async def test_bad_resume_points(server):
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url) as http:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/stream 3")
        await wait_for_status(client, run["run_id"], {"completed"})
        last = (await client.get_thread(thread["id"]))["last_seq"]
        stream = f"/v1/threads/{thread['id']}/stream"
        for headers, params in (
            ({"Last-Event-ID": "abc"}, {}),
            ({"Last-Event-ID": "-1"}, {}),
            ({}, {"after": "1.5"}),
            ({"Last-Event-ID": str(last + 1)}, {}),
        ):
            assert_error(await http.get(stream, headers=headers, params=params), 400, "invalid_last_event_id")
        assert_error(
            await http.get(f"/v1/runs/{run['run_id']}/stream", headers={"Last-Event-ID": "x"}),
            400,
            "invalid_last_event_id",
        )
    await still_serving(server.url)


@pytest.mark.parametrize("announced", [True, False])
async def test_oversize_bodies_get_413(start_server, announced):
    server = start_server(max_body_bytes=1000)
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = (await http.post("/v1/threads")).json()["id"]
        body = b'{"input": "' + b"x" * 5000 + b'"}'

        async def chunks():
            for i in range(0, len(body), 500):
                yield body[i : i + 500]

        content = body if announced else chunks()  # without a length, the server counts as it reads
        response = await http.post(
            f"/v1/threads/{tid}/runs", content=content, headers={"content-type": "application/json"}
        )
        assert_error(response, 413, "body_too_large")
        assert (await http.get(f"/v1/threads/{tid}/runs")).json()["runs"] == []
    await still_serving(server.url)


async def test_token_is_required_on_v1_routes(start_server):
    server = start_server(token="s3cret")
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/healthz")).status_code == 200
        missing = await http.get("/v1/threads")
        assert_error(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"] == "Bearer"
        assert_error(await http.get("/v1/threads", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
        assert_error(await http.get("/v1/threads", headers={"Authorization": "Basic s3cret"}), 401, "unauthorized")
        assert_error(await http.get("/v1/events"), 401, "unauthorized")
    async with TetherClient(server.url, token="s3cret") as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/stream 2")
        assert (await wait_for_status(client, run["run_id"], {"completed"}))["status"] == "completed"


async def test_openapi_lists_the_api(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        spec = (await http.get("/openapi.json")).json()
    for path in (
        "/v1/threads",
        "/v1/threads/{thread_id}",
        "/v1/threads/{thread_id}/runs",
        "/v1/threads/{thread_id}/stream",
        "/v1/threads/{thread_id}/steer",
        "/v1/threads/{thread_id}/retry",
        "/v1/runs/{run_id}",
        "/v1/runs/{run_id}/cancel",
        "/v1/runs/{run_id}/approvals",
        "/v1/runs/{run_id}/stream",
        "/v1/events",
        "/healthz",
    ):
        assert path in spec["paths"], path
