"""The Store: durable state (threads, runs, the event log, the feed, checkpoints).

The engine talks to a `Store`. There is one implementation, `SQLStore`
(`tether.store.sql`), on two databases: SQLite (`tether.store.sqlite`, the
embedded default) and PostgreSQL (`tether.store.postgres`, for several
workers). All writes made while a run streams go through one method,
`write(batch)`, so that a group of events, the run's status and its
checkpoint become durable together, in one transaction, before anyone sees
them; and the database refuses them unless the writer still holds the lease
of every run they belong to (fencing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tether.events import Event, FeedItem

DEFAULT_USER = "default"
"""The user of a server without users (no auth, or one --token); threads made before users existed are theirs."""

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
    user_id: str = DEFAULT_USER
    """The user who created the thread: only they see it."""
    agent: str | None = None
    """The name of the agent that answers the thread; None: the server's first agent."""
    parent_thread_id: str | None = None
    """The thread this one was forked from (None once that thread is deleted)."""


@dataclass(frozen=True)
class ClientRun:
    """A protocol client's runId (AG-UI): one stretch of a Tether run, its events after `after_seq`."""

    thread_id: str
    client_run_id: str
    run_id: str
    after_seq: int


@dataclass(frozen=True)
class ClientMessage:
    """A protocol client's own id for a user message it sent, and the run whose input it became."""

    thread_id: str
    message_id: str
    run_id: str
    is_input: bool
    """The message the run's user-message events stand for (the others were merged into it)."""


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
    ordinal: int = 0
    """The run's place among its thread's runs (1, 2, …): their order."""
    worker: str | None = None
    """The worker that holds the run's lease (executes it), if any."""
    lease_epoch: int = 0
    """Raised by every claim: a commit made under an older epoch is refused (fencing)."""
    lease_expires_at: float | None = None
    released: Released | None = None
    """Why the lease was given back while the run is running: what its next claimer must do."""
    cancel_requested: str | None = None
    """A cancel asked for while another worker executed the run (the reason); its executor acts on it."""
    cancel_discards: bool = False
    """The requested cancel is an interrupt: the unfinished model response is dropped."""
    usage: dict[str, Any] | None = None
    """What the run used so far, over all its executions (see tether.engine.usage); None before its first step."""
    parts: list[dict[str, Any]] | None = None
    """The message's parts when it has attachments: its text and references to them, in order (see
    tether.attachments); None when `input` is the whole message."""


@dataclass(frozen=True)
class Attachment:
    """An image or a file a user's message carried, stored once in its thread."""

    id: str
    thread_id: str
    media_type: str
    name: str | None
    size: int
    sha256: str
    created_at: float
    data: bytes | None = field(default=None, repr=False)
    """The bytes; None where only what the attachment is was read."""


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
    """A thread's message history as of some point of a run: one pydantic-ai JSON text per message.

    Stored as what it adds to the thread's checkpoint before it: the messages the two share are
    written once (see `tether.store.sql`).
    """

    thread_id: str
    run_id: str | None
    messages: list[bytes]
    created_at: float
    id: int | None = None
    kind: CheckpointKind = "step"
    follows: list[bytes] = field(default_factory=list, repr=False)
    """For a new checkpoint: the messages of the thread's latest checkpoint when it was made."""

    def json(self) -> bytes:
        """The history as one pydantic-ai JSON array (what ModelMessagesTypeAdapter reads)."""
        return b"[" + b",".join(self.messages) + b"]"


@dataclass
class ThreadSnapshot:
    """A thread's last seq, latest checkpoint and whether a run was active, read at one instant."""

    last_seq: int
    checkpoint: Checkpoint | None
    run_active: bool


Released = Literal["decided", "stopped"]
"""decided: every pending approval is decided, resume with the decisions; stopped: its worker stopped
at a step boundary (a deploy), continue from the checkpoint."""

ClaimMode = Literal["start", "resume", "handover", "takeover"]
"""How a claimed run begins on its new worker: a queued run starts; a decided one resumes; a released
one continues from its checkpoint (handover); one whose worker's lease lapsed is recovered (takeover)."""


@dataclass
class Claim:
    run: Run
    mode: ClaimMode
    previous_worker: str | None = None
    """Who held the lease before (for a takeover: the worker that stopped renewing it)."""


class LeaseLost(RuntimeError):
    """A write was refused: its writer no longer holds the lease of these runs (another worker took them)."""

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__(f"lease lost on run(s) {', '.join(run_ids)}")
        self.run_ids = run_ids


@dataclass(frozen=True)
class Lease:
    run_id: str
    worker: str
    epoch: int


@dataclass(frozen=True)
class Renewed:
    """A lease still held, and what other workers asked of its run meanwhile (through the database,
    for when the bus could not tell)."""

    cancel: tuple[str, bool] | None
    """A requested cancel: (reason, discards)."""
    steered: bool
    """Its inbox has steering messages not yet applied."""


CheckpointKind = Literal["start", "step", "pause", "end", "fork"]
"""start: a retry's rewind; step: before a model request (after a tool batch or a steer);
pause: waiting for approval; end: the run ended; fork: a forked thread's first history."""


@dataclass
class FeedNotice:
    """A feed item before its commit gives it its place in the feed."""

    thread_id: str
    run_id: str | None
    data: str
    user_id: str | None = None
    """Whose feed it is in; None: the thread's user (given only for a thread that is being deleted)."""


@dataclass
class WriteBatch:
    """Everything one group commit makes durable at once."""

    events: list[Event] = field(default_factory=list)
    feed: list[FeedNotice] = field(default_factory=list)
    run_updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    inbox_applied: list[tuple[str, float]] = field(default_factory=list)
    tool_marks: list[ToolMark] = field(default_factory=list)
    leases: dict[str, Lease] = field(default_factory=dict)
    """The lease under which each run's items in this batch are written (fencing)."""

    def __bool__(self) -> bool:
        return bool(
            self.events or self.feed or self.run_updates or self.checkpoints or self.inbox_applied or self.tool_marks
        )


class Store(Protocol):
    url: str
    """Where the data is (no password), for logs and /healthz."""
    engine: str
    """The database's name: "sqlite" or "postgresql"."""
    exclusive: bool
    """True when one process holds the database alone: then no other worker can hold a lease."""
    problem: str | None
    """Why the database cannot be trusted with writes any more (a deleted file); None: it can."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def create_thread(self, thread: Thread) -> None: ...
    async def create_thread_if_absent(self, thread: Thread) -> bool:
        """Insert the thread unless one with its id exists; whether it was inserted."""
        ...

    async def get_thread(self, thread_id: str) -> Thread | None: ...
    async def list_threads(
        self,
        user_id: str,
        limit: int,
        before: float | None = None,
        *,
        after: tuple[float, str] | None = None,
        query: str | None = None,
    ) -> list[Thread]:
        """The user's threads, the most recently updated first (then by id, descending): those updated
        before `before`, those that come after `after` (an (updated_at, id) of the previous page's last),
        and with `query`, those whose title or one message holds its every word (tether.store.search)."""
        ...

    async def update_thread(self, thread_id: str, *, title: str | None) -> None: ...
    async def allow_tools(self, thread_id: str, tools: list[str]) -> None: ...
    async def delete_thread(self, thread_id: str) -> None: ...

    async def create_run(
        self, run: Run, *, unless_active: bool = False, attachments: Sequence[Attachment] = ()
    ) -> Run | None:
        """Insert a queued run (its `ordinal` is given here), and the attachments its message brought, in
        one transaction. With `unless_active`, only if the thread has no active run: else nothing is
        inserted and that run is returned. Raises NotFound if the thread does not exist. The thread's
        row is locked meanwhile, so this holds across workers."""
        ...

    async def get_run(self, run_id: str) -> Run | None: ...
    async def list_runs(self, thread_id: str, statuses: tuple[RunStatus, ...] | None = None) -> list[Run]:
        """The thread's runs in their order (only those with one of `statuses`, if given)."""
        ...

    async def runs_with_status(self, statuses: tuple[RunStatus, ...], user_id: str | None = None) -> list[Run]:
        """Runs with one of these statuses, oldest first: every user's, or one user's."""
        ...

    async def decide(self, run_id: str, before: dict[str, Decision], after: dict[str, Decision], resume: bool) -> bool:
        """Record decisions if nobody changed them since `before` (compare-and-set); with `resume`,
        also release the run to be resumed by any worker. False if the run moved on meanwhile."""
        ...

    async def cancel_queued(self, run_id: str, reason: str) -> bool:
        """Cancel a run that no worker has claimed yet; False if it is no longer queued."""
        ...

    async def request_cancel(self, run_id: str, reason: str, discards: bool) -> None:
        """Record a cancel for the worker that executes (or will claim) the run."""
        ...

    async def claim_runs(self, worker: str, lease_seconds: float, limit: int) -> list[Claim]:
        """Take the lease of up to `limit` runs that need a worker: queued runs whose turn it is,
        released runs, and runs whose lease lapsed. Oldest first; concurrent claimers skip each
        other's rows, so no run is claimed twice."""
        ...

    async def claim_paused(self, run_id: str, worker: str, lease_seconds: float) -> Run | None:
        """Take the lease of a run awaiting approval (to end it); None if it is not awaiting approval."""
        ...

    async def renew_leases(self, leases: list[Lease], lease_seconds: float) -> dict[str, Renewed]:
        """Extend the leases still held (run id → what was asked of the run meanwhile). Runs missing
        from the answer were taken by another worker."""
        ...

    async def expire_leases(self, except_worker: str) -> int:
        """End every other worker's lease at once; only for a store that one process holds alone."""
        ...

    async def add_to_inbox(self, item: InboxItem) -> bool:
        """Add a steering message to an active run's inbox; False if the run is no longer active. The
        run's row is held meanwhile, so a run that ends at the same moment either sees the message or
        makes the caller start a new run."""
        ...

    async def tool_marks(self, run_id: str) -> list[ToolMark]: ...
    async def inbox(self, run_id: str) -> list[InboxItem]: ...

    async def attachment(self, attachment_id: str, user_id: str) -> Attachment | None:
        """An attachment with its bytes, if it is in one of the user's threads."""
        ...

    async def attachments(self, thread_id: str) -> list[Attachment]:
        """What the thread's attachments are (without their bytes)."""
        ...

    async def attachment_data(self, thread_id: str, ids: Sequence[str]) -> dict[str, bytes]:
        """The bytes of these attachments of the thread, by id."""
        ...

    async def copy_attachments(self, from_thread: str, to_thread: str, ids: Sequence[str]) -> None:
        """Give another thread (a fork) its own copy of these attachments, under the same ids."""
        ...

    async def latest_checkpoint(self, thread_id: str) -> Checkpoint | None: ...
    async def thread_snapshot(self, thread_id: str) -> ThreadSnapshot: ...
    async def get_checkpoint(self, checkpoint_id: int) -> Checkpoint | None: ...

    async def last_seq(self, thread_id: str) -> int: ...
    async def read_events(self, thread_id: str, after: int, limit: int, run_id: str | None = None) -> list[Event]: ...
    async def last_feed_seq(self) -> int: ...
    async def read_feed(self, after: int, limit: int) -> list[FeedItem]: ...
    async def first_feed_seq(self) -> int:
        """The oldest feed item kept (the last seq + 1 when none is)."""
        ...

    async def trim_feed(self, keep: int) -> int:
        """Delete all but the last `keep` feed items; how many went."""
        ...

    async def add_client_run(self, run: ClientRun) -> bool:
        """Record a client's runId unless the thread has it already; whether it was recorded."""
        ...

    async def client_runs(self, thread_id: str) -> list[ClientRun]: ...
    async def add_client_messages(self, messages: list[ClientMessage]) -> None:
        """Record client message ids; an id recorded before now names the new run (a retry re-answers it)."""
        ...

    async def client_messages(self, thread_id: str) -> list[ClientMessage]: ...

    async def write(self, batch: WriteBatch) -> list[FeedItem]:
        """Commit the batch in one transaction and return its feed items, numbered. Raises LeaseLost
        (and writes nothing) if a run's lease in `batch.leases` is no longer held."""
        ...
