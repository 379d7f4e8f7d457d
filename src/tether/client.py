"""Python clients for Tether: `TetherClient` (async) and `Client` (sync), with automatic resume.

    async with TetherClient("http://127.0.0.1:8765") as tether:      with Client("http://127.0.0.1:8765") as tether:
        thread = await tether.create_thread()                            thread = tether.create_thread()
        run = await tether.send(thread["id"], "/stream 20")              run = tether.send(thread["id"], "/stream 20")
        async for event in tether.stream(run["run_id"]):                 for event in tether.stream(run["run_id"]):
            print(event.seq, event.type)                                     print(event.seq, event.type)

Both are one implementation: each API call is described once (`Call`: what to send, how its answer
reads) and each stream once (`Follow`: where it resumes, when it ends, how long to keep trying); a
client only does the I/O, with httpx's async or sync client. A stream that drops (network, server
restart, a slow-consumer cut-off) is reopened with `Last-Event-ID` set to the last seq received, with
backoff, so the caller sees every event once, in order; after `Reconnect.attempts` failed tries in a
row it raises `StreamLost`.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import mimetypes
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import httpx
from ag_ui.core import BaseEvent, Event
from pydantic import TypeAdapter

P = ParamSpec("P")
T = TypeVar("T")

_EVENT = TypeAdapter(Event)


@dataclass(frozen=True)
class StreamEvent:
    """One event of a stream: its seq (the SSE id), its JSON, and the text it came as."""

    seq: int
    data: dict[str, Any]
    raw: str

    @property
    def type(self) -> str:
        return self.data["type"]

    @functools.cached_property
    def event(self) -> BaseEvent:
        """The event as an ag-ui model (`TextMessageContentEvent`, `RunFinishedEvent`, …)."""
        return _EVENT.validate_json(self.raw)


class TetherError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class StreamLost(TetherError):
    """A stream could not be reopened: the server stayed unreachable for every reconnect attempt."""

    def __init__(self, path: str, attempts: int, cause: BaseException | None) -> None:
        why = f"{type(cause).__name__}: {cause}" if cause is not None else "the server kept closing it"
        super().__init__(0, "stream_lost", f"lost {path} after {attempts} reconnect attempts in a row ({why})")


def attachment(source: bytes | Path, media_type: str | None = None, *, name: str | None = None) -> dict[str, Any]:
    """A part of a message that attaches an image or a file: its bytes, or a file's (by path), in base64.
    The media type is guessed from the file's name when not given; an image type makes it an image.
    Send it with others: `send(thread_id, [{"type": "text", "text": "what is this?"}, attachment(path)])`."""
    if isinstance(source, Path):
        name = name if name is not None else source.name
        media_type = media_type or mimetypes.guess_type(source.name)[0]
    if media_type is None:
        raise ValueError("give the attachment's media_type (e.g. 'image/png'): it cannot be guessed from its name")
    if isinstance(source, Path):
        source = source.read_bytes()
    part = {
        "type": "image" if media_type.startswith("image/") else "file",
        "media_type": media_type,
        "data": base64.b64encode(source).decode(),
    }
    return {**part, "name": name} if name is not None else part


@dataclass(frozen=True)
class Reconnect:
    """How a stream is reopened: up to `attempts` tries in a row, waiting `first_delay` seconds, doubling
    up to `max_delay` (about 30 s in all by default: a server restart fits in it)."""

    attempts: int = 10
    first_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, failures: int) -> float:
        return min(self.max_delay, self.first_delay * 2 ** max(0, failures - 1))


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: what to send, and how its answer reads."""

    method: str
    path: str
    json: Any = None
    read: Callable[[Any], T] = lambda body: body


class SSEParser:
    """Server-sent events, fed a line at a time: (id, data) at the end of each event; comments skipped."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str | None, str] | None:
        if line == "":
            frame = (self._id, "\n".join(self._data)) if self._data else None
            self._id, self._data = None, []
            return frame
        if not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                self._id = value
            elif name == "data":
                self._data.append(value)
        return None


@dataclass
class Follow:
    """One stream being followed: where it resumes, and how it ends and reconnects."""

    path: str
    last: int
    ends_with_run: bool
    """A run stream ends at the run's terminal event; a thread stream goes on."""
    reconnect: Reconnect
    failures: int = 0
    _parser: SSEParser = field(default_factory=SSEParser)

    def reopen(self) -> dict[str, str]:
        """A new connection's headers: it resumes after the last event received."""
        self._parser = SSEParser()
        return {"Last-Event-ID": str(self.last)}

    def opened(self, response: httpx.Response) -> None:
        """A connection was made: an error status raises (a 5xx may be retried), else failures reset."""
        if response.status_code >= 400:
            _answer(response)
        self.failures = 0

    def line(self, line: str) -> StreamEvent | None:
        frame = self._parser.feed(line)
        if frame is None or frame[0] is None:
            return None
        self.last = int(frame[0])
        return StreamEvent(self.last, json.loads(frame[1]), frame[1])

    def ended(self, event: StreamEvent) -> bool:
        return self.ends_with_run and ends_run(event.data)

    def wait(self, error: BaseException | None) -> float:
        """The connection ended before the stream did: how long to wait before the next try (or raise)."""
        if error is not None and not _retryable(error):
            raise error
        self.failures += 1
        if self.failures > self.reconnect.attempts:
            raise StreamLost(self.path, self.reconnect.attempts, error)
        return self.reconnect.delay(self.failures)


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str | None, str]]:
    """(id, data) for each SSE event of a stream of lines; comments (keep-alives) are skipped."""
    parser = SSEParser()
    async for line in lines:
        frame = parser.feed(line)
        if frame is not None:
            yield frame


def ends_run(event: dict[str, Any]) -> bool:
    """Whether an event ends its run: RUN_ERROR, or RUN_FINISHED that is not a pause for approval."""
    if event.get("type") == "RUN_ERROR":
        return True
    return event.get("type") == "RUN_FINISHED" and event.get("outcome", {}).get("type") != "interrupt"


def _answer(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = {"code": "http_error", "message": response.text}
        raise TetherError(response.status_code, error["code"], error["message"])
    if not response.content:
        return None
    return response.json() if response.headers.get("content-type") == "application/json" else response.content


def _retryable(error: BaseException) -> bool:
    return isinstance(error, httpx.TransportError) or (isinstance(error, TetherError) and error.status >= 500)


class _Described(Generic[P, T]):
    """A method written once for both clients: it describes what to do, and the client it is read from
    does it, awaitably or not (`_run` for a call, `_follow` for a stream)."""

    runner = ""

    def __init__(self, describe: Callable[Concatenate[Any, P], Any]) -> None:
        self._describe = describe
        functools.update_wrapper(self, describe)

    def __get__(self, client: Any, owner: type) -> Any:
        if client is None:
            return self
        run, describe = getattr(client, self.runner), self._describe

        @functools.wraps(describe)
        def bound(*args: P.args, **kwargs: P.kwargs) -> Any:
            return run(describe(client, *args, **kwargs))

        return bound


class endpoint(_Described[P, T]):
    runner = "_run"

    if TYPE_CHECKING:

        @overload
        def __get__(self, client: TetherClient, owner: type) -> Callable[P, Awaitable[T]]: ...
        @overload
        def __get__(self, client: Client, owner: type) -> Callable[P, T]: ...
        def __get__(self, client: Any, owner: type) -> Any: ...


class streaming(_Described[P, StreamEvent]):
    runner = "_follow"

    if TYPE_CHECKING:

        @overload
        def __get__(self, client: TetherClient, owner: type) -> Callable[P, AsyncIterator[StreamEvent]]: ...
        @overload
        def __get__(self, client: Client, owner: type) -> Callable[P, Iterator[StreamEvent]]: ...
        def __get__(self, client: Any, owner: type) -> Any: ...


class _Api:
    """Every call and stream of the HTTP API, described once for both clients."""

    _reconnect: Reconnect

    @endpoint
    def create_thread(
        self, title: str | None = None, *, agent: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Call[dict[str, Any]]:
        """A new thread, answered by `agent` (default: the server's first)."""
        body: dict[str, Any] = {"title": title, "agent": agent, "metadata": metadata}
        return Call("POST", "/v1/threads", {k: v for k, v in body.items() if v is not None})

    @endpoint
    def agents(self) -> Call[dict[str, Any]]:
        """The server's agents: {"agents": [{name, description, model, tools}], "default": name}."""
        return Call("GET", "/v1/agents")

    @endpoint
    def me(self) -> Call[dict[str, Any]]:
        """Who this client is to the server: {"user", "auth"}."""
        return Call("GET", "/v1/me")

    @endpoint
    def get_thread(self, thread_id: str) -> Call[dict[str, Any]]:
        return Call("GET", f"/v1/threads/{thread_id}")

    @endpoint
    def list_threads(self) -> Call[list[dict[str, Any]]]:
        return Call("GET", "/v1/threads", read=lambda body: body["threads"])

    @endpoint
    def delete_thread(self, thread_id: str) -> Call[None]:
        return Call("DELETE", f"/v1/threads/{thread_id}")

    @endpoint
    def send(
        self,
        thread_id: str,
        text: str | list[dict[str, Any]],
        *,
        multitask: str = "reject",
        model: str | None = None,
    ) -> Call[dict[str, Any]]:
        """Start a run with the user's message: its text, or its parts (`{"type": "text", "text"}` and
        `attachment(...)`s). Answers {"run_id", "thread_id", "status"}."""
        body: dict[str, Any] = {"input": text, "multitask": multitask}
        if model is not None:
            body["model"] = model
        return Call("POST", f"/v1/threads/{thread_id}/runs", body)

    @endpoint
    def get_attachment(self, attachment_id: str) -> Call[bytes]:
        """The bytes of an attachment of one of this user's messages (its `id` in the message's `attachments`)."""
        return Call("GET", f"/v1/attachments/{attachment_id}")

    @endpoint
    def get_run(self, run_id: str) -> Call[dict[str, Any]]:
        return Call("GET", f"/v1/runs/{run_id}")

    @endpoint
    def list_runs(self, thread_id: str) -> Call[list[dict[str, Any]]]:
        return Call("GET", f"/v1/threads/{thread_id}/runs", read=lambda body: body["runs"])

    @endpoint
    def cancel(self, run_id: str) -> Call[dict[str, Any]]:
        return Call("POST", f"/v1/runs/{run_id}/cancel")

    @endpoint
    def decide(self, run_id: str, decisions: dict[str, dict[str, Any]]) -> Call[dict[str, Any]]:
        """Approve or deny pending tool calls: {tool_call_id: {"approved": bool, "reason"?, "args"?, "remember"?}}."""
        return Call("POST", f"/v1/runs/{run_id}/approvals", {"decisions": decisions})

    @endpoint
    def steer(self, thread_id: str, text: str) -> Call[dict[str, Any]]:
        """Give the running agent a message at its next step (or start a run if the thread is idle)."""
        return Call("POST", f"/v1/threads/{thread_id}/steer", {"input": text})

    @endpoint
    def retry(self, thread_id: str) -> Call[dict[str, Any]]:
        """Re-answer the thread's last user message from the state before it."""
        return Call("POST", f"/v1/threads/{thread_id}/retry")

    @streaming
    def stream(self, run_id: str, after: int = 0) -> Follow:
        """One run's events after `after`, until its terminal event, resuming on disconnect."""
        return Follow(f"/v1/runs/{run_id}/stream", after, ends_with_run=True, reconnect=self._reconnect)

    stream_run = stream

    @streaming
    def stream_thread(self, thread_id: str, after: int = 0) -> Follow:
        """The thread's events after `after`, run after run, resuming on disconnect."""
        return Follow(f"/v1/threads/{thread_id}/stream", after, ends_with_run=False, reconnect=self._reconnect)


def _http_options(base_url: str, token: str | None, timeout: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return {"base_url": base_url, "headers": headers, "timeout": timeout}


class TetherClient(_Api):
    """The async client (httpx.AsyncClient)."""

    def __init__(
        self, base_url: str, token: str | None = None, *, timeout: float = 30.0, reconnect: Reconnect = Reconnect()
    ) -> None:
        self._http = httpx.AsyncClient(**_http_options(base_url, token, timeout))
        self._reconnect = reconnect

    async def __aenter__(self) -> TetherClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call[T]) -> T:
        return call.read(_answer(await self._http.request(call.method, call.path, json=call.json)))

    async def _follow(self, follow: Follow) -> AsyncIterator[StreamEvent]:
        while True:
            error: BaseException | None = None
            try:
                async with self._http.stream("GET", follow.path, headers=follow.reopen(), timeout=None) as response:
                    if response.status_code >= 400:
                        await response.aread()
                    follow.opened(response)
                    async for line in response.aiter_lines():
                        event = follow.line(line)
                        if event is not None:
                            yield event
                            if follow.ended(event):
                                return
            except (httpx.TransportError, TetherError) as exc:
                error = exc
            await asyncio.sleep(follow.wait(error))


class Client(_Api):
    """The synchronous client (httpx.Client): the same calls, answered directly."""

    def __init__(
        self, base_url: str, token: str | None = None, *, timeout: float = 30.0, reconnect: Reconnect = Reconnect()
    ) -> None:
        self._http = httpx.Client(**_http_options(base_url, token, timeout))
        self._reconnect = reconnect

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call[T]) -> T:
        return call.read(_answer(self._http.request(call.method, call.path, json=call.json)))

    def _follow(self, follow: Follow) -> Iterator[StreamEvent]:
        while True:
            error: BaseException | None = None
            try:
                with self._http.stream("GET", follow.path, headers=follow.reopen(), timeout=None) as response:
                    if response.status_code >= 400:
                        response.read()
                    follow.opened(response)
                    for line in response.iter_lines():
                        event = follow.line(line)
                        if event is not None:
                            yield event
                            if follow.ended(event):
                                return
            except (httpx.TransportError, TetherError) as exc:
                error = exc
            time.sleep(follow.wait(error))
