"""The edge against hostile web pages: a forged Host is not served, a foreign Origin changes nothing,
CORS only for the origins allowed, and the UI's security headers. The routes come from the OpenAPI
schema, so a new route is covered without anyone remembering to."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tether.client import TetherClient

from .conftest import wait_for_status
from .test_bad_input import assert_error

EVIL = "http://evil.example"
BODIES: dict[str, Any] = {
    "/v1/threads": {},
    "/v1/threads/{thread_id}": {"title": "renamed"},
    "/v1/threads/{thread_id}/runs": {"input": "/stream 2"},
    "/v1/threads/{thread_id}/steer": {"input": "/stream 2"},
    "/v1/runs/{run_id}/approvals": {"decisions": {"call_a": {"approved": True}}},
}


def operations(schema: dict[str, Any], methods: set[str]) -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, ops in schema["paths"].items()
        for method in ops
        if method.upper() in methods and path.startswith("/v1/")
    )


async def state(client: TetherClient) -> list[Any]:
    """Everything a request could have changed, to compare before and after."""
    threads = await client.list_threads()
    return [(t["id"], t["title"], [(r["id"], r["status"]) for r in await client.list_runs(t["id"])]) for t in threads]


async def test_a_foreign_origin_changes_nothing_on_any_route(start_server):
    server = start_server(agents=("tests.agents:two_approvals",))
    schema = server.app.openapi()
    changing = operations(schema, {"POST", "PATCH", "DELETE", "PUT"})
    assert len(changing) >= 8, changing  # the 8 of today, and any added later
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url) as http:
        thread = await client.create_thread("mine")
        run = await client.send(thread["id"], "delete two files")
        await wait_for_status(client, run["run_id"], {"awaiting_approval"})
        before = await state(client)
        for method, template in changing:
            path = template.format(thread_id=thread["id"], run_id=run["run_id"], chat_id=thread["id"])
            for origin in (EVIL, "null", f"http://127.0.0.1:{server.settings.port + 1}"):
                response = await http.request(method, path, json=BODIES.get(template), headers={"Origin": origin})
                error = assert_error(response, 403, "cross_origin")
                assert "--cors-origins" in error["message"]
        assert await state(client) == before
        assert (await client.get_run(run["run_id"]))["status"] == "awaiting_approval"

        # The server's own pages may: the UI sends its own origin.
        own = {"Origin": server.url}
        assert (await http.patch(f"/v1/threads/{thread['id']}", json={"title": "ok"}, headers=own)).status_code == 200
        # Reading is not refused (a page cannot read the answer without CORS anyway).
        assert (await http.get("/v1/threads", headers={"Origin": EVIL})).status_code == 200
        assert "access-control-allow-origin" not in (await http.get("/v1/threads", headers={"Origin": EVIL})).headers


async def test_a_forged_host_is_not_served_on_any_route(start_server):
    server = start_server()
    every = [*operations(server.app.openapi(), {"GET", "POST", "PATCH", "DELETE"}), ("GET", "/healthz"), ("GET", "/")]
    async with httpx.AsyncClient(base_url=server.url) as http:
        for method, template in every:
            path = template.format(thread_id="thr_x", run_id="run_x", chat_id="thr_x", attachment_id="att_x")
            for host in ("rebind.evil.example", f"rebind.evil.example:{server.settings.port}", "localhost.evil"):
                response = await http.request(method, path, json=BODIES.get(template), headers={"Host": host})
                assert_error(response, 421, "misdirected_request")
        assert (await http.get("/v1/threads")).json()["threads"] == []  # nothing was created
        for host in ("localhost", f"localhost:{server.settings.port}", "127.0.0.1", "[::1]:8765", "LOCALHOST"):
            assert (await http.get("/v1/threads", headers={"Host": host})).status_code == 200, host


async def test_allowed_hosts_and_cors_origins_let_a_front_end_in(start_server):
    app = "https://app.example.com"
    server = start_server(allowed_hosts=("tether.example.com", "*.internal"), cors_origins=(app,))
    async with httpx.AsyncClient(base_url=server.url) as http:
        for host in ("tether.example.com", "a.b.internal"):
            assert (await http.get("/v1/threads", headers={"Host": host})).status_code == 200, host
        assert_error(await http.get("/v1/threads", headers={"Host": "internal"}), 421, "misdirected_request")

        preflight = await http.options(
            "/v1/threads",
            headers={
                "Origin": app,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == app
        assert "POST" in preflight.headers["access-control-allow-methods"]
        created = await http.post("/v1/threads", json={"title": "from the app"}, headers={"Origin": app})
        assert created.status_code == 201 and created.headers["access-control-allow-origin"] == app
        assert_error(await http.post("/v1/threads", json={}, headers={"Origin": EVIL}), 403, "cross_origin")
        refused = await http.options("/v1/threads", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in refused.headers


@pytest.mark.sqlite_only
async def test_every_response_carries_the_security_headers(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path in ("/", "/ui/js/app.js", "/v1/threads", "/healthz", "/v1/nope"):
            response = await http.get(path)
            assert response.headers["x-content-type-options"] == "nosniff", path
            assert response.headers["referrer-policy"] == "no-referrer", path
            assert response.headers["x-frame-options"] == "DENY", path
            policy = response.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
        assert (await http.get("/docs")).headers["content-security-policy"] == "frame-ancestors 'none'"
