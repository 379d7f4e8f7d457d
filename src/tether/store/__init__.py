"""The Store: durable state (threads, runs, the event log, the feed, checkpoints).

The engine talks to a `Store`; `SQLiteStore` is the embedded implementation.
All writes made while a run streams go through one method, `write(batch)`,
so that a group of events, the run's status and its checkpoint become durable
together, in one transaction, before anyone sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tether.events import Event, FeedItem

RunStatus = Literal["queued", "running", "awaiting_approval", "completed", "failed", "cancelled"]
ACTIVE_STATUSES: tuple[RunStatus, ...] = ("queued", "running", "awaiting_approval")
TERMINAL_STATUSES: tuple[RunStatus, ...] = ("completed", "failed", "cancelled")


@dataclass
class Thread:
    id: str
    title: str | None
    created_at: float
    updated_at: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    id: str
    thread_id: str
    status: RunStatus
    input: str
    multitask: str
    model: str | None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None


@dataclass
class Checkpoint:
    """A thread's message history (pydantic-ai JSON) as of some point of a run."""

    thread_id: str
    run_id: str | None
    messages: bytes
    created_at: float


@dataclass
class WriteBatch:
    """Everything one group commit makes durable at once."""

    events: list[Event] = field(default_factory=list)
    feed: list[FeedItem] = field(default_factory=list)
    run_updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.feed or self.run_updates or self.checkpoints)


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def create_thread(self, thread: Thread) -> None: ...
    async def get_thread(self, thread_id: str) -> Thread | None: ...
    async def list_threads(self, limit: int, before: float | None = None) -> list[Thread]: ...
    async def update_thread(self, thread_id: str, *, title: str | None) -> None: ...
    async def delete_thread(self, thread_id: str) -> None: ...

    async def create_run(self, run: Run) -> None: ...
    async def get_run(self, run_id: str) -> Run | None: ...
    async def list_runs(self, thread_id: str) -> list[Run]: ...
    async def runs_with_status(self, statuses: tuple[RunStatus, ...]) -> list[Run]: ...

    async def latest_checkpoint(self, thread_id: str) -> Checkpoint | None: ...

    async def last_seq(self, thread_id: str) -> int: ...
    async def read_events(
        self, thread_id: str, after: int, limit: int, run_id: str | None = None
    ) -> list[Event]: ...
    async def last_feed_seq(self) -> int: ...
    async def read_feed(self, after: int, limit: int) -> list[FeedItem]: ...

    async def write(self, batch: WriteBatch) -> None: ...
