"""AG-UI: `POST /v1/ag-ui` takes a `RunAgentInput` as `@ag-ui/client`'s HttpAgent sends it and answers
with the run's AG-UI events as SSE; `GET /v1/ag-ui/{threadId}` gives a reloaded page the thread's
messages by the ids its stream used.

- `threadId` is the Tether thread's id (created on first use; another user's is 404).
- The new input is the messages Tether has not stored (`history`); the history must hold every stored
  message, or 409 `history_conflict`.
- A client `runId` names one stretch of a Tether run: from its RUN_STARTED to its next terminal event
  (a pause for approval ends a stretch; the `resume` that decides it starts the next one, under that
  request's runId). The stretch's RUN_STARTED and RUN_FINISHED carry the client's threadId and runId.
- Re-POSTing a runId re-attaches: RUN_STARTED, a MESSAGES_SNAPSHOT of the thread as it was before the
  stretch, then the stretch's events from the log, then live, to its end. The log does not change, so
  the same runId always gives the same stream, whether the stretch is still running or long finished.
"""

from __future__ import annotations

import json
from typing import Any

from ag_ui.core import Message, ResumeEntry, RunAgentInput
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from tether.api.auth import caller
from tether.api.protocols.history import Incoming, check_client_id, joined, new_input
from tether.api.protocols.streaming import Frame, ProtocolStreamResponse, TranslatedStream
from tether.api.routes import ERRORS, SSE, engine, errors
from tether.api.sse import EventStreamResponse
from tether.engine import Engine
from tether.engine.agui import now_ms
from tether.errors import BadRequest, Conflict
from tether.events import RUN_ERROR, RUN_FINISHED, Event
from tether.store import Decision, Run, Thread
from tether.transcript import ClientIds, transcript

router = APIRouter(prefix="/v1", tags=["ag-ui"], responses=ERRORS)


class AGUIThread(BaseModel):
    thread_id: str = Field(serialization_alias="threadId")
    run_id: str | None = Field(
        serialization_alias="runId",
        description="The client runId of the active run's latest stretch: POST it again to re-attach.",
    )
    messages: list[dict[str, Any]]


@router.post(
    "/ag-ui", status_code=200, response_class=EventStreamResponse, responses={**SSE, **errors(400, 403, 404, 409, 429)}
)
async def run_agent(request: Request, body: RunAgentInput) -> ProtocolStreamResponse:
    """Run the agent on the thread's new messages, or decide its pending approvals (`resume`), or
    re-attach to the stretch a known runId names. The run is durable: it goes on if the client leaves."""
    eng, user = engine(request), caller(request)
    thread = await eng.open_thread(check_client_id(body.thread_id, "threadId"), user)
    client_run_id = check_client_id(body.run_id, "runId")
    last = await eng.last_seq(thread)
    log = await eng.thread_log(thread, last)
    recorded = await eng.client_messages(thread)
    ids = ClientIds(recorded)
    stored = transcript(log, ids)
    incoming = [_incoming(m) for m in body.messages]
    new = new_input(incoming, ids.known)
    stretch = next((r for r in await eng.client_runs(thread) if r.client_run_id == client_run_id), None)
    if stretch is not None:
        if new:
            raise Conflict(
                f"runId {client_run_id!r} already names a run of this thread; send a new message with a new runId",
                code="run_id_reused",
            )
        replay_ids = ClientIds(recorded)
        before = transcript([e for e in log if e.seq <= stretch.after_seq], replay_ids)
        translator = AGUIRun(thread.id, client_run_id, replay_ids, snapshot=before)
        follower = await eng.follow_run(stretch.run_id, user, stretch.after_seq)
        return ProtocolStreamResponse(TranslatedStream(follower, translator), f"ag-ui run {client_run_id}")
    held = {m.id for m in incoming}
    missing = [m["id"] for m in stored if m["id"] not in held]
    if missing:
        raise Conflict(
            f"the thread has {len(missing)} message(s) this history lacks (e.g. {missing[-1]!r}): load them "
            f"(GET /v1/ag-ui/{thread.id}) and send again",
            code="history_conflict",
        )
    if body.resume:
        if new:
            raise BadRequest("send resume entries without new messages", code="resume_with_input")
        run = await _decide(eng, thread, user, log, body.resume)
    elif new:
        run = await eng.start_run(thread.id, user, joined(new))
        await eng.add_client_messages(thread, run, [m.id for m in new])
        ids.expect(run.id, new[-1].id)
    else:
        raise BadRequest(
            "the messages hold nothing Tether has not stored: send a new user message, or resume entries",
            code="no_new_input",
        )
    await eng.add_client_run(thread, client_run_id, run, last)
    translator = AGUIRun(thread.id, client_run_id, ids, sent_input=new[-1].id if new else None)
    follower = await eng.follow_run(run.id, user, last)
    return ProtocolStreamResponse(TranslatedStream(follower, translator), f"ag-ui run {client_run_id}")


@router.get("/ag-ui/{thread_id}", response_model=AGUIThread, response_model_by_alias=True, responses=errors(404))
async def thread_messages(request: Request, thread_id: str) -> AGUIThread:
    """The thread's messages with the ids its AG-UI streams carried (for `agent.setMessages` after a
    reload), and the runId to re-attach to while a run is active."""
    eng = engine(request)
    thread = await eng.get_thread(thread_id, caller(request))
    log = await eng.thread_log(thread, await eng.last_seq(thread))
    messages = transcript(log, ClientIds(await eng.client_messages(thread)))
    active = {r.id for r in await eng.active_runs(thread.id)}
    stretches = [r for r in await eng.client_runs(thread) if r.run_id in active]
    latest = max(stretches, key=lambda r: r.after_seq, default=None)
    return AGUIThread(thread_id=thread.id, run_id=latest.client_run_id if latest else None, messages=messages)


class AGUIRun:
    """One stretch of a Tether run as its client's AG-UI run: RUN_STARTED … terminal, under the client's ids.

    `snapshot`: the history before the stretch, sent right after RUN_STARTED (a re-attach: whatever the
    client holds, it then holds exactly the log's view). `sent_input`: the client's own input message,
    which it holds already, so its events are not sent back (they would repeat its text).
    """

    def __init__(
        self,
        thread_id: str,
        client_run_id: str,
        ids: ClientIds,
        *,
        snapshot: list[dict[str, Any]] | None = None,
        sent_input: str | None = None,
    ) -> None:
        self._thread_id = thread_id
        self._client_run_id = client_run_id
        self._ids = ids
        self._snapshot = snapshot
        self._sent_input = sent_input
        self._started = False
        self.done = False

    def feed(self, event: Event) -> list[Frame]:
        parsed = json.loads(event.data)
        data = self._ids.rename(event.run_id, parsed)
        kind = data["type"]
        if kind == "RUN_STARTED":
            if self._started:
                return []  # the run resumed after a crash or a handover: still the same client run
            self._started = True
            frames = [Frame.of(self._own(data), event.seq)]
            if self._snapshot is not None:
                snapshot = {"type": "MESSAGES_SNAPSHOT", "timestamp": now_ms(), "messages": self._snapshot}
                frames.append(Frame.of(snapshot))
            return frames
        if kind.startswith("TEXT_MESSAGE_") and self._sent_input is not None and data["messageId"] == self._sent_input:
            return []
        if kind in (RUN_FINISHED, RUN_ERROR):
            self.done = True
            if kind == RUN_FINISHED:
                return [Frame.of(self._own(data), event.seq)]
        return [Frame(event.data, event.seq) if data is parsed else Frame.of(data, event.seq)]

    def close(self) -> list[Frame]:
        return []

    def _own(self, event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "threadId": self._thread_id, "runId": self._client_run_id}


def _incoming(message: Message) -> Incoming:
    content = getattr(message, "content", None)
    if isinstance(content, list):  # a user message's parts: text is taken, anything else is not
        texts = [part.text for part in content if getattr(part, "type", None) == "text"]
        text = "\n".join(texts) if len(texts) == len(content) else None
    else:
        text = content if isinstance(content, str) else None
    return Incoming(message.id, message.role, text)


async def _decide(eng: Engine, thread: Thread, user: str, log: list[Event], resume: list[ResumeEntry]) -> Run:
    """Resume entries as the decisions on the thread's paused run, which then resumes."""
    paused = next((r for r in await eng.active_runs(thread.id) if r.status == "awaiting_approval"), None)
    if paused is None:
        raise Conflict(f"thread {thread.id!r} has no run waiting for approval", code="not_awaiting_approval")
    interrupts = _interrupts(log, paused.id)
    decisions: dict[str, Decision] = {}
    for entry in resume:
        if entry.interrupt_id not in interrupts:
            raise BadRequest(
                f"interrupt {entry.interrupt_id!r} is not pending on this thread (pending: "
                f"{', '.join(interrupts) or 'none'})",
                code="unknown_interrupt",
            )
        decisions[interrupts[entry.interrupt_id]] = _decision(entry)
    unanswered = [i for i, call in interrupts.items() if call not in decisions]
    if unanswered:
        raise BadRequest(f"resume does not answer interrupt(s) {', '.join(unanswered)}", code="unanswered_interrupts")
    await eng.decide(paused.id, user, decisions)
    return paused


def _interrupts(log: list[Event], run_id: str) -> dict[str, str]:
    """The interrupts the run's latest pause sent (interrupt id → tool call id), as its client saw them."""
    for event in reversed(log):
        if event.run_id == run_id and event.type == RUN_FINISHED:
            outcome = json.loads(event.data).get("outcome") or {}
            return {i["id"]: i["toolCallId"] for i in outcome.get("interrupts", [])}
    return {}


def _decision(entry: ResumeEntry) -> Decision:
    """`cancelled` denies; `resolved` approves, or decides as its payload says (the interrupt's
    `responseSchema`: `{approved, editedArgs?, reason?}`)."""
    if entry.status == "cancelled":
        return Decision(approved=False)
    payload = entry.payload
    if payload is None:
        return Decision(approved=True)
    edited = payload.get("editedArgs") if isinstance(payload, dict) else None
    reason = payload.get("reason") if isinstance(payload, dict) else None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("approved"), bool)
        or not isinstance(edited, dict | None)
        or not isinstance(reason, str | None)
        or (reason is not None and len(reason) > 2000)
    ):
        raise BadRequest(
            f"the payload for interrupt {entry.interrupt_id!r} must be {{approved: boolean, editedArgs?: object, "
            "reason?: string (at most 2000 characters)}, as its responseSchema says",
            code="invalid_resume",
        )
    if payload["approved"]:
        return Decision(approved=True, args=edited)
    return Decision(approved=False, reason=reason)
