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
    allowed_tools: list[str] = field(default_factory=list)
    """Tools a user chose to "always allow" in this thread: their calls need no approval."""
    last_run_status: RunStatus | None = None
    """The status of the thread's latest run (None before its first), for thread lists."""


@dataclass
class PendingCall:
    """A tool call waiting for a human's decision."""

    tool_call_id: str
    tool_name: str
    args: dict[str, Any]


@dataclass
class Decision:
    approved: bool
    reason: str | None = None
    args: dict[str, Any] | None = None
    """Approve with these arguments instead of the model's."""
    remember: bool = False
    """Approved, and always allow this tool in this thread from now on."""


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
    pending_approvals: list[PendingCall] | None = None
    decisions: dict[str, Decision] | None = None
    base_checkpoint_id: int | None = None
    """The checkpoint the run started from: what retry rewinds to."""
    retry_of: str | None = None
    inflight_response: bytes | None = None
    """The model response (pydantic-ai JSON) whose tool calls are executing, for crash recovery."""
    recoveries: int = 0


@dataclass
class ToolMark:
    """A durable record of one tool call: started before it runs, finished with its result."""

    run_id: str
    tool_call_id: str
    tool_name: str
    started_at: float
    finished_at: float | None = None
    result: str | None = None
    """The tool's return value as JSON, once finished."""


@dataclass
class InboxItem:
    """A steering message for a run, applied at its next step boundary."""

    id: str
    run_id: str
    input: str
    created_at: float
    applied_at: float | None = None


@dataclass
class Checkpoint:
    """A thread's message history (pydantic-ai JSON) as of some point of a run."""

    thread_id: str
    run_id: str | None
    messages: bytes
    created_at: float
    id: int | None = None
    kind: CheckpointKind = "step"


@dataclass
class ThreadSnapshot:
    """A thread's last seq, latest checkpoint and whether a run was active, read at one instant."""

    last_seq: int
    checkpoint: Checkpoint | None
    run_active: bool


CheckpointKind = Literal["start", "step", "pause", "end"]
"""start: a retry's rewind; step: before a model request (after a tool batch or a steer);
pause: waiting for approval; end: the run ended."""


@dataclass
class WriteBatch:
    """Everything one group commit makes durable at once."""

    events: list[Event] = field(default_factory=list)
    feed: list[FeedItem] = field(default_factory=list)
    run_updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    inbox_applied: list[tuple[str, float]] = field(default_factory=list)
    tool_marks: list[ToolMark] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.events or self.feed or self.run_updates or self.checkpoints or self.inbox_applied or self.tool_marks
        )


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def create_thread(self, thread: Thread) -> None: ...
    async def get_thread(self, thread_id: str) -> Thread | None: ...
    async def list_threads(self, limit: int, before: float | None = None) -> list[Thread]: ...
    async def update_thread(self, thread_id: str, *, title: str | None) -> None: ...
    async def allow_tools(self, thread_id: str, tools: list[str]) -> None: ...
    async def delete_thread(self, thread_id: str) -> None: ...

    async def create_run(self, run: Run) -> None: ...
    async def get_run(self, run_id: str) -> Run | None: ...
    async def list_runs(self, thread_id: str) -> list[Run]: ...
    async def runs_with_status(self, statuses: tuple[RunStatus, ...]) -> list[Run]: ...
    async def decide(self, run_id: str, before: dict[str, Decision], after: dict[str, Decision], resume: bool) -> bool:
        """Record decisions if nobody changed them since `before` (compare-and-set); with `resume`,
        also move the run from awaiting_approval to running. False if the run moved on meanwhile."""
        ...

    async def add_to_inbox(self, item: InboxItem) -> None: ...
    async def tool_marks(self, run_id: str) -> list[ToolMark]: ...
    async def inbox(self, run_id: str) -> list[InboxItem]: ...

    async def latest_checkpoint(self, thread_id: str) -> Checkpoint | None: ...
    async def thread_snapshot(self, thread_id: str) -> ThreadSnapshot: ...
    async def get_checkpoint(self, checkpoint_id: int) -> Checkpoint | None: ...

    async def last_seq(self, thread_id: str) -> int: ...
    async def read_events(self, thread_id: str, after: int, limit: int, run_id: str | None = None) -> list[Event]: ...
    async def last_feed_seq(self) -> int: ...
    async def read_feed(self, after: int, limit: int) -> list[FeedItem]: ...

    async def write(self, batch: WriteBatch) -> None: ...
