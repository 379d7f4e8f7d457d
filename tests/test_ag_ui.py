"""POST /v1/ag-ui, driven by @ag-ui/client's HttpAgent from npm (tests/js/ag_ui.mjs), on both engines.

Every stream the client receives is checked against AG-UI's ordering rules, and the client's messages
against the thread's stored history: the same ids as GET /v1/ag-ui/{threadId}, the same transcript as
GET /v1/threads/{tid}.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tether.transcript import comparable

from .conftest import notes
from .js import node
from .js.rules import check_ag_ui_run, sse_data


def agent(server: Any, thread_id: str, steps: list[dict[str, Any]], **program: Any) -> list[dict[str, Any]]:
    """Run the client's steps; every stream it received is checked against AG-UI's ordering rules (one
    the client cut off itself, as far as it goes)."""
    results = node.run("ag_ui.mjs", server.url, {"threadId": thread_id, "steps": steps, **program})
    for step, result in zip(steps, results, strict=True):
        events = result["events"]
        if "abortAfter" in step and events and events[-1] == ABORTED:
            events = events[:-1]  # the client's own notice of its abortRun(), not the server's
        if events:
            run_id = step.get("runId") or result["loaded"]["runId"]
            check_ag_ui_run(events, thread_id, run_id, complete="abortAfter" not in step)
    return results


ABORTED = {"type": "RUN_ERROR", "rawEvent": {}, "message": "This operation was aborted", "code": "abort"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def assistant_text(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "assistant" and m.get("content")]


def assert_matches_the_stored_history(server: Any, thread_id: str, messages: list[dict[str, Any]]) -> None:
    """The client holds the stored history, by the same ids."""
    view = httpx.get(f"{server.url}/v1/ag-ui/{thread_id}").json()
    assert [m["id"] for m in messages] == [m["id"] for m in view["messages"]]
    stored = httpx.get(f"{server.url}/v1/threads/{thread_id}").json()["messages"]
    assert comparable(messages) == comparable(view["messages"]) == comparable(stored)


def test_a_streamed_answer_a_tool_call_and_a_second_turn(server):
    thread = new_id("thread")
    first, second = agent(server, thread, [{"send": "/stream 5", "runId": "r1"}, {"send": "/tools 2", "runId": "r2"}])
    for step, run_id in ((first, "r1"), (second, "r2")):
        assert "error" not in step, step["error"]
        check_ag_ui_run(step["events"], thread, run_id)
    assert assistant_text(first["messages"]) == ["w1 w2 w3 w4 w5"]
    calls = [c for m in second["messages"] if m["role"] == "assistant" for c in m.get("toolCalls", [])]
    assert [c["function"]["name"] for c in calls] == ["sleep", "sleep"]
    assert [m["content"] for m in second["messages"] if m["role"] == "tool"] == ["slept 0 ms", "slept 0 ms"]
    assert assistant_text(second["messages"])[-1] == "Ran 2 sleep calls in parallel."
    user_messages = [m for m in second["messages"] if m["role"] == "user"]
    assert [m["content"] for m in user_messages] == ["/stream 5", "/tools 2"]  # each once: not echoed back
    assert_matches_the_stored_history(server, thread, second["messages"])
    run = httpx.get(f"{server.url}/v1/threads/{thread}/runs").json()["runs"]
    assert [r["status"] for r in run] == ["completed", "completed"]


def test_a_tool_error_is_marked_by_a_custom_event_the_client_accepts(start_server):
    server = start_server(agents=("tests.agents:retrying",))  # its tool raises ModelRetry
    thread = new_id("thread")
    [step] = agent(server, thread, [{"send": "where is my order?", "runId": "r1"}])
    assert "error" not in step, step["error"]
    kinds = [(e["type"], e.get("name")) for e in step["events"]]
    failed = kinds.index(("CUSTOM", "tether.tool_failed"))
    assert kinds[failed + 1] == ("TOOL_CALL_RESULT", None)
    assert step["events"][failed]["value"] == {"toolCallId": "call_1", "outcome": "retried"}
    [result] = [m for m in step["messages"] if m["role"] == "tool"]
    assert result["content"] == "no order A-1: ask the user for its number"
    assert assistant_text(step["messages"]) == ["could not look it up: retried"]
    assert_matches_the_stored_history(server, thread, step["messages"])


@pytest.mark.parametrize(
    ("resume", "note", "reply"),
    [
        ({"status": "resolved"}, ["hello"], "saved the note 'hello'"),
        ({"status": "resolved", "payload": {"approved": True, "editedArgs": {"text": "edited"}}}, ["edited"], None),
        ({"status": "resolved", "payload": {"approved": False, "reason": "not now"}}, [], "not now"),
        ({"status": "cancelled"}, [], "The user denied this tool call."),
    ],
)
def test_an_approval_is_an_interrupt_and_resume_decides_it(server, resume, note, reply):
    thread = new_id("thread")
    paused, resumed = agent(
        server, thread, [{"send": "/approve hello", "runId": "r1"}, {"resume": resume, "runId": "r2"}]
    )
    check_ag_ui_run(paused["events"], thread, "r1")
    assert paused["events"][-1]["outcome"]["type"] == "interrupt"
    [interrupt] = paused["pendingInterrupts"]
    assert interrupt["reason"] == "tool_call" and interrupt["id"] == f"int-{interrupt['toolCallId']}"
    assert "error" not in resumed, resumed["error"]
    check_ag_ui_run(resumed["events"], thread, "r2")
    assert resumed["pendingInterrupts"] == []
    [result] = [e for e in resumed["events"] if e["type"] == "TOOL_CALL_RESULT"]
    assert result["toolCallId"] == interrupt["toolCallId"]
    assert notes(server.settings.data_dir) == note
    if reply is not None:
        assert reply in assistant_text(resumed["messages"])[-1]
    assert_matches_the_stored_history(server, thread, resumed["messages"])
    [run] = httpx.get(f"{server.url}/v1/threads/{thread}/runs").json()["runs"]
    assert run["status"] == "completed"  # one Tether run, two AG-UI runs


def test_a_client_cut_off_mid_run_re_attaches_with_the_same_run_id(server):
    thread = new_id("thread")
    cut, again, finished = agent(
        server,
        thread,
        [{"send": "/stream 40 ms=20", "runId": "r1", "abortAfter": 6}, {"runId": "r1"}, {"runId": "r1"}],
    )
    # Cut off after its 6th event (a few more may come in the same read before the abort lands), mid-run.
    assert len(cut["events"]) < 20 and assistant_text(cut["messages"])[0].count("w") < 40
    assert "error" not in again, again["error"]
    check_ag_ui_run(again["events"], thread, "r1")
    assert [e["type"] for e in again["events"][:2]] == ["RUN_STARTED", "MESSAGES_SNAPSHOT"]
    words = " ".join(f"w{i}" for i in range(1, 41))
    assert [(m["role"], m["content"]) for m in again["messages"]] == [
        ("user", "/stream 40 ms=20"),
        ("assistant", words),
    ]
    # The run finished meanwhile: the same runId replays the same stream, whole, and ends.
    check_ag_ui_run(finished["events"], thread, "r1")
    without_times = [{k: v for k, v in e.items() if k != "timestamp"} for e in finished["events"]]
    assert without_times == [{k: v for k, v in e.items() if k != "timestamp"} for e in again["events"]]
    assert_matches_the_stored_history(server, thread, finished["messages"])


def test_a_page_loaded_while_a_run_is_active_re_attaches_and_after_it_loads_the_messages(server):
    thread = new_id("thread")
    _, during, after = agent(
        server,
        thread,
        [{"send": "/stream 40 ms=20", "runId": "r1", "abortAfter": 4}, {"reload": True}, {"reload": True}],
    )
    assert during["loaded"]["runId"] == "r1"
    assert "error" not in during, during["error"]
    check_ag_ui_run(during["events"], thread, "r1")
    assert assistant_text(during["messages"]) == [" ".join(f"w{i}" for i in range(1, 41))]
    assert after["loaded"]["runId"] is None and after["events"] == []
    assert after["messages"] == during["messages"]
    assert_matches_the_stored_history(server, thread, after["messages"])


def test_a_thread_made_with_the_rest_api_continues_once_its_messages_are_loaded(server):
    thread = httpx.post(f"{server.url}/v1/threads", json={}).json()["id"]
    run = httpx.post(f"{server.url}/v1/threads/{thread}/runs", json={"input": "/stream 2"}).json()
    httpx.get(f"{server.url}/v1/runs/{run['run_id']}/stream", timeout=30)  # to its end
    [stale] = agent(server, thread, [{"send": "hello", "runId": "r1"}])
    assert "409" in stale["error"] and "history_conflict" in stale["error"]
    _, sent = agent(server, thread, [{"reload": True}, {"send": "/stream 3", "runId": "r2"}])
    assert "error" not in sent, sent["error"]
    check_ag_ui_run(sent["events"], thread, "r2")
    assert assistant_text(sent["messages"]) == ["w1 w2", "w1 w2 w3"]
    assert_matches_the_stored_history(server, thread, sent["messages"])


def post(server: Any, body: dict[str, Any], **headers: str) -> httpx.Response:
    base = {"tools": [], "context": [], "state": {}, "forwardedProps": {}}
    return httpx.post(f"{server.url}/v1/ag-ui", json={**base, **body}, headers=headers, timeout=30)


def user(message_id: str, text: str) -> dict[str, Any]:
    return {"id": message_id, "role": "user", "content": text}


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_bad_requests_get_clear_errors(server):
    thread = new_id("thread")
    first = post(server, {"threadId": thread, "runId": "r1", "messages": [user("u1", "/stream 2")]})
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(d) for d in sse_data(first.text)]
    check_ag_ui_run(events, thread, "r1")
    history = httpx.get(f"{server.url}/v1/ag-ui/{thread}").json()["messages"]
    assert history[0]["id"] == "u1"

    def send(run_id: str, messages: list[dict[str, Any]], **extra: Any) -> tuple[int, str]:
        return error_of(post(server, {"threadId": thread, "runId": run_id, "messages": messages, **extra}))

    assert send("r2", [user("x", "inserted"), *history, user("u2", "hi")]) == (409, "history_conflict")
    assert send("r2", [user("u2", "hi")]) == (409, "history_conflict")  # lacks the stored messages
    assert send("r2", history) == (400, "no_new_input")
    assert send("r1", [*history, user("u2", "hi")]) == (409, "run_id_reused")
    assert send("r2", [*history, {"id": "a9", "role": "assistant", "content": "made up"}]) == (
        400,
        "unsupported_message",
    )
    assert send("r2", [*history, user("u2", "   ")]) == (400, "empty_message")
    image = {
        "id": "u2",
        "role": "user",
        "content": [{"type": "image", "source": {"type": "url", "value": "http://x/y.png"}}],
    }
    assert send("r2", [*history, image]) == (400, "unsupported_content")
    resume = [{"interruptId": "int-x", "status": "resolved"}]
    assert send("r2", history, resume=resume) == (409, "not_awaiting_approval")
    assert error_of(post(server, {"threadId": "no spaces", "runId": "r", "messages": []})) == (400, "invalid_thread_id")
    assert error_of(post(server, {"threadId": thread, "runId": "", "messages": []})) == (400, "invalid_run_id")
    assert error_of(post(server, {"threadId": thread, "messages": []})) == (422, "invalid_request")
    assert error_of(httpx.get(f"{server.url}/v1/ag-ui/{new_id('nothing')}")) == (404, "not_found")

    paused = post(server, {"threadId": thread, "runId": "r3", "messages": [*history, user("u3", "/approve x")]})
    check_ag_ui_run([json.loads(d) for d in sse_data(paused.text)], thread, "r3")
    interrupt = json.loads(sse_data(paused.text)[-1])["outcome"]["interrupts"][0]["id"]
    history = httpx.get(f"{server.url}/v1/ag-ui/{thread}").json()["messages"]
    bad = [{"interruptId": interrupt, "status": "resolved", "payload": {"editedArgs": {"text": "y"}}}]
    assert send("r4", history, resume=bad) == (400, "invalid_resume")
    assert send("r4", history, resume=[{"interruptId": "int-nope", "status": "resolved"}]) == (400, "unknown_interrupt")
    assert send("r4", history, resume=[]) == (400, "no_new_input")
    assert send("r4", [*history, user("u4", "hi")]) == (409, "thread_busy")  # the paused run is active
    both = [{"interruptId": interrupt, "status": "resolved"}]
    assert send("r4", [*history, user("u4", "hi")], resume=both) == (400, "resume_with_input")
    resumed = post(server, {"threadId": thread, "runId": "r4", "messages": history, "resume": both})
    check_ag_ui_run([json.loads(d) for d in sse_data(resumed.text)], thread, "r4")
    assert notes(server.settings.data_dir) == ["x"]


def test_another_users_thread_does_not_exist(start_server):
    server = start_server(auth="tests.auth:by_header")
    thread = new_id("thread")
    mine = post(
        server, {"threadId": thread, "runId": "r1", "messages": [user("u1", "/stream 2")]}, **{"x-user": "alice"}
    )
    assert mine.status_code == 200
    check_ag_ui_run([json.loads(d) for d in sse_data(mine.text)], thread, "r1")
    theirs = post(server, {"threadId": thread, "runId": "r2", "messages": [user("u9", "hi")]}, **{"x-user": "bob"})
    assert error_of(theirs) == (404, "not_found")
    assert error_of(httpx.get(f"{server.url}/v1/ag-ui/{thread}", headers={"x-user": "bob"})) == (404, "not_found")
    runs = httpx.get(f"{server.url}/v1/threads/{thread}/runs", headers={"x-user": "alice"}).json()["runs"]
    assert len(runs) == 1
    assert httpx.get(f"{server.url}/v1/threads", headers={"x-user": "bob"}).json()["threads"] == []
    assert post(server, {"threadId": thread, "runId": "r3", "messages": []}).status_code == 401


def test_the_front_end_in_the_docs_works(server, tmp_path):
    """docs/ag-ui.md's minimal front end, as it is written there, run twice against a server like `make
    serve`'s (the demo agent, no token): the second run continues the same thread; an approval is shown."""
    docs = (Path(__file__).parents[1] / "docs" / "ag-ui.md").read_text()
    [code] = re.findall(r"## A minimal front end\n.*?```js\n(.*?)```", docs, re.DOTALL)
    assert "http://127.0.0.1:8765" in code
    script = tmp_path / "chat.mjs"
    script.write_text(code.replace("http://127.0.0.1:8765", server.url))
    (tmp_path / "node_modules").symlink_to(node.HERE / "node_modules")
    node_path = node.require_clients()

    def chat(text: str) -> str:
        done = subprocess.run([node_path, str(script), text], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert chat("/stream 5") == "w1 w2 w3 w4 w5\n\n"
    assert chat("/stream 2") == "w1 w2\n\n"
    assert "waiting for: Approve write_note(" in chat("/approve hello")
    view = httpx.get(f"{server.url}/v1/ag-ui/my-first-thread").json()
    assert [m["content"] for m in view["messages"] if m["role"] == "user"] == [
        "/stream 5",
        "/stream 2",
        "/approve hello",
    ]
    assert view["runId"] is not None  # the approval waits
