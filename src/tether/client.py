"""A small Python client for Tether, with automatic resume of event streams.

    async with TetherClient("http://127.0.0.1:8765") as tether:
        thread = await tether.create_thread()
        run = await tether.send(thread["id"], "/stream 20")
        async for event in tether.stream_run(run["run_id"]):
            print(event.seq, event.data["type"])

A stream that drops (network, server restart, a slow-consumer cut-off) is
reopened with `Last-Event-ID` set to the last seq received, so the caller sees
every event once, in order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class StreamEvent:
    seq: int
    data: dict[str, Any]
    raw: str


class TetherError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str | None, str]]:
    """(id, data) for each SSE event; comments (keep-alives) are skipped."""
    event_id: str | None = None
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                yield event_id, "\n".join(data)
            event_id, data = None, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                event_id = value
            elif name == "data":
                data.append(value)


class TetherClient:
    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> TetherClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError):
                error = {"code": "http_error", "message": response.text}
            raise TetherError(response.status_code, error["code"], error["message"])
        return response.json() if response.content else None

    async def create_thread(
        self, title: str | None = None, *, agent: str | None = None, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A new thread, answered by `agent` (default: the server's first)."""
        body: dict[str, Any] = {"title": title, "agent": agent, "metadata": metadata}
        return await self._call("POST", "/v1/threads", json={k: v for k, v in body.items() if v is not None})

    async def agents(self) -> dict[str, Any]:
        """The server's agents: {"agents": [{name, description, model, tools}], "default": name}."""
        return await self._call("GET", "/v1/agents")

    async def me(self) -> dict[str, Any]:
        """Who this client is to the server: {"user", "auth"}."""
        return await self._call("GET", "/v1/me")

    async def get_thread(self, thread_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/threads/{thread_id}")

    async def list_threads(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/v1/threads"))["threads"]

    async def delete_thread(self, thread_id: str) -> None:
        await self._call("DELETE", f"/v1/threads/{thread_id}")

    async def send(
        self, thread_id: str, text: str, *, multitask: str = "reject", model: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"input": text, "multitask": multitask}
        if model is not None:
            body["model"] = model
        return await self._call("POST", f"/v1/threads/{thread_id}/runs", json=body)

    async def get_run(self, run_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/runs/{run_id}")

    async def list_runs(self, thread_id: str) -> list[dict[str, Any]]:
        return (await self._call("GET", f"/v1/threads/{thread_id}/runs"))["runs"]

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/v1/runs/{run_id}/cancel")

    async def decide(self, run_id: str, decisions: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Approve or deny pending tool calls: {tool_call_id: {"approved": bool, "reason"?, "args"?, "remember"?}}."""
        return await self._call("POST", f"/v1/runs/{run_id}/approvals", json={"decisions": decisions})

    async def steer(self, thread_id: str, text: str) -> dict[str, Any]:
        """Give the running agent a message at its next step (or start a run if the thread is idle)."""
        return await self._call("POST", f"/v1/threads/{thread_id}/steer", json={"input": text})

    async def retry(self, thread_id: str) -> dict[str, Any]:
        """Re-answer the thread's last user message from the state before it."""
        return await self._call("POST", f"/v1/threads/{thread_id}/retry")

    def stream_thread(self, thread_id: str, after: int = 0) -> AsyncIterator[StreamEvent]:
        """The thread's events after `after`, forever (run after run), resuming on disconnect."""
        return self._follow(f"/v1/threads/{thread_id}/stream", after)

    def stream_run(self, run_id: str, after: int = 0) -> AsyncIterator[StreamEvent]:
        """One run's events after `after`, until its terminal event, resuming on disconnect."""
        return self._follow(f"/v1/runs/{run_id}/stream", after)

    async def _follow(self, path: str, after: int, retry_delay: float = 0.2) -> AsyncIterator[StreamEvent]:
        """Follow a stream across disconnects and server restarts, until the run's terminal event.

        Only a run stream ends: at RUN_ERROR, or RUN_FINISHED that is not a pause for approval. Any
        other end of the connection (a network error, a server shutting down) means "reconnect".
        """
        last = after
        while True:
            try:
                headers = {"Last-Event-ID": str(last)}
                async with self._http.stream("GET", path, headers=headers, timeout=None) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        error = response.json()["error"]
                        raise TetherError(response.status_code, error["code"], error["message"])
                    async for event_id, data in parse_sse(response.aiter_lines()):
                        if event_id is None:
                            continue
                        last = int(event_id)
                        event = StreamEvent(last, json.loads(data), data)
                        yield event
                        if path.startswith("/v1/runs/") and ends_run(event.data):
                            return
            except (httpx.TransportError, httpx.RemoteProtocolError):
                pass
            await asyncio.sleep(retry_delay)


def ends_run(event: dict[str, Any]) -> bool:
    """Whether an event ends its run: RUN_ERROR, or RUN_FINISHED that is not a pause for approval."""
    if event.get("type") == "RUN_ERROR":
        return True
    return event.get("type") == "RUN_FINISHED" and event.get("outcome", {}).get("type") != "interrupt"
