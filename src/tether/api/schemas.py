"""Request and response bodies of the v1 API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tether.store import Run, RunStatus, Thread


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateThread(Strict):
    title: str | None = Field(default=None, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)


class UpdateThread(Strict):
    title: str | None = Field(max_length=200)


class CreateRun(Strict):
    input: str = Field(min_length=1, description="The user's message.")
    multitask: Literal["reject", "enqueue"] = Field(
        default="reject",
        description="What to do if the thread already has an active run: 409 (reject) or queue it (enqueue).",
    )
    model: str | None = Field(default=None, description="A pydantic-ai model string for this run only.")

    @field_validator("input")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("input must not be blank")
        return value


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

    @classmethod
    def of(cls, run: Run) -> RunOut:
        return cls(**run.__dict__)


class ThreadOut(BaseModel):
    id: str
    title: str | None
    created_at: float
    updated_at: float
    metadata: dict[str, Any]

    @classmethod
    def of(cls, thread: Thread) -> ThreadOut:
        return cls(**thread.__dict__)


class ThreadDetail(ThreadOut):
    status: Literal["idle", "queued", "running", "awaiting_approval"]
    active_run: RunOut | None
    last_seq: int = Field(description="The thread's last event; stream with after=last_seq to follow from here.")
    messages: list[dict[str, Any]] = Field(description="The stored history, as AG-UI messages.")


class ThreadList(BaseModel):
    threads: list[ThreadOut]


class RunList(BaseModel):
    runs: list[RunOut]


class RunAccepted(BaseModel):
    run_id: str
    thread_id: str
    status: RunStatus


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"]
    version: str
