"""POST /v1/ai-sdk/chat and its resume, driven by the `ai` package's chat and DefaultChatTransport from
npm (tests/js/ai_sdk.mjs), on both engines.

Every stream the client receives is checked against the UI message stream's ordering rules, and the
chat's messages against GET /v1/ai-sdk/chat/{id}: the same messages, by the same ids. The React front end
in docs/ai-sdk.md is run as it is written there, with @ai-sdk/react (tests/js/ai_sdk_react.mjs).
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import notes
from .js import node
from .js.rules import check_ui_message_stream, sse_data


def chat(server: Any, chat_id: str, steps: list[dict[str, Any]], **program: Any) -> list[dict[str, Any]]:
    """Run the chat's steps; every stream the transport parsed is checked against the UI message stream's
    ordering rules (one the client cut off itself, as far as it goes)."""
    results = node.run("ai_sdk.mjs", server.url, {"chatId": chat_id, "steps": steps, **program})
    for step, result in zip(steps, results, strict=True):
        if result["chunks"]:
            check_ui_message_stream(result["chunks"], complete="stopAfter" not in step)
    return results


def new_id() -> str:
    return f"chat-{uuid.uuid4().hex[:12]}"


def shown(messages: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """What a UI renders of messages: ids, roles, and each part's kind, text, tool state and values."""
    keys = ("type", "text", "toolCallId", "state", "input", "output", "errorText")
    return [
        (
            m["id"],
            m["role"],
            [
                {k: p[k] for k in keys if k in p}
                | ({"approved": p["approval"].get("approved")} if "approval" in p else {})
                for p in m["parts"]
            ],
        )
        for m in messages
    ]


def texts(message: dict[str, Any]) -> str:
    return "".join(p["text"] for p in message["parts"] if p["type"] == "text")


def assert_matches_the_stored_chat(server: Any, chat_id: str, messages: list[dict[str, Any]]) -> None:
    stored = httpx.get(f"{server.url}/v1/ai-sdk/chat/{chat_id}").json()
    assert stored["id"] == chat_id
    assert shown(messages) == shown(stored["messages"])


def test_a_streamed_answer_a_tool_call_and_a_second_turn(server):
    chat_id = new_id()
    first, second = chat(server, chat_id, [{"send": "/stream 5"}, {"send": "/tools 2"}])
    for step in (first, second):
        assert (step["status"], step["error"]) == ("ready", None)
        check_ui_message_stream(step["chunks"])
    runs = httpx.get(f"{server.url}/v1/threads/{chat_id}/runs").json()["runs"]
    assert [r["status"] for r in runs] == ["completed", "completed"]
    user1, answer1, user2, answer2 = second["messages"]
    assert (answer1["id"], answer2["id"]) == (runs[0]["id"], runs[1]["id"])  # an answer is a run
    assert (texts(user1), texts(answer1), texts(user2)) == ("/stream 5", "w1 w2 w3 w4 w5", "/tools 2")
    tools = [p for p in answer2["parts"] if p["type"].startswith("tool-")]
    assert [(p["type"], p["state"], p["output"]) for p in tools] == [
        ("tool-sleep", "output-available", "slept 0 ms")
    ] * 2
    assert texts(answer2) == "Ran 2 sleep calls in parallel."
    assert_matches_the_stored_chat(server, chat_id, second["messages"])


def test_the_wire_is_the_ui_message_stream(server):
    chat_id = new_id()
    body = {"id": chat_id, "trigger": "submit-message", "messages": [user("u1", "/stream 2")], "appField": 1}
    response = httpx.post(f"{server.url}/v1/ai-sdk/chat", json=body, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    check_ui_message_stream(chunks)
    assert [c["type"] for c in chunks] == [
        "start", "start-step", "text-start", "text-delta", "text-delta", "text-end", "finish-step", "finish"
    ]  # fmt: skip


def test_a_tool_error_is_tool_output_error(start_server):
    server = start_server(agents=("tests.agents:retrying",))  # its tool raises ModelRetry
    chat_id = new_id()
    [retried] = chat(server, chat_id, [{"send": "where is my order?"}])
    assert (retried["status"], retried["error"]) == ("ready", None)
    assert [c["type"] for c in retried["chunks"] if c["type"].startswith("tool-output")] == ["tool-output-error"]
    [part] = [p for p in retried["messages"][-1]["parts"] if p["type"] == "tool-lookup_order"]
    assert (part["state"], part["errorText"]) == ("output-error", "no order A-1: ask the user for its number")
    assert texts(retried["messages"][-1]) == "could not look it up: retried"
    assert_matches_the_stored_chat(server, chat_id, retried["messages"])


def test_a_failed_run_ends_with_error(server):
    chat_id = new_id()
    [failed] = chat(server, chat_id, [{"send": "/fail"}])
    assert failed["chunks"][-1]["type"] == "error" and failed["status"] == "error"
    assert failed["error"] == failed["chunks"][-1]["errorText"] == "the demo model failed, as /fail asked"
    [run] = httpx.get(f"{server.url}/v1/threads/{chat_id}/runs").json()["runs"]
    assert run["status"] == "failed"


@pytest.mark.parametrize("approved", [True, False])
def test_an_approval_is_answered_with_the_sdks_tool_approval_parts(server, approved):
    chat_id = new_id()
    decision = {"approved": True} if approved else {"approved": False, "reason": "not now"}
    paused, resumed = chat(server, chat_id, [{"send": "/approve hello"}, {"approve": decision}])
    check_ui_message_stream(paused["chunks"])
    assert paused["chunks"][-1] == {"type": "finish", "finishReason": "tool-calls"}
    [request] = [c for c in paused["chunks"] if c["type"] == "tool-approval-request"]
    [part] = [p for p in paused["messages"][-1]["parts"] if p["type"] == "tool-write_note"]
    assert part["state"] == "approval-requested" and part["approval"]["id"] == request["approvalId"]
    assert part["input"] == {"text": "hello"}
    assert (resumed["status"], resumed["error"]) == ("ready", None)
    check_ui_message_stream(resumed["chunks"])
    assert resumed["chunks"][0] == {"type": "start", "messageId": paused["messages"][-1]["id"]}  # the same message
    [part] = [p for p in resumed["messages"][-1]["parts"] if p["type"] == "tool-write_note"]
    assert part["state"] == ("output-available" if approved else "output-denied")
    assert notes(server.settings.data_dir) == (["hello"] if approved else [])
    assert ("saved the note" if approved else "not now") in texts(resumed["messages"][-1])
    assert len(resumed["messages"]) == 2
    assert_matches_the_stored_chat(server, chat_id, resumed["messages"])


def test_a_client_cut_off_mid_run_resumes_and_a_page_loaded_after_the_run_gets_204(server):
    chat_id = new_id()
    cut, during, after = chat(
        server, chat_id, [{"send": "/stream 40 ms=20", "stopAfter": 6}, {"reload": True}, {"reload": True}]
    )
    assert len(cut["chunks"]) == 6
    assert (during["status"], during["error"]) == ("ready", None)
    check_ui_message_stream(during["chunks"])  # the whole stream, from its start chunk
    words = " ".join(f"w{i}" for i in range(1, 41))
    assert [texts(m) for m in during["messages"]] == ["/stream 40 ms=20", words]
    assert after["chunks"] == [] and after["status"] == "ready"  # 204: nothing to resume
    assert shown(after["messages"]) == shown(during["messages"])
    assert_matches_the_stored_chat(server, chat_id, after["messages"])


def test_resume_is_200_while_a_run_is_active_and_204_after(server):
    chat_id = new_id()
    body = {"id": chat_id, "messages": [user("u1", "/stream 30 ms=30")], "trigger": "submit-message"}
    with httpx.stream("POST", f"{server.url}/v1/ai-sdk/chat", json=body, timeout=30) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # the run has begun; the tab goes away
    resumed = httpx.get(f"{server.url}/v1/ai-sdk/chat/{chat_id}/stream", timeout=30)
    assert resumed.status_code == 200 and resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    data = sse_data(resumed.text)
    chunks = [json.loads(d) for d in data[:-1]]
    check_ui_message_stream(chunks)
    assert data[-1] == "[DONE]" and chunks[-1]["type"] == "finish"
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == " ".join(f"w{i}" for i in range(1, 31))
    done = httpx.get(f"{server.url}/v1/ai-sdk/chat/{chat_id}/stream", timeout=30)
    assert done.status_code == 204 and done.content == b""
    paused = httpx.post(
        f"{server.url}/v1/ai-sdk/chat",
        json={**body, "messages": [*stored(server, chat_id), user("u2", "/approve x")]},
        timeout=30,
    )
    streamed(paused)
    again = httpx.get(f"{server.url}/v1/ai-sdk/chat/{chat_id}/stream", timeout=30)  # waiting for approval
    chunks = [json.loads(d) for d in sse_data(again.text)[:-1]]
    check_ui_message_stream(chunks)
    assert [c["type"] for c in chunks][-3:] == ["tool-approval-request", "finish-step", "finish"]


def test_regenerate_retries_the_latest_answer(server):
    chat_id = new_id()
    first, regenerated = chat(server, chat_id, [{"send": "/stream 3"}, {"regenerate": True}])
    check_ui_message_stream(regenerated["chunks"])
    runs = httpx.get(f"{server.url}/v1/threads/{chat_id}/runs").json()["runs"]
    assert len(runs) == 2 and runs[1]["retry_of"] == runs[0]["id"]
    assert [m["id"] for m in regenerated["messages"]] == [first["messages"][0]["id"], runs[1]["id"]]
    assert texts(regenerated["messages"][1]) == "w1 w2 w3"
    assert_matches_the_stored_chat(server, chat_id, regenerated["messages"])


def user(message_id: str, text: str) -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


def stored(server: Any, chat_id: str, **headers: str) -> list[dict[str, Any]]:
    return httpx.get(f"{server.url}/v1/ai-sdk/chat/{chat_id}", headers=headers).json()["messages"]


def streamed(response: httpx.Response) -> list[dict[str, Any]]:
    """The chunks of a 200 UI message stream, checked against the protocol's ordering rules."""
    assert response.status_code == 200, response.text
    data = sse_data(response.text)
    assert data[-1] == "[DONE]", data
    chunks = [json.loads(d) for d in data[:-1]]
    check_ui_message_stream(chunks)
    return chunks


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_bad_requests_get_clear_errors(server):
    chat_id = new_id()

    def send(messages: list[dict[str, Any]], **extra: Any) -> httpx.Response:
        body = {"id": chat_id, "messages": messages, "trigger": "submit-message", **extra}
        return httpx.post(f"{server.url}/v1/ai-sdk/chat", json=body, timeout=30)

    streamed(send([user("u1", "/stream 2")]))
    history = stored(server, chat_id)
    assert error_of(send([user("x", "inserted"), *history, user("u2", "hi")])) == (409, "history_conflict")
    assert error_of(send([user("u2", "hi")])) == (409, "history_conflict")  # lacks the latest answer
    assert error_of(send(history)) == (400, "no_new_input")
    assert error_of(send(history, messageId="u1")) == (409, "history_conflict")  # an edit of a stored message
    assert error_of(send(history, trigger="regenerate-message", messageId="run_nope")) == (409, "history_conflict")
    assert error_of(send(history, trigger="edit")) == (422, "invalid_request")
    file = {"id": "u2", "role": "user", "parts": [{"type": "file", "mediaType": "image/png", "url": "data:,"}]}
    assert error_of(send([*history, file])) == (400, "unsupported_content")
    assert error_of(send([*history, {"id": "s", "role": "system", "parts": []}])) == (400, "unsupported_message")
    assert error_of(send([], id="bad id")) == (400, "invalid_id")
    assert error_of(httpx.get(f"{server.url}/v1/ai-sdk/chat/{new_id()}/stream")) == (404, "not_found")
    assert error_of(httpx.get(f"{server.url}/v1/ai-sdk/chat/{new_id()}")) == (404, "not_found")

    streamed(send([*history, user("u3", "/approve y")]))
    history = stored(server, chat_id)
    [part] = [p for p in history[-1]["parts"] if p["type"] == "tool-write_note"]
    answered = {**part, "state": "approval-responded", "approval": {"id": part["approval"]["id"], "approved": "yes"}}
    assert error_of(send([*history[:-1], {**history[-1], "parts": [answered]}])) == (400, "invalid_approval")
    assert error_of(send([*history, user("u4", "hi")])) == (409, "thread_busy")  # the paused run is active
    answered["approval"]["approved"] = True
    approve = [*history[:-1], {**history[-1], "parts": [answered]}]
    streamed(send(approve))
    assert error_of(send(approve)) == (409, "not_awaiting_approval")  # decided already
    assert notes(server.settings.data_dir) == ["y"]


def test_another_users_chat_does_not_exist(start_server):
    server = start_server(auth="tests.auth:by_header")
    chat_id = new_id()
    body = {"id": chat_id, "messages": [user("u1", "/stream 2")], "trigger": "submit-message"}
    alice, bob = {"x-user": "alice"}, {"x-user": "bob"}
    streamed(httpx.post(f"{server.url}/v1/ai-sdk/chat", json=body, headers=alice, timeout=30))
    theirs = {**body, "messages": [user("u9", "hi")]}
    assert error_of(httpx.post(f"{server.url}/v1/ai-sdk/chat", json=theirs, headers=bob)) == (404, "not_found")
    assert error_of(httpx.get(f"{server.url}/v1/ai-sdk/chat/{chat_id}/stream", headers=bob)) == (404, "not_found")
    assert error_of(httpx.get(f"{server.url}/v1/ai-sdk/chat/{chat_id}", headers=bob)) == (404, "not_found")
    assert len(stored(server, chat_id, **alice)) == 2
    [finished] = chat(server, chat_id, [{"reload": True}], headers=alice)
    assert finished["chunks"] == [] and len(finished["messages"]) == 2


def test_the_front_end_in_the_docs_works(server):
    """docs/ai-sdk.md's React front end, as it is written there, rendered (jsdom, react-dom) and used as a
    person would against a server like `make serve`'s: two turns, a failed run, an approval clicked, and a
    reload mid-answer, after which the answer is shown whole, once."""
    docs = (Path(__file__).parents[1] / "docs" / "ai-sdk.md").read_text()
    [code] = re.findall(r"## A minimal front end\n.*?```jsx\n(.*?)```", docs, re.DOTALL)
    assert "http://127.0.0.1:8765" in code
    chat_id = new_id()
    steps = [
        {"open": True},
        {"send": "/stream 5"},
        {"send": "/stream 2"},
        {"send": "/fail"},
        {"send": "/approve hello"},
        {"click": "approve"},
        {"send": "/stream 40 ms=75", "reloadAt": "w3"},  # 3 s: the page reloads well before the end
    ]
    program = {"code": code.replace("http://127.0.0.1:8765", server.url), "chatId": chat_id, "steps": steps}
    results = node.run("ai_sdk_react.mjs", server.url, program)
    opened, first, second, failed, paused, approved, reloaded = results
    assert [r["warnings"] for r in results] == [[]] * len(steps)  # React warned of nothing (keys, hooks)
    assert (opened["messages"], opened["usable"]) == ([], True)
    turns = ["user /stream 5", "assistant w1 w2 w3 w4 w5", "user /stream 2", "assistant w1 w2"]
    assert (first["messages"], second["messages"]) == (turns[:2], turns)
    assert failed["messages"] == [*turns, "user /fail", "assistant "]
    assert failed["text"].endswith("the demo model failed, as /fail asked") and failed["usable"]
    asked = [*failed["messages"], "user /approve hello", "assistant [write_note approval-requested]approvedeny"]
    assert (paused["messages"], paused["buttons"]) == (asked, ["approve", "deny"])
    said = "assistant [write_note output-available]write_note says: saved the note 'hello'"
    assert (approved["messages"], approved["buttons"]) == ([*asked[:-1], said], [])  # in the same message
    assert notes(server.settings.data_dir) == ["hello"]
    before, words = reloaded["beforeReload"], " ".join(f"w{i}" for i in range(1, 41))
    assert before["messages"][:-1] == [*approved["messages"], "user /stream 40 ms=75"]
    assert f"assistant {words}".startswith(before["messages"][-1]) and "w40" not in before["messages"][-1]
    assert reloaded["messages"] == [*before["messages"][:-1], f"assistant {words}"]  # whole, and once
    assert [(r["method"], r["path"], r["status"]) for r in reloaded["requests"]] == [
        ("GET", f"/v1/ai-sdk/chat/{chat_id}", 200),
        ("GET", f"/v1/ai-sdk/chat/{chat_id}/stream", 200),  # resumed, not loaded finished
    ]
