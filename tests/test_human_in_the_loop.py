"""Approvals, steering, interrupt and retry (invariants 5 and 6), over real HTTP."""

from __future__ import annotations

import asyncio
import signal
import threading

import httpx
import pytest

from tether.client import TetherClient, TetherError
from tether.engine.runner import RunExecution
from tether.transcript import comparable, fold

from .conftest import notes, thread_events, tool_log, wait_for_status


async def assert_transcript_consistent(client: TetherClient, thread_id: str) -> dict:
    stored = await client.get_thread(thread_id)
    assert comparable(fold(await thread_events(client, thread_id))) == comparable(stored["messages"])
    return stored


async def approve(url: str, run_id: str, decisions: dict) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as http:
        return await http.post(f"/v1/runs/{run_id}/approvals", json={"decisions": decisions})


async def pause_for_approval(client: TetherClient, text: str = "hello") -> tuple[str, str, dict]:
    thread = await client.create_thread()
    run = await client.send(thread["id"], f"/approve {text}")
    paused = await wait_for_status(client, run["run_id"], {"awaiting_approval", "failed"})
    assert paused["status"] == "awaiting_approval", paused
    return thread["id"], run["run_id"], paused


@pytest.mark.parametrize("approved", [True, False])
async def test_approval_round_trip_with_a_real_server_process(tether_process, tmp_path, approved):
    server = tether_process().start()
    async with TetherClient(server.url) as client:
        thread_id, run_id, paused = await pause_for_approval(client, "buy milk")
        [call] = paused["pending_approvals"]
        assert call["tool_name"] == "write_note" and call["args"] == {"text": "buy milk"}
        assert (await client.get_thread(thread_id))["active_run"]["pending_approvals"][0]["tool_call_id"] == (
            call["tool_call_id"]
        )
        assert tool_log(server.data_dir) == []

        run_events = []

        async def follow() -> None:
            async for event in client.stream_run(run_id):
                run_events.append(event.data)

        follower = asyncio.create_task(follow())
        decision = {"approved": approved} if approved else {"approved": False, "reason": "not today"}
        response = await approve(server.url, run_id, {call["tool_call_id"]: decision})
        assert response.status_code == 202, response.text
        done = await wait_for_status(client, run_id, {"completed", "failed"})
        assert done["status"] == "completed", done
        await asyncio.wait_for(follower, 10)

        reply = "".join(
            e["delta"] for e in run_events if e["type"] == "TEXT_MESSAGE_CONTENT" and not e["delta"].startswith("/")
        )
        if approved:
            assert tool_log(server.data_dir) == [{"tool": "write_note", "tool_call_id": call["tool_call_id"]}]
            assert notes(server.data_dir) == ["buy milk"]
            assert "saved the note" in reply
        else:
            assert tool_log(server.data_dir) == []
            assert notes(server.data_dir) == []
            assert "not today" in reply
        custom = [e for e in run_events if e["type"] == "CUSTOM"]
        assert custom[0]["name"] == "tether.approval_requested"
        assert custom[0]["value"]["calls"][0]["toolCallId"] == call["tool_call_id"]
        await assert_transcript_consistent(client, thread_id)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
async def test_approval_survives_a_server_restart(tether_process, tmp_path, sig):
    server = tether_process().start()
    async with TetherClient(server.url) as client:
        thread_id, run_id, _ = await pause_for_approval(client, "after restart")
    server.stop(sig)
    restarted = tether_process(data_dir=server.data_dir).start()
    async with TetherClient(restarted.url) as client:
        run = await client.get_run(run_id)
        assert run["status"] == "awaiting_approval"
        [call] = run["pending_approvals"]
        response = await approve(restarted.url, run_id, {call["tool_call_id"]: {"approved": True}})
        assert response.status_code == 202, response.text
        done = await wait_for_status(client, run_id, {"completed", "failed"})
        assert done["status"] == "completed", done
        assert notes(restarted.data_dir) == ["after restart"]
        assert [e["tool"] for e in tool_log(restarted.data_dir)] == ["write_note"]
        await assert_transcript_consistent(client, thread_id)


async def test_two_concurrent_decisions_one_wins(server):
    async with TetherClient(server.url) as client:
        _, run_id, paused = await pause_for_approval(client)
        call_id = paused["pending_approvals"][0]["tool_call_id"]
        responses = await asyncio.gather(
            approve(server.url, run_id, {call_id: {"approved": True}}),
            approve(server.url, run_id, {call_id: {"approved": False}}),
        )
        assert sorted(r.status_code for r in responses) == [202, 409]
        loser = next(r for r in responses if r.status_code == 409)
        assert loser.json()["error"]["code"] in {"already_decided", "not_awaiting_approval"}
        await wait_for_status(client, run_id, {"completed"})
        assert len(tool_log(server.settings.data_dir)) in (0, 1)


async def test_edited_arguments_and_always_allow(server):
    async with TetherClient(server.url) as client:
        thread_id, run_id, paused = await pause_for_approval(client, "original")
        call_id = paused["pending_approvals"][0]["tool_call_id"]
        response = await approve(
            server.url, run_id, {call_id: {"approved": True, "args": {"text": "edited"}, "remember": True}}
        )
        assert response.status_code == 202
        await wait_for_status(client, run_id, {"completed"})
        assert notes(server.settings.data_dir) == ["edited"]
        assert (await client.get_thread(thread_id))["allowed_tools"] == ["write_note"]
        # Remembered: the next call of write_note in this thread runs without asking.
        second = await client.send(thread_id, "/approve no questions")
        done = await wait_for_status(client, second["run_id"], {"completed", "awaiting_approval", "failed"})
        assert done["status"] == "completed"
        assert notes(server.settings.data_dir) == ["edited", "no questions"]
        await assert_transcript_consistent(client, thread_id)


async def test_edited_arguments_the_tool_refuses_are_422_and_decide_nothing(server):
    async with TetherClient(server.url) as client:
        _, run_id, paused = await pause_for_approval(client, "original")
        call_id = paused["pending_approvals"][0]["tool_call_id"]
        for args, says in (
            ({"text": 5}, "text: Input should be a valid string"),
            ({}, "text: Field required"),
            ({"text": "x", "colour": "red"}, "colour: Extra inputs are not permitted"),
            ({"text": "x", "ms": "soon"}, "ms: Input should be a valid integer"),
        ):
            response = await approve(server.url, run_id, {call_id: {"approved": True, "args": args}})
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "invalid_args"
            assert says in response.json()["error"]["message"]
        run = await client.get_run(run_id)
        assert run["status"] == "awaiting_approval" and run["pending_approvals"][0]["decision"] is None
        # Valid edited arguments are taken, and the tool runs once, with them.
        response = await approve(server.url, run_id, {call_id: {"approved": True, "args": {"text": "fixed", "ms": 1}}})
        assert response.status_code == 202, response.text
        await wait_for_status(client, run_id, {"completed"})
        assert notes(server.settings.data_dir) == ["fixed"]
        assert len(tool_log(server.settings.data_dir)) == 1


async def test_cancel_a_run_awaiting_approval(server):
    async with TetherClient(server.url) as client:
        thread_id, run_id, _ = await pause_for_approval(client)
        cancelled = await client.cancel(run_id)
        assert cancelled["status"] == "cancelled" and cancelled["pending_approvals"] == []
        events = [e.data async for e in client.stream_run(run_id)]
        assert events[-1]["type"] == "RUN_FINISHED"
        assert any(e["type"] == "CUSTOM" and e["name"] == "tether.run_cancelled" for e in events)
        # The thread goes on, and the unapproved call never runs.
        run = await client.send(thread_id, "/stream 3")
        await wait_for_status(client, run["run_id"], {"completed"})
        assert tool_log(server.settings.data_dir) == []
        await assert_transcript_consistent(client, thread_id)


@pytest.mark.parametrize("answer", ["cancel", "approve"])
async def test_an_answer_that_comes_as_the_run_pauses_for_approval_still_counts(server, monkeypatch, answer):
    """The pause is committed (the run shows `awaiting_approval`) a moment before its execution ends.
    A cancel in that moment reached the execution, which had nothing more to stop: the cancel answered
    202 and the run waited for an approval for ever (the soak's run that never ended). Here the
    execution is held in that moment until the answer has come. (The server runs in a thread of its
    own, with its own event loop: the two meet on thread-safe events.)"""
    paused = threading.Event()
    release = threading.Event()
    execute = RunExecution.execute

    async def execute_then_linger(self: RunExecution) -> None:
        await execute(self)
        if self.status == "awaiting_approval":
            paused.set()
            await asyncio.to_thread(release.wait, 30)

    monkeypatch.setattr(RunExecution, "execute", execute_then_linger)
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/approve hello")
        assert await asyncio.to_thread(paused.wait, 30)
        if answer == "cancel":
            sent = asyncio.create_task(client.cancel(run["run_id"]))
        else:
            [call] = (await client.get_run(run["run_id"]))["pending_approvals"]
            sent = asyncio.create_task(client.decide(run["run_id"], {call["tool_call_id"]: {"approved": True}}))
        await asyncio.sleep(0.3)  # the answer has reached the lingering execution
        release.set()
        await asyncio.wait_for(sent, 30)
        ended = await wait_for_status(client, run["run_id"], {"cancelled", "completed", "failed"})
        events = [e.data async for e in client.stream_run(run["run_id"])]
        if answer == "cancel":
            assert ended["status"] == "cancelled" and ended["pending_approvals"] == []
            assert any(e["type"] == "CUSTOM" and e["name"] == "tether.run_cancelled" for e in events)
            assert tool_log(server.settings.data_dir) == []
        else:
            assert ended["status"] == "completed"
            assert notes(server.settings.data_dir) == ["hello"]


async def test_steer_lands_between_steps_and_keeps_completed_tools(server):
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url) as http:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/steps 5 ms=200")
        results = 0
        async for event in client.stream_run(run["run_id"]):
            if event.data["type"] == "TOOL_CALL_RESULT":
                results += 1
                if results == 2:
                    break
        response = await http.post(f"/v1/threads/{thread['id']}/steer", json={"input": "stop after this please"})
        assert response.status_code == 202
        assert response.json() == {
            "run_id": run["run_id"],
            "thread_id": thread["id"],
            "status": "running",
            "delivery": "inbox",
        }
        await wait_for_status(client, run["run_id"], {"completed"})
        events = [e async for e in client.stream_run(run["run_id"])]

    kinds = [(e.seq, e.data["type"], e.data.get("name")) for e in events]
    steer_seq = next(seq for seq, kind, name in kinds if name == "tether.steer_applied")
    result_seqs = [seq for seq, kind, _ in kinds if kind == "TOOL_CALL_RESULT"]
    assert any(s < steer_seq for s in result_seqs), "the steer came before any tool result"
    assert len(result_seqs) < 5, "the agent did not change course"
    logged = [e["tool_call_id"] for e in tool_log(server.settings.data_dir)]
    assert len(logged) == len(set(logged)) == len(result_seqs), "a completed tool ran again"
    async with TetherClient(server.url) as client:
        stored = await assert_transcript_consistent(client, thread["id"])
    roles = [(m["role"], m.get("content")) for m in comparable(stored["messages"])]
    steer_at = roles.index(("user", "stop after this please"))
    assert roles[steer_at - 1][0] == "tool", "the steer message is not right after the last tool result"
    assert roles[-1][0] == "assistant" and "stop after this please" in roles[-1][1]


async def test_steer_on_an_idle_thread_starts_a_run(server):
    async with httpx.AsyncClient(base_url=server.url) as http, TetherClient(server.url) as client:
        thread = await client.create_thread()
        response = await http.post(f"/v1/threads/{thread['id']}/steer", json={"input": "/stream 2"})
        assert response.status_code == 202 and response.json()["delivery"] == "new_run"
        done = await wait_for_status(client, response.json()["run_id"], {"completed"})
        assert done["input"] == "/stream 2"


async def test_a_steer_racing_the_end_of_a_run_is_202_and_said_exactly_once(server):
    """Found: 11 of 100 steers sent as a run ended answered 500, and were still applied as a follow-up
    run, so a client that retried said it twice."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http, TetherClient(server.url) as client:
        threads = []
        for attempt in range(100):
            thread = await client.create_thread()
            await client.send(thread["id"], "/stream 3 ms=2")
            await asyncio.sleep((attempt % 10) * 0.002)  # from well before the end to just after it
            response = await http.post(f"/v1/threads/{thread['id']}/steer", json={"input": f"said {attempt}"})
            assert response.status_code == 202, response.text
            threads.append((thread["id"], f"said {attempt}"))
        for thread_id, said in threads:
            for run in await client.list_runs(thread_id):
                await wait_for_status(client, run["id"], {"completed"})
            messages = (await client.get_thread(thread_id))["messages"]
            told = [m for m in messages if m["role"] == "user" and said in m["content"]]
            assert len(told) == 1, messages


async def test_steer_while_awaiting_approval_is_applied_after_the_decision(server):
    async with TetherClient(server.url) as client:
        thread_id, run_id, paused = await pause_for_approval(client)
        steered = await client.send(thread_id, "and then say hi", multitask="steer")
        assert steered["run_id"] == run_id
        call_id = paused["pending_approvals"][0]["tool_call_id"]
        assert (await approve(server.url, run_id, {call_id: {"approved": True}})).status_code == 202
        await wait_for_status(client, run_id, {"completed"})
        stored = await assert_transcript_consistent(client, thread_id)
        roles = [(m["role"], m.get("content")) for m in comparable(stored["messages"])]
        assert roles.index(("user", "and then say hi")) > [r for r, _ in roles].index("tool")


async def test_interrupt_discards_the_partial_answer(server):
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        old = await client.send(thread["id"], "/stream 10000 ms=1")
        async for event in client.stream_run(old["run_id"]):
            if event.data.get("delta") == " w20":
                break
        new = await client.send(thread["id"], "/stream 3", multitask="interrupt")
        old_events = [e.data async for e in client.stream_run(old["run_id"])]
        assert old_events[-1]["type"] == "RUN_FINISHED"
        reason = next(e for e in old_events if e["type"] == "CUSTOM" and e["name"] == "tether.run_cancelled")
        assert "interrupted" in reason["value"]["reason"]
        assert (await client.get_run(old["run_id"]))["status"] == "cancelled"
        await wait_for_status(client, new["run_id"], {"completed"})
        stored = await assert_transcript_consistent(client, thread["id"])
        assert comparable(stored["messages"]) == [
            {"role": "user", "content": "/stream 10000 ms=1"},
            {"role": "user", "content": "/stream 3"},
            {"role": "assistant", "content": "w1 w2 w3"},
        ]


async def test_retry_rewinds_and_reanswers(server):
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url) as http:
        thread = await client.create_thread()
        first = await client.send(thread["id"], "/stream 2")
        await wait_for_status(client, first["run_id"], {"completed"})
        second = await client.send(thread["id"], "/tools 2")
        await wait_for_status(client, second["run_id"], {"completed"})
        before = await client.get_thread(thread["id"])

        response = await http.post(f"/v1/threads/{thread['id']}/retry")
        assert response.status_code == 202, response.text
        retried = await wait_for_status(client, response.json()["run_id"], {"completed"})
        assert retried["retry_of"] == second["run_id"] and retried["input"] == "/tools 2"
        after = await assert_transcript_consistent(client, thread["id"])
        old_tool_ids = {c["id"] for m in before["messages"] for c in m.get("toolCalls", [])}
        new_tool_ids = {c["id"] for m in after["messages"] for c in m.get("toolCalls", [])}
        assert old_tool_ids and new_tool_ids and not (old_tool_ids & new_tool_ids), "the old answer is still there"
        assert [m["role"] for m in comparable(after["messages"])] == [m["role"] for m in comparable(before["messages"])]
        assert [m["role"] for m in comparable(after["messages"])].count("user") == 2


async def test_retry_conflicts(server):
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url) as http:
        thread = await client.create_thread()
        empty = await http.post(f"/v1/threads/{thread['id']}/retry")
        assert empty.status_code == 409 and empty.json()["error"]["code"] == "nothing_to_retry"
        run = await client.send(thread["id"], "/stream 500 ms=5")
        busy = await http.post(f"/v1/threads/{thread['id']}/retry")
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "thread_busy"
        await client.cancel(run["run_id"])


async def test_bad_input_on_the_human_in_the_loop_endpoints(server):
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url) as http:
        thread_id, run_id, paused = await pause_for_approval(client)
        call_id = paused["pending_approvals"][0]["tool_call_id"]
        cases = [
            (
                "POST",
                f"/v1/runs/{run_id}/approvals",
                {"decisions": {"nope": {"approved": True}}},
                400,
                "unknown_tool_call",
            ),
            ("POST", f"/v1/runs/{run_id}/approvals", {"decisions": {}}, 422, "invalid_request"),
            (
                "POST",
                f"/v1/runs/{run_id}/approvals",
                {"decisions": {call_id: {"approved": "yes"}}},
                422,
                "invalid_request",
            ),
            ("POST", f"/v1/runs/{run_id}/approvals", {"decision": {}}, 422, "invalid_request"),
            ("POST", "/v1/runs/run_missing/approvals", {"decisions": {call_id: {"approved": True}}}, 404, "not_found"),
            ("POST", f"/v1/threads/{thread_id}/steer", {"input": ""}, 422, "invalid_request"),
            ("POST", f"/v1/threads/{thread_id}/steer", {"input": 5}, 422, "invalid_request"),
            ("POST", "/v1/threads/thr_missing/steer", {"input": "hi"}, 404, "not_found"),
            ("POST", "/v1/threads/thr_missing/retry", None, 404, "not_found"),
            ("POST", f"/v1/threads/{thread_id}/runs", {"input": "x", "multitask": "sideways"}, 422, "invalid_request"),
        ]
        for method, path, body, status, code in cases:
            response = await http.request(method, path, json=body)
            assert response.status_code == status, (path, body, response.text)
            assert response.json()["error"]["code"] == code, (path, body, response.text)
        # Nothing was lost: the run still waits, and the right decision still works.
        assert (await client.get_run(run_id))["status"] == "awaiting_approval"
        assert (await approve(server.url, run_id, {call_id: {"approved": False}})).status_code == 202
        await wait_for_status(client, run_id, {"completed"})
        late = await approve(server.url, run_id, {call_id: {"approved": True}})
        assert late.status_code == 409 and late.json()["error"]["code"] == "not_awaiting_approval"
        with pytest.raises(TetherError):
            await client.cancel(run_id)


async def test_partial_decisions_are_kept_until_all_are_decided(start_server):
    server = start_server(agents=("tests.agents:two_approvals",))
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "clean up")
        paused = await wait_for_status(client, run["run_id"], {"awaiting_approval"})
        assert {c["tool_call_id"] for c in paused["pending_approvals"]} == {"call_a", "call_b"}

        first = await approve(server.url, run["run_id"], {"call_a": {"approved": True}})
        assert first.status_code == 202
        half = first.json()
        assert half["status"] == "awaiting_approval"
        decided = {c["tool_call_id"]: c["decision"] for c in half["pending_approvals"]}
        assert decided["call_a"]["approved"] is True and decided["call_b"] is None
        again = await approve(server.url, run["run_id"], {"call_a": {"approved": False}})
        assert again.status_code == 409 and again.json()["error"]["code"] == "already_decided"

        second = await approve(server.url, run["run_id"], {"call_b": {"approved": False, "reason": "keep b"}})
        assert second.status_code == 202
        await wait_for_status(client, run["run_id"], {"completed"})
        stored = await assert_transcript_consistent(client, thread["id"])
    assert stored["messages"][-1]["content"] == "call_a: deleted a.txt | call_b: The user denied this tool call: keep b"


async def test_retry_says_again_what_steered_the_old_answer(server):
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/steps 3 ms=300")
        async for event in client.stream_run(run["run_id"]):
            if event.data["type"] == "TOOL_CALL_RESULT":
                break
        await client.steer(thread["id"], "and be brief")
        await wait_for_status(client, run["run_id"], {"completed"})
        retried = await client.retry(thread["id"])
        await wait_for_status(client, retried["run_id"], {"completed"})
        stored = await assert_transcript_consistent(client, thread["id"])
    users = [m["content"] for m in stored["messages"] if m["role"] == "user"]
    assert users == ["/steps 3 ms=300", "and be brief"]


async def test_after_a_cancelled_approval_the_next_one_asks_again(server):
    """Found by the soak: the demo agent took the cancelled call's "not run" (stored in the same request
    as the next message) for the new call's result, and answered without asking."""
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        first = await client.send(thread["id"], "/approve one")
        await wait_for_status(client, first["run_id"], {"awaiting_approval"})
        await client.cancel(first["run_id"])
        second = await client.send(thread["id"], "/approve two")
        paused = await wait_for_status(client, second["run_id"], {"awaiting_approval", "completed"})
        assert paused["status"] == "awaiting_approval"
        assert paused["pending_approvals"][0]["args"] == {"text": "two"}
