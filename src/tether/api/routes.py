"""The v1 HTTP API. Each route validates its input and calls the engine, as the caller; nothing more."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from tether import __version__, attachments
from tether.api.auth import caller
from tether.api.schemas import (
    AgentList,
    ApprovalsRequest,
    CreateRun,
    CreateThread,
    Engines,
    ErrorOut,
    ForkThread,
    Health,
    Me,
    RunAccepted,
    RunList,
    RunOut,
    SteerRequest,
    ThreadDetail,
    ThreadList,
    ThreadOut,
    UpdateThread,
)
from tether.api.sse import EventStreamResponse
from tether.engine import Engine
from tether.errors import BadRequest
from tether.store import Decision, Thread

WHEN = {
    400: "Input the server cannot use: a body that is not JSON, or a value it does not know (the code says which).",
    403: "Sent by a web page of another origin (`cross_origin`).",
    404: "No such thread or run, or another user's (`not_found`).",
    409: "The thread, run or log is not in a state that allows this now (the code says why).",
    410: "The feed no longer holds what came after that id (`feed_expired`): connect without one.",
    413: "The body is larger than `--max-body-bytes` (`body_too_large`; a message's may also hold its attachments), "
    "or a message over a limit: `input_too_long`, `too_many_attachments`, `attachment_too_large`.",
    415: "An attachment's media type is not one of `--attachment-types` (`unsupported_media_type`).",
    421: "A Host name this server is not known by (`misdirected_request`).",
    422: "The request does not match its schema; the message names the field (`invalid_request`).",
    429: "Over a limit of the caller's: runs queued on the thread, or streams open (the code says which).",
    500: "The server failed: `auth_failed` (its `--auth` function did) or `internal_error` (see its log).",
    503: "The server is shutting down, or its store cannot be used right now (`unavailable`).",
}
"""What each error status of the API means, as its OpenAPI says."""
EVERY = (413, 421, 422, 503)
"""What every /v1 route can answer: the edge's body limit and Host check, a bad parameter, a store that
is down. The 401 is documented by `tether.api.openapi`, as the server authenticates."""
ERRORS = {status: {"model": ErrorOut, "description": WHEN[status]} for status in EVERY}
"""The router's default, for a route that names no errors of its own; it also puts ErrorOut in the
components that `error` refers to."""
ERROR_OUT = "#/components/schemas/ErrorOut"


def error(status: int) -> dict[str, Any]:
    """One error answer as OpenAPI: `{error: {code, message}}` as JSON. Spelled out, not given as a
    `model`: FastAPI documents a model in the route's own media type, an event stream's on a stream."""
    return {"description": WHEN[status], "content": {"application/json": {"schema": {"$ref": ERROR_OUT}}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A /v1 route's error answers: these, and those of every route."""
    return {status: error(status) for status in sorted({*statuses, *EVERY})}


def resume_schema(schema: dict[str, Any]) -> None:
    """Document a resume point as the streams take it: a seq in digits (empty: from the start). Not as
    FastAPI would, `string | null`: a header or query value is never null, and not every string works."""
    schema.pop("anyOf", None)
    schema.update(type="string", pattern="^[0-9]{0,19}$")


def event_stream(description: str, data: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """A 200 that is an event stream (not JSON): each event an optional `id:` (a seq) and a `data:` line
    as `data` says."""
    seq = {"type": "string", "pattern": "^[0-9]+$"}
    event = {"type": "object", "required": ["data"], "properties": {"id": seq, "data": data}}
    return {200: {"description": description, "content": {"text/event-stream": {"schema": event}}}}


JSON_EVENT = {"type": "string", "contentMediaType": "application/json", "contentSchema": {"type": "object"}}
"""An event's `data:` line: a JSON object (an AG-UI event, a feed notice)."""
SSE = event_stream("Server-sent events: `id:` is the event's seq, `data:` the event as JSON.", JSON_EVENT)

router = APIRouter(prefix="/v1", responses=ERRORS)
health_router = APIRouter()


def engine(request: Request) -> Engine:
    return request.app.state.engine


def thread_out(request: Request, thread: Thread) -> ThreadOut:
    return ThreadOut.of(thread, engine(request).agents.default)


def resume_point(last_event_id: str | None, after: str | None) -> int:
    """Where a stream resumes: `Last-Event-ID` (what EventSource sends) wins over `?after=`; each one
    given must be a seq, even the one that loses (an empty one: from the start)."""
    points = [_seq(raw) for raw in (last_event_id, after) if raw is not None]
    return points[0] if points else 0


def _seq(raw: str) -> int:
    if raw == "":
        return 0
    # ASCII digits only: str.isdigit() also accepts '²' and the like, which int() rejects (a 500).
    # A seq is a SQLite INTEGER, so more than 19 digits cannot be one (and int() refuses >4300 digits).
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise BadRequest(
            f"Last-Event-ID / after must be a sequence number, got {raw[:40]!r}", code="invalid_last_event_id"
        )
    return int(raw)


@health_router.get(
    "/healthz",
    response_model=Health,
    tags=["health"],
    responses={
        413: error(413),
        421: error(421),
        503: {"model": Health, "description": "The store cannot be trusted with writes (see `problem`)."},
    },
)
async def healthz(request: Request, response: Response) -> Health:
    """200 while the server can do its work; 503 when its store cannot be trusted with writes."""
    eng = engine(request)
    bus = "redis" if eng.settings.redis else "memory"
    problem = eng.store.problem
    if problem is not None:
        response.status_code = 503
    return Health(
        status="ok" if problem is None else "unhealthy",
        problem=problem,
        version=__version__,
        worker=eng.worker_id,
        engines=Engines(store=eng.store.engine, bus=bus, bus_healthy=eng.bus.healthy, database=eng.store.url),
        runs=eng.worker.executing,
        auth=request.app.state.auth.kind,
    )


@health_router.get(
    "/metrics",
    tags=["health"],
    response_class=PlainTextResponse,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."},
        **{status: error(status) for status in (413, 421, 503)},
    },
)
async def metrics(request: Request) -> PlainTextResponse:
    """Counters for Prometheus; behind the same auth as /v1 unless `--metrics-public`."""
    return PlainTextResponse(await engine(request).metrics_exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/me", response_model=Me, tags=["users"])
async def me(request: Request) -> Me:
    """Who the caller is, and how this server tells users apart."""
    kind = request.app.state.auth.kind
    return Me(user=None if kind == "none" else caller(request), auth=kind)


@router.get("/agents", response_model=AgentList, tags=["agents"])
async def list_agents(request: Request) -> AgentList:
    """The agents this server serves; a new thread is answered by `default` unless it names another."""
    eng = engine(request)
    return AgentList.model_validate({"agents": eng.agents.describe(eng.settings.model), "default": eng.agents.default})


@router.post("/threads", status_code=201, response_model=ThreadOut, tags=["threads"], responses=errors(400, 403))
async def create_thread(request: Request, body: CreateThread | None = Body(default=None)) -> ThreadOut:
    body = body or CreateThread()
    thread = await engine(request).create_thread(caller(request), body.title, body.metadata, body.agent)
    return thread_out(request, thread)


@router.get("/threads", response_model=ThreadList, tags=["threads"], responses=errors(400))
async def list_threads(
    request: Request,
    limit: int = Query(50, ge=1, le=500),
    before: float | None = Query(None, description="Only threads updated before this time."),
    q: str | None = Query(
        None,
        min_length=1,
        max_length=500,
        description="Only threads whose title or one message holds every word of it (each as a word's start).",
    ),
    cursor: str | None = Query(None, max_length=500, description="The next page: a list's `next_cursor`."),
) -> ThreadList:
    """The caller's threads, the most recently active first, a page at a time."""
    threads, next_cursor = await engine(request).list_threads(caller(request), limit, before, cursor=cursor, query=q)
    return ThreadList(threads=[thread_out(request, t) for t in threads], next_cursor=next_cursor)


@router.get("/threads/{thread_id}", response_model=ThreadDetail, tags=["threads"], responses=errors(404))
async def get_thread(request: Request, thread_id: str) -> ThreadDetail:
    eng = engine(request)
    thread = await eng.get_thread(thread_id, caller(request))
    messages, last_seq, messages_seq = await eng.thread_messages(thread)
    active = await eng.active_runs(thread_id)
    current = next((r for r in active if r.status != "queued"), active[0] if active else None)
    return ThreadDetail(
        **thread_out(request, thread).model_dump(),
        status=current.status if current else "idle",
        active_run=RunOut.of(current) if current else None,
        last_seq=last_seq,
        messages_seq=messages_seq,
        messages=messages,
    )


@router.patch("/threads/{thread_id}", response_model=ThreadOut, tags=["threads"], responses=errors(400, 403, 404))
async def update_thread(request: Request, thread_id: str, body: UpdateThread) -> ThreadOut:
    return thread_out(request, await engine(request).rename_thread(thread_id, caller(request), body.title))


@router.post(
    "/threads/{thread_id}/fork",
    status_code=201,
    response_model=ThreadOut,
    tags=["threads"],
    responses=errors(400, 403, 404, 409),
)
async def fork_thread(request: Request, thread_id: str, body: ForkThread) -> ThreadOut:
    """A new thread holding this one's history up to (not including) a user message; this one is unchanged."""
    thread = await engine(request).fork(thread_id, caller(request), body.before_message_id, body.title)
    return thread_out(request, thread)


@router.delete("/threads/{thread_id}", status_code=204, tags=["threads"], responses=errors(403, 404))
async def delete_thread(request: Request, thread_id: str) -> Response:
    await engine(request).delete_thread(thread_id, caller(request))
    return Response(status_code=204)


@router.post(
    "/threads/{thread_id}/runs",
    status_code=202,
    response_model=RunAccepted,
    tags=["runs"],
    responses=errors(400, 403, 404, 409, 415, 429),
)
async def create_run(request: Request, thread_id: str, body: CreateRun) -> RunAccepted:
    """Answer a message in the background. The events follow on the thread's and the run's streams."""
    sent = body.input if isinstance(body.input, str) else [part.model_dump(exclude_none=True) for part in body.input]
    if body.multitask == "steer":
        run, delivery = await engine(request).steer(thread_id, caller(request), sent)
        return RunAccepted(run_id=run.id, thread_id=run.thread_id, status=run.status, delivery=delivery)
    run = await engine(request).start_run(thread_id, caller(request), sent, body.multitask, body.model)
    return RunAccepted(run_id=run.id, thread_id=run.thread_id, status=run.status)


@router.post(
    "/threads/{thread_id}/steer",
    status_code=202,
    response_model=RunAccepted,
    tags=["runs"],
    responses=errors(400, 403, 404, 409),
)
async def steer(request: Request, thread_id: str, body: SteerRequest) -> RunAccepted:
    """Give the active run a message at its next step boundary; if the thread is idle, start a run."""
    run, delivery = await engine(request).steer(thread_id, caller(request), body.input)
    return RunAccepted(run_id=run.id, thread_id=run.thread_id, status=run.status, delivery=delivery)


@router.post(
    "/threads/{thread_id}/retry",
    status_code=202,
    response_model=RunAccepted,
    tags=["runs"],
    responses=errors(403, 404, 409),
)
async def retry(request: Request, thread_id: str) -> RunAccepted:
    """Re-answer the last user message from the history before it (the old answer stays in the log)."""
    run = await engine(request).retry(thread_id, caller(request))
    return RunAccepted(run_id=run.id, thread_id=run.thread_id, status=run.status)


@router.get("/threads/{thread_id}/runs", response_model=RunList, tags=["runs"], responses=errors(404))
async def list_runs(request: Request, thread_id: str) -> RunList:
    return RunList(runs=[RunOut.of(r) for r in await engine(request).list_runs(thread_id, caller(request))])


@router.get(
    "/threads/{thread_id}/stream",
    status_code=200,
    response_class=EventStreamResponse,
    responses={**SSE, **errors(400, 404, 409, 429)},
    tags=["streams"],
)
async def stream_thread(
    request: Request,
    thread_id: str,
    last_event_id: str | None = Header(None, json_schema_extra=resume_schema),
    after: str | None = Query(
        None, json_schema_extra=resume_schema, description="Resume after this seq (Last-Event-ID wins if both are set)."
    ),
) -> EventStreamResponse:
    follower = await engine(request).follow_thread(thread_id, caller(request), resume_point(last_event_id, after))
    return EventStreamResponse(follower, f"thread {thread_id} stream")


@router.get(
    "/attachments/{attachment_id}",
    response_class=Response,
    tags=["attachments"],
    responses={
        200: {
            "description": "The attachment's bytes, as its media type (an image shown inline, anything else a "
            "download; see tether.attachments).",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        **errors(404),
    },
)
async def get_attachment(request: Request, attachment_id: str) -> Response:
    """An image or file of a message, for the user whose thread it is in (anyone else: 404)."""
    found = await engine(request).attachment(attachment_id, caller(request))
    return Response(found.data, media_type=found.media_type, headers=attachments.served_headers(found))


@router.get("/runs/{run_id}", response_model=RunOut, tags=["runs"], responses=errors(404))
async def get_run(request: Request, run_id: str) -> RunOut:
    return RunOut.of(await engine(request).get_run(run_id, caller(request)))


@router.post(
    "/runs/{run_id}/cancel", status_code=202, response_model=RunOut, tags=["runs"], responses=errors(403, 404, 409)
)
async def cancel_run(request: Request, run_id: str) -> RunOut:
    return RunOut.of(await engine(request).cancel_run(run_id, caller(request)))


@router.post(
    "/runs/{run_id}/approvals",
    status_code=202,
    response_model=RunOut,
    tags=["runs"],
    responses=errors(400, 403, 404, 409),
)
async def decide(request: Request, run_id: str, body: ApprovalsRequest) -> RunOut:
    """Approve or deny pending tool calls; when all are decided, the run resumes in the background."""
    decisions = {call_id: Decision(**d.model_dump()) for call_id, d in body.decisions.items()}
    return RunOut.of(await engine(request).decide(run_id, caller(request), decisions))


@router.get(
    "/runs/{run_id}/stream",
    status_code=200,
    response_class=EventStreamResponse,
    responses={**SSE, **errors(400, 404, 409, 429)},
    tags=["streams"],
)
async def stream_run(
    request: Request,
    run_id: str,
    last_event_id: str | None = Header(None, json_schema_extra=resume_schema),
    after: str | None = Query(None, json_schema_extra=resume_schema),
) -> EventStreamResponse:
    follower = await engine(request).follow_run(run_id, caller(request), resume_point(last_event_id, after))
    return EventStreamResponse(follower, f"run {run_id} stream")


@router.get(
    "/events",
    status_code=200,
    response_class=EventStreamResponse,
    responses={**SSE, **errors(400, 409, 410, 429)},
    tags=["streams"],
)
async def stream_feed(
    request: Request,
    last_event_id: str | None = Header(None, json_schema_extra=resume_schema),
    after: str | None = Query(None, json_schema_extra=resume_schema),
) -> EventStreamResponse:
    """The run activity of every thread of the caller's. A fresh connection first gets a snapshot of
    their active runs."""
    eng, user = engine(request), caller(request)
    resuming = last_event_id is not None or after is not None
    if resuming:
        return EventStreamResponse(await eng.follow_feed(user, resume_point(last_event_id, after)), "feed")
    seq = await eng.last_feed_seq()
    runs = await eng.active_runs_of(user)
    snapshot = {
        "type": "snapshot",
        "activeRuns": [
            {
                "runId": r.id,
                "threadId": r.thread_id,
                "status": r.status,
                "pendingApprovals": [
                    {"toolCallId": c.tool_call_id, "toolName": c.tool_name, "args": c.args}
                    for c in r.pending_approvals or []
                ],
            }
            for r in runs
        ],
        "timestamp": int(time.time() * 1000),
    }
    preamble = f"id: {seq}\ndata: {json.dumps(snapshot, separators=(',', ':'))}\n\n".encode()
    return EventStreamResponse(await eng.follow_feed(user, seq), "feed", preamble=preamble)
