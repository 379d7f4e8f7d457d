"""A run's events, translated into a protocol's frames, sent by the v1 API's `EventStreamResponse`.

`TranslatedStream` reads like a `Follower` to the response (the same cut-off, shutdown and position),
so a protocol stream ends, is cut off and says "reconnect" exactly as a v1 stream does; only the frames
differ, and the translator says where the stream ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.types import Message, Receive, Scope, Send

from tether.api.sse import EventStreamResponse
from tether.engine.streams import Follower
from tether.events import Event


@dataclass(frozen=True, slots=True)
class Frame:
    """One SSE frame: a JSON text, with the thread's seq as its `id:` when it stands for one event."""

    data: str
    seq: int | None = None

    @classmethod
    def of(cls, body: dict[str, Any], seq: int | None = None) -> Frame:
        return cls(json.dumps(body, separators=(",", ":"), ensure_ascii=False), seq)

    def sse(self) -> bytes:
        head = f"id: {self.seq}\n" if self.seq is not None else ""
        return f"{head}data: {self.data}\n\n".encode()


class Translator(Protocol):
    done: bool
    """Set by the event that ends this protocol's stream."""

    def feed(self, event: Event) -> list[Frame]: ...

    def close(self) -> list[Frame]:
        """What follows the last event (the AI SDK's `[DONE]`)."""
        ...


class TranslatedStream:
    """A follower's batches, translated; an empty batch still means "send a keep-alive"."""

    def __init__(self, follower: Follower, translator: Translator) -> None:
        self._follower = follower
        self._translator = translator
        self.cut_off: asyncio.Event = follower.cut_off
        self.closing: asyncio.Event = follower.closing
        self.buffer = follower.buffer

    @property
    def last_seq(self) -> int:
        return self._follower.last_seq

    def close(self) -> None:
        self._follower.close()

    async def batches(self) -> AsyncIterator[list[Frame]]:
        async for batch in self._follower.batches():
            if not batch:
                yield []
                continue
            frames: list[Frame] = []
            for event in batch:
                frames += self._translator.feed(event)
                if self._translator.done:
                    yield frames + self._translator.close()
                    return
            if frames:
                yield frames


class ProtocolStreamResponse(EventStreamResponse):
    """An event stream with the protocol's own response headers added."""

    def __init__(self, stream: TranslatedStream, name: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(stream, name)  # type: ignore[arg-type]  # it reads like a Follower
        self.extra_headers = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and self.extra_headers:
                message = {**message, "headers": [*message["headers"], *self.extra_headers]}
            await send(message)

        await super().__call__(scope, receive, send_with_headers)
