"""Usage: each run's RunUsage (tokens, requests), over all its executions, stored on the run, shown by
`GET /v1/runs/{rid}`, and streamed as a CUSTOM `tether.usage` just before each terminal event."""

from __future__ import annotations

import asyncio
from typing import Any

from tether.client import TetherClient

from .conftest import thread_events, wait_for_status


def usage_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["value"] for e in events if e["type"] == "CUSTOM" and e["name"] == "tether.usage"]


def last_answer_id(messages: list[dict[str, Any]]) -> str:
    return [m for m in messages if m["role"] == "assistant"][-1]["id"]


async def test_a_run_s_usage_is_stored_shown_and_streamed_before_its_end(server):
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        sent = await client.send(thread["id"], "/tools 2")
        run = await wait_for_status(client, sent["run_id"], {"completed"})
        usage = run["usage"]
        assert (usage["requests"], usage["tool_calls"], usage["model"]) == (2, 2, "tether-demo")
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        stored = await client.get_thread(thread["id"])
        assert usage["message_id"] == last_answer_id(stored["messages"])
        events = await thread_events(client, thread["id"])
        assert [e["type"] for e in events[-2:]] == ["CUSTOM", "RUN_FINISHED"]
        [streamed] = usage_events(events)
        assert streamed["runId"] == run["id"] and streamed["usage"] == usage
        took = (run["finished_at"] - run["started_at"]) * 1000
        assert abs(streamed["durationMs"] - took) < 1000


async def test_usage_adds_up_over_a_pause_for_approval(server):
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        sent = await client.send(thread["id"], "/approve hello")
        paused = await wait_for_status(client, sent["run_id"], {"awaiting_approval"})
        assert paused["usage"]["requests"] == 1
        call = paused["pending_approvals"][0]["tool_call_id"]
        await client.decide(paused["id"], {call: {"approved": True}})
        done = await wait_for_status(client, paused["id"], {"completed"})
        assert (done["usage"]["requests"], done["usage"]["tool_calls"]) == (2, 1)
        assert done["usage"]["input_tokens"] > paused["usage"]["input_tokens"]
        events = await thread_events(client, thread["id"])
        # One at the pause (the usage so far), one at the end (all of it).
        assert [u["usage"] for u in usage_events(events)] == [paused["usage"], done["usage"]]
        assert done["usage"]["message_id"] == last_answer_id((await client.get_thread(thread["id"]))["messages"])


async def test_a_stopped_or_failed_run_keeps_its_usage(server):
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        sent = await client.send(thread["id"], "/stream 1000 ms=5")
        await wait_for_status(client, sent["run_id"], {"running"})
        await asyncio.sleep(0.3)  # some of the answer is streamed
        cancelled = await client.cancel(sent["run_id"])
        assert cancelled["status"] == "cancelled"
        run = await client.get_run(sent["run_id"])
        assert run["usage"]["requests"] == 1
        messages = (await client.get_thread(thread["id"]))["messages"]
        answers = [m for m in messages if m["role"] == "assistant"]
        assert run["usage"]["message_id"] == (answers[-1]["id"] if answers else None)
        failing = await client.send(thread["id"], "/fail")
        failed = await wait_for_status(client, failing["run_id"], {"failed"})
        assert failed["usage"] is not None and failed["usage"]["message_id"] is None  # no answer
        assert usage_events(await thread_events(client, thread["id"]))[-1]["usage"] == failed["usage"]
