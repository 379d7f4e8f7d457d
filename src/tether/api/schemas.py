"""Request and response bodies of the v1 API."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tether.store import Run, RunStatus, Thread


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _no_nul(value: str) -> str:
    """Text the store keeps as text: PostgreSQL cannot hold a NUL character, so neither engine takes one."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (U+0000)")
    return value


_SPACES = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x3001)) if c.isspace())
"""What str.strip() strips, as a JSON Schema character class: so the schema says exactly what is blank."""
NO_NUL = "^[^\\u0000]*$"
NOT_BLANK = f"^[^\\u0000]*[^\\u0000{_SPACES}][^\\u0000]*$"

Title = Annotated[str, Field(max_length=200, json_schema_extra={"pattern": NO_NUL}), AfterValidator(_no_nul)]
UserText = Annotated[
    str,
    Field(min_length=1, json_schema_extra={"pattern": NOT_BLANK}),
    AfterValidator(_no_nul),
    AfterValidator(_not_blank),
]

METADATA_DEPTH = 20
METADATA_BYTES = 16_000


def _storable(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata that every later read can serve: nested at most METADATA_DEPTH deep (JSON libraries
    refuse deeper documents, which would break every list that shows the thread) and small."""

    # Iteratively: a document nested deeper than Python's recursion limit must get its 422 too.
    level: list[Any] = [value]
    for _ in range(METADATA_DEPTH):
        level = [
            c
            for item in level
            for c in (item.values() if isinstance(item, dict) else item)
            if isinstance(c, dict | list)
        ]
        if not level:
            break
    else:
        raise ValueError(f"must be nested at most {METADATA_DEPTH} levels deep")
    if len(json.dumps(value, separators=(",", ":"))) > METADATA_BYTES:
        raise ValueError(f"must be at most {METADATA_BYTES} bytes as JSON")
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_storable)]


class CreateThread(Strict):
    title: Title | None = None
    metadata: Metadata = Field(default_factory=dict, description="Any JSON object, given to the agent's deps factory.")
    agent: str | None = Field(default=None, max_length=64, description="The agent that answers (default: the first).")


class UpdateThread(Strict):
    title: Title | None


class ForkThread(Strict):
    before_message_id: str = Field(
        min_length=1,
        max_length=200,
        description="The user message to branch before, by its id in GET /v1/threads/{tid} or the thread's stream.",
    )
    title: str | None = Field(
        default=None, max_length=200, description="The new thread's title (default: the parent's)."
    )


class CreateRun(Strict):
    input: UserText = Field(description="The user's message.")
    multitask: Literal["reject", "enqueue", "steer", "interrupt"] = Field(
        default="reject",
        description="If the thread already has an active run: 409 (reject), run after it (enqueue), give it "
        "this message at its next step (steer), or stop it and answer this message instead (interrupt).",
    )
    model: str | None = Field(default=None, description="A pydantic-ai model string for this run only.")


class SteerRequest(Strict):
    input: UserText = Field(description="The message for the running agent.")


class DecisionIn(Strict):
    approved: bool
    reason: str | None = Field(default=None, max_length=2000, description="Told to the model on a denial.")
    args: dict[str, Any] | None = Field(default=None, description="Approve with these arguments instead.")
    remember: bool = Field(default=False, description="Always allow this tool in this thread from now on.")


class ApprovalsRequest(Strict):
    decisions: dict[str, DecisionIn] = Field(min_length=1, description="tool_call_id → decision.")


class PendingCallOut(BaseModel):
    tool_call_id: str
    tool_name: str
    args: dict[str, Any]
    decision: DecisionIn | None = None


class UsageOut(BaseModel):
    """pydantic-ai's RunUsage of a run, over all its executions, with the model that answered."""

    model_config = ConfigDict(extra="allow")  # RunUsage's other counters (audio, reasoning, cost) as they are

    requests: int = Field(description="Model requests made.")
    tool_calls: int = Field(description="Tool calls executed.")
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    details: dict[str, int] = Field(default_factory=dict, description="The provider's own counters.")
    model: str | None = Field(description="The model that gave the run's last answer (its `model_name`).")
    message_id: str | None = Field(
        description="The run's last assistant message (its id in GET /v1/threads/{tid}): where its usage belongs."
    )


class RunOut(BaseModel):
    id: str
    thread_id: str
    status: RunStatus
    input: str
    multitask: str
    model: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    retry_of: str | None
    worker: str | None = Field(description="The worker executing the run (holding its lease), while it runs.")
    pending_approvals: list[PendingCallOut] = Field(
        description="Tool calls waiting for a decision (with the decisions made so far) while awaiting_approval."
    )
    usage: UsageOut | None = Field(
        default=None, description="What the run used so far (tokens, requests); null before its first model request."
    )

    @classmethod
    def of(cls, run: Run) -> RunOut:
        decisions = run.decisions or {}
        pending = (
            [
                PendingCallOut(
                    tool_call_id=c.tool_call_id,
                    tool_name=c.tool_name,
                    args=c.args,
                    decision=DecisionIn(**asdict(decisions[c.tool_call_id])) if c.tool_call_id in decisions else None,
                )
                for c in run.pending_approvals or []
            ]
            if run.status == "awaiting_approval"
            else []
        )
        fields = {k: v for k, v in run.__dict__.items() if k in cls.model_fields and k != "pending_approvals"}
        return cls(**fields, pending_approvals=pending)


class ThreadOut(BaseModel):
    id: str
    title: str | None
    created_at: float
    updated_at: float
    metadata: dict[str, Any]
    allowed_tools: list[str] = Field(description="Tools always allowed in this thread (no approval asked).")
    last_run_status: RunStatus | None = Field(description="The status of the thread's latest run, if any.")
    user_id: str = Field(description="The user the thread belongs to (only they see it).")
    agent: str = Field(description="The name of the agent that answers the thread.")
    parent_thread_id: str | None = Field(
        default=None, description="The thread this one was forked from (null if none, or once it is deleted)."
    )

    @classmethod
    def of(cls, thread: Thread, default_agent: str) -> ThreadOut:
        return cls(**{**thread.__dict__, "agent": thread.agent or default_agent})


class ThreadDetail(ThreadOut):
    status: Literal["idle", "queued", "running", "awaiting_approval"]
    active_run: RunOut | None
    last_seq: int = Field(description="The thread's last event; stream with after=last_seq to follow from here.")
    messages_seq: int | None = Field(
        description="The seq `messages` is current to: fold the events after it onto `messages` to follow "
        "the live transcript. Null while a run is active: its partial answer is only in the log, so fold "
        "the log from the start instead."
    )
    messages: list[dict[str, Any]] = Field(description="The stored history, as AG-UI messages.")


class ThreadList(BaseModel):
    threads: list[ThreadOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page (same `q` and `limit`); null after the last."
    )


class RunList(BaseModel):
    runs: list[RunOut]


class RunAccepted(BaseModel):
    run_id: str
    thread_id: str
    status: RunStatus
    delivery: Literal["inbox", "new_run"] | None = Field(
        default=None,
        description="For a steer: inbox (the active run gets it at its next step) or new_run (the thread was idle).",
    )


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


class Engines(BaseModel):
    store: Literal["sqlite", "postgresql"]
    bus: Literal["memory", "redis"]
    bus_healthy: bool = Field(
        description="False while the Redis bus reconnects: streams are fed from the database meanwhile."
    )
    database: str = Field(description="Where the data is (no password).")


class Health(BaseModel):
    status: Literal["ok", "unhealthy"] = Field(description="unhealthy (with status 503): see `problem`.")
    problem: str | None = Field(default=None, description="Why the server cannot be trusted with writes now.")
    version: str
    worker: str = Field(description="This worker's id (the `worker` of the runs it executes).")
    engines: Engines
    runs: int = Field(description="Runs this worker executes now.")
    auth: Literal["none", "token", "users", "custom"] = Field(
        description="How /v1 callers are authenticated (what a sign-in page must ask for)."
    )


class ToolOut(BaseModel):
    name: str
    description: str | None
    requires_approval: bool
    parameters: dict[str, Any] = Field(description="The JSON schema of the tool's arguments.")


class AgentOut(BaseModel):
    name: str
    description: str | None
    model: str | None = Field(description="The model its runs use (unless a run names another).")
    tools: list[ToolOut]


class AgentList(BaseModel):
    agents: list[AgentOut]
    default: str = Field(description="The agent of a thread created without one.")


class Me(BaseModel):
    user: str | None = Field(description="The caller's user id; null on a server without users or a token.")
    auth: Literal["none", "token", "users", "custom"] = Field(description="How this server authenticates callers.")
