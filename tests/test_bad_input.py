"""Bad input over real HTTP on loopback.

Every case asserts the exact status and the error body `{"error": {"code", "message"}}` with its
code, that nothing was created by the bad request, and that the server goes on serving afterwards
(a health check and a complete run on the same server).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tether.app import create_app
from tether.config import Settings

from .conftest import ServerThread

JSON = {"content-type": "application/json"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message"}, body
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"].strip(), body
    return error


async def still_serves(url: str, headers: dict[str, str] | None = None) -> None:
    """A fresh connection gets /healthz, and a run goes from start to RUN_FINISHED."""
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        tid = (await http.post("/v1/threads")).json()["id"]
        accepted = await http.post(f"/v1/threads/{tid}/runs", json={"input": "/stream 2"})
        assert accepted.status_code == 202, accepted.text
        types = [e["type"] for e in await read_stream(http, f"/v1/runs/{accepted.json()['run_id']}/stream")]
        assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED", types
        run = (await http.get(f"/v1/runs/{accepted.json()['run_id']}")).json()
        assert run["status"] == "completed", run


async def sse_data(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield json.loads(line.removeprefix("data:").strip())


async def read_stream(http: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    """A run stream, to its end (the server closes it after the run's terminal event)."""
    async with http.stream("GET", path, timeout=30) as response:
        assert response.status_code == 200
        return [event async for event in sse_data(response)]


async def new_thread(http: httpx.AsyncClient) -> str:
    created = await http.post("/v1/threads")
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def finished_run(http: httpx.AsyncClient, tid: str, text: str = "/stream 3") -> str:
    accepted = await http.post(f"/v1/threads/{tid}/runs", json={"input": text})
    assert accepted.status_code == 202, accepted.text
    run_id = accepted.json()["run_id"]
    await read_stream(http, f"/v1/runs/{run_id}/stream")
    return run_id


async def no_runs(http: httpx.AsyncClient, tid: str) -> None:
    runs = await http.get(f"/v1/threads/{tid}/runs")
    assert runs.status_code == 200 and runs.json()["runs"] == [], runs.text


# malformed and mistyped bodies


@pytest.mark.parametrize(
    "raw",
    [b'{"input": "hi"', b"{'input': 'hi'}", b'{"input": "hi",}', b"input=hi", b"\xff\xfe\x00", b"{"],
    ids=["truncated", "single-quotes", "trailing-comma", "form-encoded", "not-utf8", "open-brace"],
)
async def test_malformed_json_is_400_invalid_json(server: ServerThread, raw: bytes):
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = await new_thread(http)
        assert_error(await http.post(f"/v1/threads/{tid}/runs", content=raw, headers=JSON), 400, "invalid_json")
        await no_runs(http, tid)
    await still_serves(server.url)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"input": 123}, "input"),
        ({"input": None}, "input"),
        ({"input": ["hi"]}, "input"),
        ({"input": "hi", "multitask": "bogus"}, "multitask"),
        ({"input": "hi", "multitask": 1}, "multitask"),
        ({"input": "hi", "model": 5}, "model"),
        ({"input": "hi", "surprise": True}, "surprise"),
        ({"input": ""}, "input"),
        ({"input": "   "}, "input"),
        ({"input": " \n\t "}, "input"),
        ({}, "input"),
        ([], "body"),
        ("hi", "body"),
        (42, "body"),
        (None, "body"),
    ],
    ids=lambda v: json.dumps(v) if not isinstance(v, str) or v == "hi" else v,
)
async def test_bodies_that_break_the_schema_are_422(server: ServerThread, body: Any, field: str):
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = await new_thread(http)
        response = await http.post(f"/v1/threads/{tid}/runs", content=json.dumps(body).encode(), headers=JSON)
        error = assert_error(response, 422, "invalid_request")
        assert field in error["message"], error  # the message says what is wrong
        await no_runs(http, tid)
    await still_serves(server.url)


@pytest.mark.parametrize("headers", [{}, JSON], ids=["no-content-type", "json-content-type"])
async def test_missing_body_is_422(server: ServerThread, headers: dict[str, str]):
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = await new_thread(http)
        assert_error(await http.post(f"/v1/threads/{tid}/runs", headers=headers), 422, "invalid_request")
        assert_error(await http.post(f"/v1/threads/{tid}/steer", headers=headers), 422, "invalid_request")
        await no_runs(http, tid)
    await still_serves(server.url)


@pytest.mark.parametrize(
    "body",
    [[], ["a"], "title", 42, True, {"title": 5}, {"title": "x" * 201}, {"metadata": []}, {"colour": "red"}],
    ids=["empty-list", "list", "string", "number", "bool", "title-int", "title-long", "metadata-list", "unknown"],
)
async def test_create_thread_with_a_non_object_or_bad_body_is_422(server: ServerThread, body: Any):
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert_error(await http.post("/v1/threads", json=body), 422, "invalid_request")
        assert (await http.get("/v1/threads")).json()["threads"] == []
    await still_serves(server.url)


@pytest.mark.parametrize("depth", [21, 256, 998, 5000])
async def test_metadata_nested_too_deep_is_422_and_the_lists_keep_working(server: ServerThread, depth: int):
    """Found: metadata 256-998 levels deep was stored (the create answered 500), and every later
    list and get of the thread answered 500 until the thread was deleted."""
    body = '{"metadata":' + '{"a":' * depth + "1" + "}" * depth + "}"
    async with httpx.AsyncClient(base_url=server.url) as http:
        mine = (await http.post("/v1/threads", json={"metadata": _nested(20)})).json()  # deep, but allowed
        response = await http.post("/v1/threads", content=body, headers={"content-type": "application/json"})
        assert response.status_code in (400, 422), response.text
        error = response.json()["error"]
        assert error["code"] in ("invalid_json", "invalid_request") and error["message"]
        assert [t["id"] for t in (await http.get("/v1/threads")).json()["threads"]] == [mine["id"]]
        assert (await http.get(f"/v1/threads/{mine['id']}")).json()["metadata"] == _nested(20)
    await still_serves(server.url)


async def test_metadata_too_large_is_422(server: ServerThread):
    async with httpx.AsyncClient(base_url=server.url) as http:
        error = assert_error(
            await http.post("/v1/threads", json={"metadata": {"a": "x" * 16_001}}), 422, "invalid_request"
        )
        assert "16000 bytes" in error["message"]
        assert (await http.get("/v1/threads")).json()["threads"] == []


def _nested(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_create_thread_without_a_body_or_with_an_object_is_201(server: ServerThread):
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.post("/v1/threads")).status_code == 201
        created = await http.post("/v1/threads", json={"title": "t", "metadata": {"k": 1}})
        assert created.status_code == 201, created.text
        assert created.json()["title"] == "t" and created.json()["metadata"] == {"k": 1}


# unknown ids and routes


async def test_unknown_thread_is_404(server: ServerThread):
    async with httpx.AsyncClient(base_url=server.url) as http:
        for method, path, body in (
            ("GET", "/v1/threads/thr_nope", None),
            ("DELETE", "/v1/threads/thr_nope", None),
            ("PATCH", "/v1/threads/thr_nope", {"title": "x"}),
            ("POST", "/v1/threads/thr_nope/runs", {"input": "hi"}),
            ("GET", "/v1/threads/thr_nope/runs", None),
            ("GET", "/v1/threads/thr_nope/stream", None),
            ("POST", "/v1/threads/thr_nope/steer", {"input": "hi"}),
            ("POST", "/v1/threads/thr_nope/retry", None),
        ):
            error = assert_error(await http.request(method, path, json=body), 404, "not_found")
            assert "thr_nope" in error["message"], (method, path, error)
        assert (await http.get("/v1/threads")).json()["threads"] == []  # no thread was made on the way
    await still_serves(server.url)


async def test_unknown_run_is_404(server: ServerThread):
    async with httpx.AsyncClient(base_url=server.url) as http:
        for method, path, body in (
            ("GET", "/v1/runs/run_nope", None),
            ("POST", "/v1/runs/run_nope/cancel", None),
            ("GET", "/v1/runs/run_nope/stream", None),
            ("POST", "/v1/runs/run_nope/approvals", {"decisions": {"call_1": {"approved": True}}}),
        ):
            error = assert_error(await http.request(method, path, json=body), 404, "not_found")
            assert "run_nope" in error["message"], (method, path, error)
    await still_serves(server.url)


@pytest.mark.parametrize("path", ["/nowhere", "/v1/nowhere", "/v2/threads", "/v1/threads/t/nowhere", "/v1/runs"])
async def test_unknown_route_is_404_json(server: ServerThread, path: str):
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert_error(await http.get(path), 404, "not_found")
        assert_error(await http.post(path, json={}), 404, "not_found")
    await still_serves(server.url)


# conflicts


@pytest.mark.parametrize("text, status", [("/stream 3", "completed"), ("/fail", "failed")])
async def test_cancel_of_an_ended_run_is_409_run_ended(server: ServerThread, text: str, status: str):
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = await new_thread(http)
        run_id = await finished_run(http, tid, text)
        before = (await http.get(f"/v1/runs/{run_id}")).json()
        assert before["status"] == status
        error = assert_error(await http.post(f"/v1/runs/{run_id}/cancel"), 409, "run_ended")
        assert run_id in error["message"]
        assert (await http.get(f"/v1/runs/{run_id}")).json() == before  # untouched
    await still_serves(server.url)


async def test_cancel_twice_is_202_then_409(server: ServerThread):
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = await new_thread(http)
        accepted = await http.post(f"/v1/threads/{tid}/runs", json={"input": "/stream 200 ms=20"})
        run_id = accepted.json()["run_id"]
        first = await http.post(f"/v1/runs/{run_id}/cancel")
        assert first.status_code == 202 and first.json()["status"] == "cancelled", first.text
        assert_error(await http.post(f"/v1/runs/{run_id}/cancel"), 409, "run_ended")
    await still_serves(server.url)


# oversize bodies


@pytest.mark.parametrize("declared", [5000, 10**12, 10**20])
async def test_an_announced_body_that_never_comes_still_gets_its_answer(start_server, declared: int):
    """Found: `Content-Length: 10^20` and no body waited for the body forever, never answering. Now a
    length over the limit is answered at once (413), and one past what HTTP parsers take (more than
    19 digits) is refused by the HTTP layer itself (400, before Tether sees it)."""
    server = start_server(max_body_bytes=1000)

    def ask() -> bytes:
        with socket.create_connection(("127.0.0.1", server.settings.port), timeout=10) as sock:
            sock.sendall(
                f"POST /v1/threads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {declared}\r\n\r\n".encode()
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            return answer

    answer = await asyncio.to_thread(ask)
    if declared < 10**19:
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b'"code":"body_too_large"' in answer
    else:
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


@pytest.mark.parametrize("size", [5000, 300_000])
@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize("target", ["runs", "threads"])
async def test_oversize_body_is_413(start_server, announced: bool, target: str, size: int):
    """The client gets the 413, not a reset connection: the server reads what it refuses first. (A message
    takes no attachments here, so its body is held to --max-body-bytes too: tests/test_attachments.py has
    the room a message's attachments add.)"""
    server = start_server(max_body_bytes=1000, max_attachments=0)
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = await new_thread(http)
        body = json.dumps({"input" if target == "runs" else "title": "x" * (size - 13)}).encode()
        assert len(body) >= size

        async def streamed() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 512):
                yield body[i : i + 512]

        path = f"/v1/threads/{tid}/runs" if target == "runs" else "/v1/threads"
        request = http.build_request("POST", path, content=body if announced else streamed(), headers=JSON)
        if announced:
            assert request.headers["content-length"] == str(len(body))
        else:
            assert "content-length" not in request.headers
            assert request.headers["transfer-encoding"] == "chunked"
        error = assert_error(await http.send(request), 413, "body_too_large")
        assert "1000" in error["message"]
        await no_runs(http, tid)
        assert [t["id"] for t in (await http.get("/v1/threads")).json()["threads"]] == [tid]
        # Just under the limit is fine, announced or not: the limit is the limit, not "any body".
        small = json.dumps({"input": "/stream 2 " + " " * 900}).encode()
        assert len(small) < 1000
        fits = await http.post(f"/v1/threads/{tid}/runs", content=small, headers=JSON)
        assert fits.status_code == 202, fits.text
        await read_stream(http, f"/v1/runs/{fits.json()['run_id']}/stream")
    await still_serves(server.url)


# resume points


async def test_bad_last_event_id_and_after_are_400(server: ServerThread):
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = await new_thread(http)
        run_id = await finished_run(http, tid)
        last = (await http.get(f"/v1/threads/{tid}")).json()["last_seq"]
        assert last > 0
        bad = ["abc", "-1", "1.5", "+1", "0x1", "1e3", "²", "٣", "9" * 5000, str(2**70)]
        for path in (f"/v1/threads/{tid}/stream", f"/v1/runs/{run_id}/stream", "/v1/events"):
            for value in bad:
                # Latin-1 where it can be (how a server decodes header bytes), so '²' arrives as '²'.
                raw = value.encode("latin-1") if value.isascii() or value == "²" else value.encode()
                header = [(b"last-event-id", raw)]
                assert_error(await http.get(path, headers=header), 400, "invalid_last_event_id")
                assert_error(await http.get(path, params={"after": value}), 400, "invalid_last_event_id")
                # Found by schemathesis: a malformed ?after= was ignored when Last-Event-ID was given.
                both = await http.get(path, headers={"Last-Event-ID": "0"}, params={"after": value})
                assert_error(both, 400, "invalid_last_event_id")
        # Ahead of the log is well-formed, but conflicts with the log as it is: 409 (found by schemathesis:
        # a 400 said the request itself was malformed, which no later log could change).
        for path in (f"/v1/threads/{tid}/stream", f"/v1/runs/{run_id}/stream"):
            assert_error(await http.get(path, headers={"Last-Event-ID": str(last + 1)}), 409, "invalid_last_event_id")
            assert_error(await http.get(path, params={"after": str(last + 1)}), 409, "invalid_last_event_id")
        feed_ahead = {"Last-Event-ID": "100000"}
        assert_error(await http.get("/v1/events", headers=feed_ahead), 409, "invalid_last_event_id")
        # Last-Event-ID wins over ?after=, also when it is the bad one.
        wins = await http.get(f"/v1/threads/{tid}/stream", headers={"Last-Event-ID": "x"}, params={"after": "1"})
        assert_error(wins, 400, "invalid_last_event_id")
        # The last seq itself is a valid resume point (nothing to replay yet).
        async with http.stream("GET", f"/v1/threads/{tid}/stream", headers={"Last-Event-ID": str(last)}) as ok:
            assert ok.status_code == 200
            assert ok.headers["content-type"].startswith("text/event-stream")
    await still_serves(server.url)


# found by schemathesis (tests/test_fuzz.py)


async def test_a_405_names_every_method_of_the_path(server: ServerThread):
    """Found: a 405 named only the methods of the first route of its path (`PUT /v1/threads/{tid}` gave
    `Allow: GET`, though PATCH and DELETE are served too)."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = await new_thread(http)
        for path, allowed in (
            (f"/v1/threads/{tid}", "DELETE, GET, PATCH"),
            ("/v1/threads", "GET, POST"),
            (f"/v1/threads/{tid}/runs", "GET, POST"),
            ("/v1/events", "GET"),
            ("/healthz", "GET"),
        ):
            for method in ("PUT", "OPTIONS", "TRACE"):
                response = await http.request(method, path)
                assert_error(response, 405, "method_not_allowed")
                assert response.headers["allow"] == allowed, (method, path)
    await still_serves(server.url)


async def test_text_holding_a_nul_character_is_refused_and_names_nothing(server: ServerThread):
    """Found on PostgreSQL, whose text cannot hold U+0000: a steer holding one answered a plain-text 500
    (and so would a run, a title, a protocol message or an id in a URL). Now both engines refuse such
    text with a clear error, and an id holding one is not found."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = await new_thread(http)
        for method, path, body, field in (
            ("POST", f"/v1/threads/{tid}/runs", {"input": "a\u0000b"}, "input"),
            ("POST", f"/v1/threads/{tid}/steer", {"input": "\u0000"}, "input"),
            ("POST", "/v1/threads", {"title": "a\u0000"}, "title"),
            ("PATCH", f"/v1/threads/{tid}", {"title": "\u0000"}, "title"),
        ):
            error = assert_error(await http.request(method, path, json=body), 422, "invalid_request")
            assert field in error["message"] and "NUL" in error["message"], error
        for method, path in (
            ("GET", "/v1/threads/thr%00"),
            ("DELETE", "/v1/threads/thr%00"),
            ("GET", "/v1/threads/%00/stream"),
            ("GET", "/v1/runs/run%00"),
            ("POST", "/v1/runs/run%00/cancel"),
            ("GET", "/v1/runs/run%00/stream"),
            ("GET", "/v1/ag-ui/thr%00"),
            ("GET", "/v1/ai-sdk/chat/thr%00"),
        ):
            assert_error(await http.request(method, path), 404, "not_found")
        message = {"id": "m1", "role": "user", "content": "a\u0000b"}
        run_input = {"threadId": "fuzz-nul", "runId": "r1", "messages": [message]}
        assert_error(await http.post("/v1/ag-ui", json=run_input), 400, "unsupported_content")
        chat = {
            "id": "fuzz-nul",
            "messages": [{"id": "m\u0000", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        }
        assert_error(await http.post("/v1/ai-sdk/chat", json=chat), 400, "unsupported_content")
        await no_runs(http, tid)
        assert (await http.get("/v1/threads/fuzz-nul/runs")).json()["runs"] == []
    await still_serves(server.url)


@pytest.mark.sqlite_only  # the API's own answer: the same on every engine
async def test_an_unexpected_failure_is_a_json_500(tmp_path):
    """A failure no route expected is logged and answered as an error like any other, not as plain text."""
    app = create_app(Settings(data_dir=tmp_path))

    @app.get("/v1/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    server = ServerThread(app.state.settings, app=app).start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert_error(await http.get("/v1/broken"), 500, "internal_error")
        await still_serves(server.url)
    finally:
        server.stop()


# token


async def test_token_guards_v1_but_not_healthz(start_server):
    server = start_server(token="s3cret")
    right = {"Authorization": "Bearer s3cret"}
    async with httpx.AsyncClient(base_url=server.url) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        missing = assert_error(await http.get("/v1/threads"), 401, "unauthorized")
        assert "missing" in missing["message"]
        for headers in (
            {"Authorization": "Bearer nope"},
            {"Authorization": "Bearer s3cre"},
            {"Authorization": "Bearer s3cret2"},
            {"Authorization": "Basic s3cret"},
            {"Authorization": "s3cret"},
            {"Authorization": "Bearer"},
        ):
            response = await http.get("/v1/threads", headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        for method, path in (("POST", "/v1/threads"), ("GET", "/v1/events"), ("GET", "/v1/runs/run_x")):
            assert_error(await http.request(method, path), 401, "unauthorized")  # 401 comes before 404
        ok = await http.get("/v1/threads", headers=right)
        assert ok.status_code == 200, ok.text
        assert ok.json()["threads"] == []  # the refused POST made nothing
        assert (await http.get("/v1/threads", headers={"authorization": "bearer s3cret"})).status_code == 200
    await still_serves(server.url, headers=right)


# the API description


async def test_openapi_is_served_and_lists_the_v1_paths(server: ServerThread):
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.") and spec["info"]["title"] == "Tether"
    expected = {
        "/v1/threads": {"get", "post"},
        "/v1/threads/{thread_id}": {"get", "delete"},
        "/v1/threads/{thread_id}/runs": {"get", "post"},
        "/v1/threads/{thread_id}/stream": {"get"},
        "/v1/threads/{thread_id}/steer": {"post"},
        "/v1/threads/{thread_id}/retry": {"post"},
        "/v1/runs/{run_id}": {"get"},
        "/v1/runs/{run_id}/cancel": {"post"},
        "/v1/runs/{run_id}/approvals": {"post"},
        "/v1/runs/{run_id}/stream": {"get"},
        "/v1/events": {"get"},
        "/healthz": {"get"},
    }
    for path, methods in expected.items():
        assert path in spec["paths"], path
        assert methods <= set(spec["paths"][path]), (path, set(spec["paths"][path]))
    create_run = spec["paths"]["/v1/threads/{thread_id}/runs"]["post"]
    assert {"202", "404", "409", "422"} <= set(create_run["responses"])
    assert "ErrorOut" in create_run["responses"]["404"]["content"]["application/json"]["schema"]["$ref"]
