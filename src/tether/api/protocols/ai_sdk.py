"""The Vercel AI SDK's UI message stream (v1), as `useChat` and its `DefaultChatTransport` speak it.

- `POST /v1/ai-sdk/chat` `{id, messages, trigger, messageId?}`: `id` is the Tether thread's id (created
  on first use; another user's is 404). The new input is the user messages Tether has not stored
  (`history`); an assistant message whose tool parts answer approvals (`approval-responded`) decides
  the run's pending calls, which then resumes; `trigger: "regenerate-message"` retries the latest answer.
- The answer is 200 `text/event-stream` with `x-vercel-ai-ui-message-stream: v1`, `data: {chunk}` frames
  mapped from the durable events, and `data: [DONE]`. An assistant message is one Tether run, and its
  `messageId` is the run's id, so the ids a client sends back are the ones Tether knows.
- `GET /v1/ai-sdk/chat/{id}/stream`: 204 when the thread has no active run, else 200 with the active
  run's whole stream from its `start` chunk, then live (what `resume: true` asks for on mount).
- `GET /v1/ai-sdk/chat/{id}`: the thread's conversation as UIMessages, by the same ids (for a page
  that loads a chat).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tether.api.auth import caller
from tether.api.protocols.history import CLIENT_ID_PATTERN, Incoming, check_client_id, joined, new_input
from tether.api.protocols.streaming import Frame, ProtocolStreamResponse, TranslatedStream
from tether.api.routes import ERRORS, JSON_EVENT, engine, errors, event_stream
from tether.api.sse import EventStreamResponse
from tether.engine import Engine
from tether.engine.agui import RUN_CANCELLED, TOOL_FAILED
from tether.engine.runner import DENIED
from tether.errors import BadRequest, Conflict
from tether.events import RUN_ERROR, RUN_FINISHED, Event
from tether.store import ClientMessage, Decision, Run, Thread
from tether.transcript import ClientIds

router = APIRouter(prefix="/v1/ai-sdk", tags=["ai-sdk"], responses=ERRORS)

HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
DONE = Frame("[DONE]")
STREAM = event_stream(
    "The UI message stream: each `data:` a chunk as JSON, the last `[DONE]`.",
    {"anyOf": [JSON_EVENT, {"type": "string", "const": "[DONE]"}]},
)


class UIMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]] = []


class ChatRequest(BaseModel):
    """What `DefaultChatTransport` posts; other fields (the app's own `body`) are allowed and ignored."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str = Field(json_schema_extra={"pattern": CLIENT_ID_PATTERN}, description="The thread's id.")
    messages: list[UIMessageIn]
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    message_id: str | None = Field(None, alias="messageId")


class Chat(BaseModel):
    id: str
    messages: list[dict[str, Any]]


@router.post(
    "/chat",
    status_code=200,
    response_class=EventStreamResponse,
    responses={**STREAM, **errors(400, 403, 404, 409, 429)},
)
async def chat(request: Request, body: ChatRequest) -> ProtocolStreamResponse:
    """Answer the chat's new user message, resume its run with the approvals it answers, or regenerate
    its latest answer. The run is durable: it goes on if the client leaves (resume with GET …/stream)."""
    eng, user = engine(request), caller(request)
    thread = await eng.open_thread(check_client_id(body.id, "id"), user)
    last = await eng.last_seq(thread)
    conversation = await _conversation(eng, thread, last)
    incoming = [_incoming(m) for m in body.messages]
    new = new_input(incoming, conversation.known)
    if body.trigger == "regenerate-message":
        run = await _regenerate(eng, thread, user, conversation, incoming, new, body.message_id)
    elif body.message_id in conversation.user_ids:
        raise Conflict(
            f"message {body.message_id!r} is stored: Tether cannot edit it; send a new message", code="history_conflict"
        )
    elif responses := _approval_responses(body.messages):
        run = await _decide(eng, thread, user, body.messages[-1].id, responses)
    elif new:
        conversation.check_holds_latest({m.id for m in incoming})
        run = await eng.start_run(thread.id, user, joined(new))
        await eng.add_client_messages(thread, run, [m.id for m in new])
    else:
        raise BadRequest(
            "the messages hold nothing Tether has not stored: send a new user message, or answer the approvals",
            code="no_new_input",
        )
    follower = await eng.follow_run(run.id, user, last)
    return _response(TranslatedStream(follower, UIMessageStream(run.id)), thread)


@router.get(
    "/chat/{chat_id}/stream",
    status_code=200,
    response_class=EventStreamResponse,
    responses={**STREAM, 204: {"description": "No active run to resume."}, **errors(404, 429)},
)
async def resume_stream(request: Request, chat_id: str) -> Response:
    """The active run's whole stream, from its `start` chunk, then live; 204 when nothing is running.
    A run waiting for approval streams up to its approval requests and ends there."""
    eng, user = engine(request), caller(request)
    thread = await eng.get_thread(chat_id, user)
    active = await eng.active_runs(thread.id)
    run = next((r for r in active if r.status != "queued"), active[0] if active else None)
    if run is None:
        return Response(status_code=204)
    last = await eng.last_seq(thread)
    translator = UIMessageStream(run.id, pause_ends_from=last if run.status == "awaiting_approval" else last + 1)
    follower = await eng.follow_run(run.id, user, 0)
    return _response(TranslatedStream(follower, translator), thread)


@router.get("/chat/{chat_id}", response_model=Chat, responses=errors(404))
async def chat_messages(request: Request, chat_id: str) -> Chat:
    """The chat as UIMessages: each run is its user message and its answer (id: the run's id)."""
    eng = engine(request)
    thread = await eng.get_thread(chat_id, caller(request))
    conversation = await _conversation(eng, thread, await eng.last_seq(thread))
    return Chat(id=thread.id, messages=conversation.ui_messages())


async def _conversation(eng: Engine, thread: Thread, upto: int) -> Conversation:
    log = await eng.thread_log(thread, upto)
    return Conversation(log, await eng.client_messages(thread), await eng.list_runs(thread.id, thread.user_id))


def _response(stream: TranslatedStream, thread: Thread) -> ProtocolStreamResponse:
    return ProtocolStreamResponse(stream, f"ai-sdk chat {thread.id}", HEADERS)


class UIMessageStream:
    """A run's AG-UI events as the UI message stream of one assistant message, whose id is the run's.

    A step is one model response and the tool results that answer it. A pause for approval sends
    `tool-approval-request`s; it ends the stream if its seq is at least `pause_ends_from` (a POST's
    stream ends at any pause; a resumed one only at a pause still to come, or the current one).
    """

    def __init__(self, message_id: str, pause_ends_from: int = 0) -> None:
        self._message_id = message_id
        self._pause_ends_from = pause_ends_from
        self._started = False
        self._step = False
        self._step_has_results = False
        self._texts: set[str] = set()
        self._user_texts: set[str] = set()
        self._tools: dict[str, tuple[str, str]] = {}
        self._failed: set[str] = set()
        self.done = False

    def feed(self, event: Event) -> list[Frame]:
        return [Frame.of(chunk) for chunk in self.chunks(event)]

    def close(self) -> list[Frame]:
        return [DONE]

    def chunks(self, event: Event) -> list[dict[str, Any]]:
        data = json.loads(event.data)
        kind = data["type"]
        if kind == "RUN_STARTED":
            if self._started:
                return []  # resumed after approval, a crash or a handover: still the same message
            self._started = True
            return [{"type": "start", "messageId": self._message_id}]
        if kind.startswith("TEXT_MESSAGE_"):
            return self._text(kind, data)
        if kind.startswith("REASONING_MESSAGE_"):
            part = kind.removeprefix("REASONING_MESSAGE_").lower()
            chunk = {"type": f"reasoning-{'delta' if part == 'content' else part}", "id": data["messageId"]}
            if part == "content":
                chunk["delta"] = data["delta"]
            return [*self._model_output(), chunk] if part == "start" else [chunk]
        if kind == "TOOL_CALL_START":
            self._tools[data["toolCallId"]] = (data["toolCallName"], "")
            start = {"type": "tool-input-start", "toolCallId": data["toolCallId"], "toolName": data["toolCallName"]}
            return [*self._model_output(), start]
        if kind == "TOOL_CALL_ARGS":
            name, args = self._tools[data["toolCallId"]]
            self._tools[data["toolCallId"]] = (name, args + data["delta"])
            return [{"type": "tool-input-delta", "toolCallId": data["toolCallId"], "inputTextDelta": data["delta"]}]
        if kind == "TOOL_CALL_END":
            name, args = self._tools[data["toolCallId"]]
            call = data["toolCallId"]
            return [{"type": "tool-input-available", "toolCallId": call, "toolName": name, "input": _json(args)}]
        if kind == "TOOL_CALL_RESULT":
            # In the step of its call; after a pause that step is the previous stream's, so none is opened.
            self._step_has_results = True
            call, content = data["toolCallId"], data["content"]
            if isinstance(content, str) and content.startswith(DENIED):
                return [{"type": "tool-output-denied", "toolCallId": call}]
            if call in self._failed:
                self._failed.discard(call)
                return [{"type": "tool-output-error", "toolCallId": call, "errorText": _text_of(content)}]
            return [{"type": "tool-output-available", "toolCallId": call, "output": content}]
        if kind == "CUSTOM" and data.get("name") == RUN_CANCELLED:
            return [{"type": "abort", "reason": data["value"]["reason"]}]
        if kind == "CUSTOM" and data.get("name") == TOOL_FAILED:
            self._failed.add(data["value"]["toolCallId"])  # the TOOL_CALL_RESULT that follows is an error
            return []
        if kind == RUN_FINISHED:
            return self._finished(event.seq, data.get("outcome") or {})
        if kind == RUN_ERROR:
            self.done = True
            return [*self._end_step(), {"type": "error", "errorText": data.get("message") or "the run failed"}]
        return []  # MESSAGES_SNAPSHOT, steering notices, activity: nothing the UI message stream has

    def _text(self, kind: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        message_id = data["messageId"]
        if kind == "TEXT_MESSAGE_START":
            if data.get("role") == "user":
                self._user_texts.add(message_id)  # the input or a steering message: not the assistant's
            return []
        if message_id in self._user_texts:
            return []
        if kind == "TEXT_MESSAGE_CONTENT":
            if not data["delta"]:
                return []
            opened: list[dict[str, Any]] = []
            if message_id not in self._texts:  # begun at the first text: an empty message is no part
                opened = [*self._model_output(), {"type": "text-start", "id": message_id}]
                self._texts.add(message_id)
            return [*opened, {"type": "text-delta", "id": message_id, "delta": data["delta"]}]
        if kind == "TEXT_MESSAGE_END" and message_id in self._texts:
            self._texts.discard(message_id)
            return [{"type": "text-end", "id": message_id}]
        return []

    def _finished(self, seq: int, outcome: dict[str, Any]) -> list[dict[str, Any]]:
        if outcome.get("type") != "interrupt":
            self.done = True
            return [*self._end_step(), {"type": "finish", "finishReason": "stop"}]
        requests = [
            {"type": "tool-approval-request", "approvalId": i["id"], "toolCallId": i["toolCallId"]}
            for i in outcome.get("interrupts", [])
        ]
        if seq < self._pause_ends_from:
            return [*requests, *self._end_step()]  # a pause that was decided long ago: the run went on
        self.done = True
        return [*requests, *self._end_step(), {"type": "finish", "finishReason": "tool-calls"}]

    def _model_output(self) -> list[dict[str, Any]]:
        """A model response begins: in the open step, unless tool results answered that one."""
        if self._step and not self._step_has_results:
            return []
        return [*self._end_step(), *self._start_step()]

    def _start_step(self) -> list[dict[str, Any]]:
        self._step, self._step_has_results = True, False
        return [{"type": "start-step"}]

    def _end_step(self) -> list[dict[str, Any]]:
        closing = [{"type": "text-end", "id": t} for t in sorted(self._texts)]
        self._texts.clear()
        if not self._step:
            return closing
        self._step = False
        return [*closing, {"type": "finish-step"}]


class Conversation:
    """A thread as AI SDK clients know it: each run is a user message and an assistant message.

    The user message has the id its client gave it, or else the log's; the assistant's is the run's id.
    Runs a retry replaced are not part of it. Steering messages (REST) are not shown.
    """

    def __init__(self, log: list[Event], recorded: list[ClientMessage], runs: list[Run]) -> None:
        ids = ClientIds(recorded)
        self._inputs: dict[str, list[str]] = {}  # run id → [user message id, its text]
        self._events: dict[str, list[Event]] = {}
        for event in log:
            data = ids.rename(event.run_id, json.loads(event.data))
            self._events.setdefault(event.run_id, []).append(event)
            first = self._inputs.get(event.run_id)
            if first is None and data["type"] == "TEXT_MESSAGE_START" and data.get("role") == "user":
                self._inputs[event.run_id] = [data["messageId"], ""]
            elif first is not None and data["type"] == "TEXT_MESSAGE_CONTENT" and data["messageId"] == first[0]:
                first[1] += data["delta"]
        replaced = {r.retry_of for r in runs if r.retry_of}
        self._runs = [r for r in self._inputs if r not in replaced]
        self.user_ids = {message_id for message_id, _ in self._inputs.values()}
        self.known = ids.known | set(self._inputs)

    @property
    def latest(self) -> str | None:
        """The run whose answer is the conversation's last."""
        return self._runs[-1] if self._runs else None

    def input_of(self, run_id: str) -> str:
        return self._inputs[run_id][0]

    def check_holds_latest(self, held: set[str]) -> None:
        if self.latest is not None and self.latest not in held:
            raise Conflict(
                f"this chat lacks the thread's latest answer ({self.latest!r}): load the chat "
                "(GET /v1/ai-sdk/chat/{id}) and send again",
                code="history_conflict",
            )

    def ui_messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        for run_id in self._runs:
            message_id, text = self._inputs[run_id]
            stream = UIMessageStream(run_id, pause_ends_from=1 << 62)
            chunks = [chunk for event in self._events[run_id] for chunk in stream.chunks(event)]
            messages += [
                {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]},
                {"id": run_id, "role": "assistant", "parts": parts_of(chunks)},
            ]
        return messages


def parts_of(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parts a UI message stream builds (what the AI SDK's client makes of it), finished."""
    parts: list[dict[str, Any]] = []
    open_parts: dict[str, dict[str, Any]] = {}
    for chunk in chunks:
        kind = chunk["type"]
        if kind == "start-step":
            parts.append({"type": "step-start"})
        elif kind in ("text-start", "reasoning-start"):
            part = {"type": kind.removesuffix("-start"), "text": "", "state": "done"}
            open_parts[chunk["id"]] = part
            parts.append(part)
        elif kind in ("text-delta", "reasoning-delta"):
            open_parts[chunk["id"]]["text"] += chunk["delta"]
        elif kind == "tool-input-start":
            part = {"type": f"tool-{chunk['toolName']}", "toolCallId": chunk["toolCallId"], "state": "input-streaming"}
            open_parts[chunk["toolCallId"]] = part
            parts.append(part)
        elif kind == "tool-input-available":
            open_parts[chunk["toolCallId"]].update(state="input-available", input=chunk["input"])
        elif kind == "tool-approval-request":
            open_parts[chunk["toolCallId"]].update(state="approval-requested", approval={"id": chunk["approvalId"]})
        elif kind == "tool-output-available":
            part = open_parts[chunk["toolCallId"]]
            part.update(state="output-available", output=chunk["output"])
            if "approval" in part:
                part["approval"]["approved"] = True
        elif kind == "tool-output-error":
            open_parts[chunk["toolCallId"]].update(state="output-error", errorText=chunk["errorText"])
        elif kind == "tool-output-denied":
            part = open_parts[chunk["toolCallId"]]
            part.update(state="output-denied")
            part.setdefault("approval", {"id": chunk["toolCallId"]})["approved"] = False
    return parts


def _incoming(message: UIMessageIn) -> Incoming:
    texts = [p.get("text") for p in message.parts if p.get("type") == "text"]
    whole = len(texts) == len(message.parts) and all(isinstance(t, str) for t in texts)
    return Incoming(message.id, message.role, "\n".join(texts) if whole else None)  # type: ignore[arg-type]


def _approval_responses(messages: list[UIMessageIn]) -> dict[str, Decision]:
    """The approvals the chat's last message answers (its tool parts in state `approval-responded`)."""
    if not messages or messages[-1].role != "assistant":
        return {}
    decisions = {}
    for part in messages[-1].parts:
        if part.get("state") != "approval-responded":
            continue
        approval = part.get("approval") or {}
        reason = approval.get("reason")
        if not isinstance(part.get("toolCallId"), str) or not isinstance(approval.get("approved"), bool):
            raise BadRequest(
                "an approval-responded tool part needs a toolCallId and approval.approved (a boolean)",
                code="invalid_approval",
            )
        if not isinstance(reason, str | None) or (reason is not None and len(reason) > 2000):
            raise BadRequest("approval.reason must be a string of at most 2000 characters", code="invalid_approval")
        approved = approval["approved"]
        decisions[part["toolCallId"]] = Decision(approved=approved, reason=None if approved else reason)
    return decisions


async def _decide(eng: Engine, thread: Thread, user: str, message_id: str, decisions: dict[str, Decision]) -> Run:
    """The approvals of the assistant message `message_id` (a run), as decisions; the run then resumes."""
    run = next((r for r in await eng.active_runs(thread.id) if r.id == message_id), None)
    if run is None or run.status != "awaiting_approval":
        raise Conflict(f"message {message_id!r} is not a run waiting for approval", code="not_awaiting_approval")
    pending = {c.tool_call_id for c in run.pending_approvals or []} - set(run.decisions or {})
    unanswered = sorted(pending - set(decisions))
    if unanswered:
        raise BadRequest(f"the approvals of {', '.join(unanswered)} are not answered", code="unanswered_approvals")
    await eng.decide(run.id, user, decisions)
    return run


async def _regenerate(
    eng: Engine,
    thread: Thread,
    user: str,
    conversation: Conversation,
    incoming: list[Incoming],
    new: list[Incoming],
    message_id: str | None,
) -> Run:
    """Re-answer the latest user message (a retry): the only answer Tether can regenerate."""
    latest = conversation.latest
    if latest is None or new or (message_id is not None and message_id != latest):
        raise Conflict(
            f"Tether regenerates only the chat's latest answer ({latest!r}), from the messages before it",
            code="history_conflict",
        )
    if not incoming or incoming[-1].id != conversation.input_of(latest):
        raise Conflict(
            "to regenerate, the messages must end with the latest answer's user message", code="history_conflict"
        )
    run = await eng.retry(thread.id, user)
    await eng.add_client_messages(thread, run, [incoming[-1].id])
    return run


def _text_of(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content)


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return text
