"""Real agents and real users: deps made for every execution of a run, several agents on one server,
threads kept to their user on every route, and Tether mounted inside a host app with its own auth.

Every test runs on both stores (SQLite, and PostgreSQL with Redis), over real HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import tether
from tether.api.auth import AuthConfigError, read_users
from tether.client import TetherClient, attachment

from .conftest import ServerThread, host_of, wait_for_status
from .test_bad_input import assert_error

ALICE, BOB = "alice-token-1234", "bob-token-5678"


def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.toml"
    path.write_text(
        f'[[users]]\nid = "alice"\ntoken = "{ALICE}"\n\n'
        # Bob's token is given as its SHA-256, as a file that others can read should hold it.
        f'[[users]]\nid = "bob"\ntoken_sha256 = "{hashlib.sha256(BOB.encode()).hexdigest()}"\n'
    )
    return path


async def answer(client: TetherClient, run_id: str) -> tuple[dict[str, Any], str]:
    """The run once it ended, and the text of its answer."""
    run = await wait_for_status(client, run_id, {"completed", "failed", "cancelled", "awaiting_approval"})
    events = [e.data async for e in client.stream_run(run_id)] if run["status"] != "awaiting_approval" else []
    said = {e["messageId"] for e in events if e["type"] == "TEXT_MESSAGE_START" and e.get("role") != "user"}
    return run, "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT" and e["messageId"] in said)


def deps_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# deps


@pytest.mark.parametrize("agent", ["served_sync", "served_async"])
async def test_the_deps_factory_gives_each_run_its_user_and_thread(start_server, tmp_path, monkeypatch, agent):
    log = tmp_path / "deps.log"
    monkeypatch.setenv("TETHER_TEST_DEPS_LOG", str(log))
    server = start_server(agents=(f"tests.agents:{agent}",), users_file=users_file(tmp_path))
    async with TetherClient(server.url, ALICE) as alice:
        thread = await alice.create_thread(metadata={"team": "blue"})
        run = await alice.send(thread["id"], "who")
        done, text = await answer(alice, run["run_id"])
    assert done["status"] == "completed", done
    pool = "pool-1" if agent == "served_sync" else "None"  # only served_sync has a lifespan
    assert text == f"user=alice thread={thread['id']} run={run['run_id']} team=blue execution=start pool={pool}"
    how = "sync" if agent == "served_sync" else "async"
    # RunInfo.agent is the name the agent is served under: here, after its attribute.
    assert deps_log(log) == [{"how": how, "agent": agent, "run_id": run["run_id"], "execution": "start"}]


async def test_without_users_the_factory_is_told_no_user(start_server):
    server = start_server(agents=("tests.agents:served_sync",))
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        _, text = await answer(client, (await client.send(thread["id"], "who"))["run_id"])
    assert text.startswith(f"user=None thread={thread['id']} ")


async def test_a_failing_deps_factory_fails_the_run_with_its_message(start_server, tmp_path):
    server = start_server(agents=("tests.agents:served_failing",), users_file=users_file(tmp_path))
    async with TetherClient(server.url, ALICE) as alice:
        thread = await alice.create_thread()
        run = await alice.send(thread["id"], "who")
        done = await wait_for_status(alice, run["run_id"], {"completed", "failed", "cancelled"})
        assert done["status"] == "failed"
        assert "could not make its deps: LookupError: no account for user 'alice'" in done["error"], done
        events = [e.data async for e in alice.stream_run(run["run_id"])]
        assert events[0]["type"] == "RUN_STARTED"
        assert events[-1]["type"] == "RUN_ERROR" and "no account for user 'alice'" in events[-1]["message"]
        # The thread is free again: the failure left no run behind.
        again = await alice.send(thread["id"], "who")
        assert (await wait_for_status(alice, again["run_id"], {"failed", "completed"}))["status"] == "failed"


async def test_deps_are_made_again_when_an_approved_run_resumes(start_server, tmp_path, monkeypatch):
    log = tmp_path / "deps.log"
    monkeypatch.setenv("TETHER_TEST_DEPS_LOG", str(log))
    server = start_server(agents=("tests.agents:served_sync",), users_file=users_file(tmp_path))
    async with TetherClient(server.url, ALICE) as alice:
        thread = await alice.create_thread()
        run = await alice.send(thread["id"], "guarded")
        paused = await wait_for_status(alice, run["run_id"], {"awaiting_approval"})
        [call] = paused["pending_approvals"]
        assert call["tool_name"] == "guarded_whoami"
        await alice.decide(run["run_id"], {call["tool_call_id"]: {"approved": True}})
        done, text = await answer(alice, run["run_id"])
    assert done["status"] == "completed"
    assert text.endswith("execution=resume pool=pool-1") and "user=alice" in text
    assert [entry["execution"] for entry in deps_log(log)] == ["start", "resume"]


async def test_deps_are_made_again_when_a_run_recovers_after_sigkill(tether_process, tmp_path):
    log = tmp_path / "deps.log"
    users = users_file(tmp_path)
    args = ("--agent", "tests.agents:served_sync", "--users", str(users))
    env = {"TETHER_TEST_DEPS_LOG": str(log)}
    crashing = tether_process(*args, env={**env, "TETHER_CRASH_AT": "tools_started"}).start()
    async with TetherClient(crashing.url, ALICE) as alice:
        thread = await alice.create_thread()
        run = await alice.send(thread["id"], "nap who")
    assert await asyncio.to_thread(crashing.proc.wait, 60) == -signal.SIGKILL
    restarted = tether_process(*args, data_dir=crashing.data_dir, env=env).start()
    async with TetherClient(restarted.url, ALICE) as alice:
        done, text = await answer(alice, run["run_id"])
    assert done["status"] == "completed", restarted.log()[-3000:]
    assert text.endswith("execution=recover pool=pool-1") and "user=alice" in text
    assert [entry["execution"] for entry in deps_log(log)] == ["start", "recover"]


# several agents


async def test_two_agents_each_answer_their_own_threads(start_server, tmp_path, monkeypatch):
    log = tmp_path / "deps.log"
    monkeypatch.setenv("TETHER_TEST_DEPS_LOG", str(log))
    server = start_server(agents=("who=tests.agents:served_sync", "approvals=tests.agents:two_approvals"))
    async with TetherClient(server.url) as client:
        listed = await client.agents()
        assert listed["default"] == "who"
        who, approvals = listed["agents"]
        assert (who["name"], who["description"], who["model"]) == ("who", "Says who asks.", "function:who-model")
        tools = {t["name"]: t for t in who["tools"]}
        assert {n: t["requires_approval"] for n, t in tools.items()} == {
            "whoami": False,
            "guarded_whoami": True,
            "nap": False,
        }
        assert tools["whoami"]["description"] == "Who is asking, from the run's deps."
        assert approvals["name"] == "approvals" and approvals["tools"][0]["name"] == "delete_file"
        assert approvals["tools"][0]["parameters"]["properties"] == {"path": {"type": "string"}}

        default = await client.create_thread()
        chosen = await client.create_thread(agent="approvals")
        assert (default["agent"], chosen["agent"]) == ("who", "approvals")
        assert (await client.get_thread(chosen["id"]))["agent"] == "approvals"
        assert {t["id"]: t["agent"] for t in await client.list_threads()} == {
            default["id"]: "who",
            chosen["id"]: "approvals",
        }
        _, text = await answer(client, (await client.send(default["id"], "who"))["run_id"])
        assert text.startswith("user=None thread=")
        assert [entry["agent"] for entry in deps_log(log)] == ["who"]  # the name it is served under
        paused = await wait_for_status(client, (await client.send(chosen["id"], "go"))["run_id"], {"awaiting_approval"})
        assert {c["tool_name"] for c in paused["pending_approvals"]} == {"delete_file"}

    async with httpx.AsyncClient(base_url=server.url) as http:
        unknown = assert_error(await http.post("/v1/threads", json={"agent": "nope"}), 400, "unknown_agent")
        assert "who, approvals" in unknown["message"]
        assert len((await http.get("/v1/threads")).json()["threads"]) == 2  # nothing was created


async def test_a_served_agents_model_replaces_the_agents_own(start_server):
    server = start_server(agents=("tests.agents:served_with_model",))
    async with TetherClient(server.url) as client:
        (agent,) = (await client.agents())["agents"]
        assert (agent["name"], agent["model"]) == ("served_with_model", "function:served")
        thread = await client.create_thread()
        _, text = await answer(client, (await client.send(thread["id"], "who"))["run_id"])
    assert text == "answered by the served model"


# users: every route is scoped to the caller


def _routes(app: FastAPI) -> set[tuple[str, str]]:
    paths = app.openapi()["paths"]
    return {(method.upper(), path) for path, operations in paths.items() for method in operations}


# Every route of the API, with a body that would succeed for the thread's own user. The isolation test
# fails if a route is missing here: a new route must say how it is kept to its user.
ROUTES: dict[tuple[str, str], Any] = {
    ("GET", "/healthz"): None,
    ("GET", "/metrics"): None,
    ("GET", "/v1/me"): None,
    ("GET", "/v1/agents"): None,
    ("GET", "/v1/threads"): None,
    ("POST", "/v1/threads"): {},
    ("GET", "/v1/threads/{thread_id}"): None,
    ("PATCH", "/v1/threads/{thread_id}"): {"title": "taken over"},
    ("DELETE", "/v1/threads/{thread_id}"): None,
    ("POST", "/v1/threads/{thread_id}/fork"): {"before_message_id": "m1"},
    ("POST", "/v1/threads/{thread_id}/runs"): {"input": "hello", "multitask": "enqueue"},
    ("GET", "/v1/threads/{thread_id}/runs"): None,
    ("POST", "/v1/threads/{thread_id}/steer"): {"input": "hello"},
    ("POST", "/v1/threads/{thread_id}/retry"): None,
    ("GET", "/v1/threads/{thread_id}/stream"): None,
    ("GET", "/v1/runs/{run_id}"): None,
    ("POST", "/v1/runs/{run_id}/cancel"): None,
    ("POST", "/v1/runs/{run_id}/approvals"): {"decisions": {"call_a": {"approved": True}}},
    ("GET", "/v1/runs/{run_id}/stream"): None,
    ("GET", "/v1/events"): None,
    ("POST", "/v1/ag-ui"): {
        "threadId": "THREAD",
        "runId": "bobs-run",
        "state": {},
        "messages": [{"id": "m1", "role": "user", "content": "hello"}],
        "tools": [],
        "context": [],
        "forwardedProps": {},
    },
    ("GET", "/v1/ag-ui/{thread_id}"): None,
    ("POST", "/v1/ai-sdk/chat"): {
        "id": "THREAD",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hello"}]}],
        "trigger": "submit-message",
    },
    ("GET", "/v1/ai-sdk/chat/{chat_id}"): None,
    ("GET", "/v1/ai-sdk/chat/{chat_id}/stream"): None,
    ("GET", "/v1/attachments/{attachment_id}"): None,
}
UNSCOPED = {("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/v1/me"), ("GET", "/v1/agents")}
"""Routes about the server or the caller, not about anyone's threads."""
NAMED_IN_BODY = {("POST", "/v1/ag-ui"), ("POST", "/v1/ai-sdk/chat")}
"""Routes whose body names the thread ("THREAD" in ROUTES)."""


def fill(template: str, body: Any, thread_id: str, run_id: str, attachment_id: str = "att_x") -> tuple[str, Any]:
    """A route's path and body for one thread and run (and an attachment of the thread's)."""
    path = template.format(thread_id=thread_id, run_id=run_id, chat_id=thread_id, attachment_id=attachment_id)
    if body is not None:
        body = json.loads(json.dumps(body).replace('"THREAD"', json.dumps(thread_id)))
    return path, body


async def request(http: httpx.AsyncClient, method: str, path: str, body: Any, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if path.endswith("/stream") or path == "/v1/events":
        # A stream that is refused answers at once; one that is granted is read only up to its headers.
        async with http.stream(method, path, headers=headers) as response:
            if response.status_code == 200:
                return httpx.Response(200, headers=response.headers)
            await response.aread()
            return response
    return await http.request(method, path, json=body, headers=headers)


async def test_another_users_threads_and_runs_are_404_on_every_route(start_server, tmp_path):
    server = start_server(agents=("tests.agents:two_approvals",), users_file=users_file(tmp_path))
    assert set(ROUTES) == _routes(server.app), "a route was added or removed: say in ROUTES how it is scoped"
    async with TetherClient(server.url, ALICE) as alice, httpx.AsyncClient(base_url=server.url) as http:
        thread = await alice.create_thread("alice's secret plans")
        run = await alice.send(thread["id"], "delete two files")
        await wait_for_status(alice, run["run_id"], {"awaiting_approval"})
        with_file = await alice.create_thread("alice's file")
        kept = await alice.send(
            with_file["id"], [{"type": "text", "text": "keep it"}, attachment(b"secret", "text/plain")]
        )
        await wait_for_status(alice, kept["run_id"], {"awaiting_approval"})
        [user_message, *_] = (await alice.get_thread(with_file["id"]))["messages"]
        [file] = user_message["attachments"]
        alice_ids = {thread["id"], run["run_id"]}

        for (method, template), body in ROUTES.items():
            if (method, template) in UNSCOPED or ("{" not in template and (method, template) not in NAMED_IN_BODY):
                continue
            path, body = fill(template, body, thread["id"], run["run_id"], file["id"])
            response = await request(http, method, path, body, BOB)
            assert_error(response, 404, "not_found")
            assert "alice" not in response.text

        # The same reads are Alice's own: each answers her.
        for (method, template), body in ROUTES.items():
            if method == "GET" and "{" in template:
                path, _ = fill(template, body, thread["id"], run["run_id"], file["id"])
                response = await request(http, method, path, None, ALICE)
                assert response.status_code == 200, (path, response.text)

        # Nothing Bob asked for happened: Alice's run still waits for her, her thread is as it was.
        assert (await alice.get_run(run["run_id"]))["status"] == "awaiting_approval"
        assert (await alice.get_thread(thread["id"]))["title"] == "alice's secret plans"
        assert [r["id"] for r in await alice.list_runs(thread["id"])] == [run["run_id"]]

        # Bob's lists and feed never mention Alice's ids; the unscoped routes answer him too.
        async with TetherClient(server.url, BOB) as bob:
            assert await bob.list_threads() == []
            assert await bob.me() == {"user": "bob", "auth": "users"}
            mine = await bob.create_thread("bob's")
            feed_text = await read_feed_while(http, BOB, lambda: alice.create_thread("alice's second"), mine["id"])
        for (method, path), body in ROUTES.items():
            if "{" not in path and method == "GET" and path != "/v1/events":
                response = await request(http, method, path, body, BOB)
                assert response.status_code == 200 and not alice_ids & set(_ids(response.text)), response.text
        assert not alice_ids & set(_ids(feed_text)) and "alice" not in feed_text
        assert mine["id"] in feed_text

        # And Alice's own requests all still work: her file is hers, her run resumes when she decides.
        assert await alice.get_attachment(file["id"]) == b"secret"
        decided = await alice.decide(run["run_id"], {"call_a": {"approved": True}, "call_b": {"approved": False}})
        assert decided["id"] == run["run_id"]
        assert (await wait_for_status(alice, run["run_id"], {"completed"}))["status"] == "completed"
        assert {t["id"] for t in await alice.list_threads()} >= {thread["id"]}


def _ids(text: str) -> list[str]:
    return re.findall(r"(?:thr|run)_[0-9a-f]{32}", text)


async def read_feed_while(http: httpx.AsyncClient, token: str, act: Any, expect_id: str) -> str:
    """Bob's feed, from its snapshot, while `act` (Alice) creates a thread and Bob renames his own
    (`expect_id`, whose notice shows the feed works, so that the absence of Alice's means something)."""
    seen = ""
    async with http.stream("GET", "/v1/events", headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status_code == 200
        await act()
        await http.patch(
            f"/v1/threads/{expect_id}", json={"title": "renamed"}, headers={"Authorization": f"Bearer {token}"}
        )
        async with asyncio.timeout(20):
            async for chunk in response.aiter_text():
                seen += chunk
                if "thread.updated" in seen:
                    return seen
    return seen


async def test_no_or_wrong_credentials_get_401_on_every_v1_route(start_server, tmp_path):
    server = start_server(users_file=users_file(tmp_path))
    async with httpx.AsyncClient(base_url=server.url) as http:
        for (method, template), body in ROUTES.items():
            path, body = fill(template, body, "thr_x", "run_x")
            for token in (None, "not-a-users-token"):
                response = await request(http, method, path, body, token)
                if path == "/healthz":
                    assert response.status_code == 200
                    continue
                error = assert_error(response, 401, "unauthorized")
                assert response.headers["www-authenticate"] == "Bearer"
                assert error["message"] == ("missing bearer token" if token is None else "wrong bearer token")
        assert (await http.get("/v1/threads", headers={"Authorization": f"Bearer {BOB}"})).status_code == 200


@pytest.mark.parametrize("function", ["by_header", "by_header_async"])
async def test_custom_auth_decides_who_calls(start_server, function):
    server = start_server(auth=f"tests.auth:{function}")
    async with (
        httpx.AsyncClient(base_url=server.url, headers={"x-user": "ann"}) as ann,
        httpx.AsyncClient(base_url=server.url, headers={"x-user": "ben"}) as ben,
        httpx.AsyncClient(base_url=server.url) as nobody,
    ):
        thread = (await ann.post("/v1/threads", json={"title": "ann's"})).json()
        assert thread["user_id"] == "ann"
        assert (await ann.get("/v1/me")).json() == {"user": "ann", "auth": "custom"}
        assert_error(await ben.get(f"/v1/threads/{thread['id']}"), 404, "not_found")
        assert (await ben.get("/v1/threads")).json()["threads"] == []
        refused = assert_error(await nobody.get("/v1/threads"), 401, "unauthorized")
        assert refused["message"] == "not authenticated"


@pytest.mark.sqlite_only
async def test_a_failing_auth_function_is_a_clear_500_and_logged(start_server, caplog):
    for function, logged in (("broken", "the authentication function raised"), ("not_an_id", "returned 42")):
        server = start_server(auth=f"tests.auth:{function}")
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert_error(await http.get("/v1/threads"), 500, "auth_failed")
            assert (await http.get("/healthz")).status_code == 200
        assert any(logged in record.getMessage() for record in caplog.records), function


def test_a_users_file_that_cannot_work_is_refused_with_its_reason(tmp_path):
    cases = {
        "": "has no users",
        "[[users]]\nid = 'a'\n": "exactly one of token and token_sha256",
        "[[users]]\nid = 'a'\ntoken = 'short'\n": "at least 8 characters",
        "[[users]]\nid = 'a'\ntoken_sha256 = 'abc'\n": "64 hexadecimal digits",
        "[[users]]\nid = 'a'\ntoken = '12345678'\n[[users]]\nid = 'a'\ntoken = '87654321'\n": "given twice",
        "[[users]]\nid = 'a'\ntoken = '12345678'\n[[users]]\nid = 'b'\ntoken = '12345678'\n": "same token",
        "[[users]]\nid = 'a'\ntoken = '12345678'\nrole = 'admin'\n": "unknown key(s) role",
        "[[users]\n": "not valid TOML",
    }
    for text, reason in cases.items():
        path = tmp_path / "users.toml"
        path.write_text(text)
        with pytest.raises(AuthConfigError, match=re.escape(reason)):
            read_users(path)
    with pytest.raises(AuthConfigError, match="cannot read the users file"):
        read_users(tmp_path / "missing.toml")


async def test_the_cli_acts_as_its_tokens_user(start_server, tmp_path):
    server = start_server(users_file=users_file(tmp_path))
    async with TetherClient(server.url, ALICE) as alice, TetherClient(server.url, BOB) as bob:
        hers = await alice.create_thread("alice's thread")
        his = await bob.create_thread("bob's thread")
    chatted = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tether", "chat", "--url", server.url, "--token", BOB],
        input="/stream 2\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert chatted.returncode == 0 and "agent> w1 w2" in chatted.stdout, chatted.stderr
    chat_thread = chatted.stderr.split()[1]

    async def tether_cli(*args: str) -> tuple[int, str, str]:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tether", *args, "--url", server.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, done.stdout, done.stderr

    code, out, err = await tether_cli("threads", "--token", BOB)
    assert code == 0, err
    assert {line.split()[0] for line in out.splitlines()[1:]} == {his["id"], chat_thread}
    code, out, err = await tether_cli("runs", chat_thread, "--token", BOB)
    assert code == 0 and len(out.splitlines()) == 2, (out, err)
    code, out, err = await tether_cli("runs", chat_thread, "--token", ALICE)
    assert code != 0 and "404" in err and out == ""
    code, out, err = await tether_cli("threads", "--token", ALICE, "--json")
    assert [t["id"] for t in json.loads(out)["threads"]] == [hers["id"]]
    code, out, err = await tether_cli("threads")
    assert code != 0 and "401" in err and "missing bearer token" in err


# embedding


SESSIONS = {"cookie-a": "ann", "cookie-b": "ben"}


def host_app(settings: tether.Settings) -> FastAPI:
    """Someone's own app: its own sign-in (a session cookie) and routes, with Tether mounted at /chat."""

    def session_user(request: Request) -> str | None:
        return SESSIONS.get(request.cookies.get("session", ""))

    chat = tether.create_app(
        settings, agents={"who": tether.ServedAgent(_who_agent(), deps=_host_deps)}, auth=session_user
    )
    host = host_of(chat)

    @host.get("/hello")
    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"hello": session_user(request)})

    return host


def _who_agent() -> Any:
    from .agents import who_agent

    return who_agent


async def _host_deps(info: tether.RunInfo) -> Any:
    from .agents import Caller

    return Caller(info.user, info.thread_id, info.run_id, info.thread_metadata, info.execution, "host-pool")


async def test_mounted_in_a_host_app_with_its_own_auth(tmp_path, engines):
    settings = tether.Settings(data_dir=tmp_path / "data", **engines(tmp_path / "data"))
    server = ServerThread(settings, app=host_app(settings)).start()
    try:
        async with (
            httpx.AsyncClient(base_url=server.url, cookies={"session": "cookie-a"}) as ann,
            httpx.AsyncClient(base_url=server.url, cookies={"session": "cookie-b"}) as ben,
        ):
            assert (await ann.get("/hello")).json() == {"hello": "ann"}
            assert (await ann.get("/chat/v1/me")).json() == {"user": "ann", "auth": "custom"}
            assert_error(await httpx.AsyncClient(base_url=server.url).get("/chat/v1/threads"), 401, "unauthorized")
            thread = (await ann.post("/chat/v1/threads", json={})).json()
            assert thread["user_id"] == "ann" and thread["agent"] == "who"
            run = (await ann.post(f"/chat/v1/threads/{thread['id']}/runs", json={"input": "who"})).json()
            async with ann.stream("GET", f"/chat/v1/runs/{run['run_id']}/stream") as stream:
                lines = [line async for line in stream.aiter_lines()]  # the run's stream ends with the run
            assert any("RUN_FINISHED" in line for line in lines)
            stored = (await ann.get(f"/chat/v1/threads/{thread['id']}")).json()["messages"]
            assert stored[-1]["role"] == "assistant"
            expected = f"user=ann thread={thread['id']} run={run['run_id']} team=None execution=start pool=host-pool"
            assert stored[-1]["content"] == expected
            assert (await ben.get("/chat/v1/threads")).json()["threads"] == []
            assert_error(await ben.get(f"/chat/v1/threads/{thread['id']}"), 404, "not_found")
            ui = await ann.get("/chat/")
            assert ui.status_code == 200 and "<title>Tether</title>" in ui.text
    finally:
        server.stop()
