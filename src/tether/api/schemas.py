"""Request and response bodies of the v1 API."""

from __future__ import annotations

import binascii
import json
from dataclasses import asdict
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from tether import attachments
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
FileName = Annotated[
    str, Field(min_length=1, max_length=255, json_schema_extra={"pattern": NO_NUL}), AfterValidator(_no_nul)
]
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


BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
URL = "^https?://[!-~]+$"
"""A url the model may fetch: http or https, in printable ASCII (an IRI's other characters percent-encoded)."""


def _base64(value: str) -> str:
    try:
        binascii.a2b_base64(value, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError(f"must be base64 (RFC 4648, with padding): {exc}") from None
    return value


class InputText(Strict):
    type: Literal["text"]
    text: UserText


class _InputMedia(Strict):
    """An attachment: its bytes as `data`, or a `url` (see tether.attachments)."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["data"], "properties": {"data": {"type": "string"}}},
                {"required": ["url"], "properties": {"url": {"type": "string"}, "name": {"type": "null"}}},
            ]
        }
    )

    media_type: str = Field(max_length=127, description="One of the server's `--attachment-types` (else 415).")
    data: Annotated[str, Field(min_length=4, json_schema_extra={"pattern": BASE64}), AfterValidator(_base64)] | None = (
        Field(default=None, description="The bytes, in base64: at most `--max-attachment-bytes` of them (else 413).")
    )
    url: Annotated[str, Field(max_length=2048, pattern=URL)] | None = Field(
        default=None, description="Instead of `data`: where the model may fetch it (Tether itself does not)."
    )
    name: FileName | None = Field(default=None, description="A file name to show, with `data`.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.data is None) == (self.url is None):
            raise ValueError("give the bytes as `data` (base64), or a `url`: one of the two")
        if self.url is not None and self.name is not None:
            raise ValueError("`name` goes with `data` (a url names its own file)")
        return self


class InputImage(_InputMedia):
    type: Literal["image"]


class InputFile(_InputMedia):
    type: Literal["file"]


InputPart = Annotated[InputText | InputImage | InputFile, Field(discriminator="type")]


def _input_kind(value: Any) -> str | None:
    return "text" if isinstance(value, str) else "parts" if isinstance(value, list) else None


MessageInput = Annotated[
    Annotated[UserText, Tag("text")] | Annotated[list[InputPart], Field(min_length=1, max_length=64), Tag("parts")],
    Discriminator(
        _input_kind,
        custom_error_type="input_type",
        custom_error_message="must be the message's text, or a list of its parts",
    ),
]


def _text_only(value: Any) -> Any:
    if isinstance(value, list):
        raise ValueError(
            "a steering message is text only: send attachments in a message of their own "
            "(POST /v1/threads/{tid}/runs with multitask 'enqueue' or 'interrupt')"
        )
    return value


class CreateRun(Strict):
    model_config = ConfigDict(
        # A steering message is text only: its schema says so (and the engine answers 422).
        json_schema_extra={
            "anyOf": [
                {"properties": {"multitask": {"enum": ["reject", "enqueue", "interrupt"]}}},
                {"properties": {"input": {"type": "string"}}},
            ]
        }
    )

    input: MessageInput = Field(
        description="The user's message: its text, or its parts: `{type: text, text}`, and attachments "
        "`{type: image | file, media_type, data (base64), name?}` or `{type: image | file, media_type, url}` "
        "(at most `--max-attachments`; an image's media_type is an image type, a file's is not)."
    )
    multitask: Literal["reject", "enqueue", "steer", "interrupt"] = Field(
        default="reject",
        description="If the thread already has an active run: 409 (reject), run after it (enqueue), give it "
        "this message at its next step (steer), or stop it and answer this message instead (interrupt).",
    )
    model: str | None = Field(default=None, description="A pydantic-ai model string for this run only.")


class SteerRequest(Strict):
    input: Annotated[UserText, BeforeValidator(_text_only)] = Field(
        description="The message for the running agent (text only)."
    )


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


class AttachmentOut(BaseModel):
    """An attachment as the log, the transcript and the run show it: no bytes, where to get them."""

    type: Literal["image", "file"]
    media_type: str
    name: str | None = None
    size: int | None = Field(default=None, description="Its bytes (for one sent as data).")
    id: str | None = Field(default=None, description="For one sent as data: GET /v1/attachments/{id} serves it.")
    url: str = Field(description="`/v1/attachments/{id}` (under the server's base), or the url it was sent as.")


class RunOut(BaseModel):
    id: str
    thread_id: str
    status: RunStatus
    input: str = Field(description="The message's text (its text parts, joined by a blank line).")
    attachments: list[AttachmentOut] = Field(default_factory=list, description="The message's attachments.")
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
        return cls(**fields, pending_approvals=pending, attachments=attachments.shown(run.parts))


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
