"""Attachments: the images and files a user's message may carry.

A run's `input` is its text, or a list of parts: `{"type": "text", "text"}`, and `{"type": "image" |
"file", "media_type", "data"}` (the bytes in base64, with an optional `name`) or `{"type": "image" |
"file", "media_type", "url"}`. The model gets them as pydantic-ai's `BinaryContent`, `ImageUrl` and
`DocumentUrl`.

The bytes are stored once, in the `attachments` table, in the thread they were sent to; everything
else holds a reference (`ref`): `{type, media_type, name?, size, id, url}`, whose `url`
(`/v1/attachments/{id}`) serves them, or `{type, media_type, url}` for a part sent as a url.
- The event log: the user's message is its text events, then a CUSTOM `tether.attachments`
  `{messageId, attachments}` with the references. A stream replays references, never megabytes.
- The run keeps its message's `parts`: its text and references, in order.
- The checkpoints hold each attachment as a `BinaryContent` with no `data` and the attachment's id as
  its `identifier` (`stored`). A run fills the bytes in from the table before it starts (`hydrate`),
  so the model and the agent's own code see them; the checkpoint before each model request never
  holds them, so a thread's checkpoints grow by a reference per attachment, not by its bytes.
- The transcript (`GET /v1/threads/{tid}`, a MESSAGES_SNAPSHOT): a user message with attachments has
  its text as `content` and the references as `attachments`, as folding the log renders it
  (`dump_messages`); tether.transcript and the UI's fold.js fold the CUSTOM event the same way.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import quote

from ag_ui.core import DataSource, ImagePart, Message, TextPart, UrlSource, UserMessage
from pydantic_ai.messages import (
    BinaryContent,
    DocumentUrl,
    ImageUrl,
    ModelMessage,
    ModelRequest,
    UserContent,
    UserPromptPart,
)
from pydantic_ai.ui.ag_ui import AGUIAdapter

from tether.config import Settings
from tether.errors import TooLarge, Unprocessable, UnsupportedMediaType
from tether.store import Attachment, Store

ATTACHMENTS = "tether.attachments"
"""The CUSTOM event that follows a user's message with attachments: `{messageId, attachments}`."""
PATH = "/v1/attachments/"
"""Where an attachment's bytes are served, by id."""
ID = re.compile(r"att_[0-9a-f]{32}")
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""Served for display (`Content-Disposition: inline`): pictures that cannot hold a script. Any other
type (an SVG, a PDF, HTML sent as text) is served as a download."""
TEXT_JOINER = "\n\n"
"""Between the text parts of one message, in its text (the log's, the transcript's, the search's)."""


def served_headers(attachment: Attachment) -> dict[str, str]:
    """How an attachment is served: a picture inline, anything else as a download, under its name; never
    run as a page (a sandbox that allows nothing), never sniffed, never kept by a cache (a browser's
    cache does not tell one signed-in user from the next)."""
    disposition = "inline" if attachment.media_type in INLINE_TYPES else "attachment"
    name = attachment.name or attachment.id
    plain = re.sub(r"[^A-Za-z0-9._ -]", "_", name)
    return {
        "Content-Disposition": f"{disposition}; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
    }


def kind(media_type: str) -> Literal["image", "file"]:
    return "image" if media_type.startswith("image/") else "file"


def ref(attachment: Attachment) -> dict[str, Any]:
    """What the log, the run and the transcript say of an attachment whose bytes are stored."""
    named = {"name": attachment.name} if attachment.name is not None else {}
    return {
        "type": kind(attachment.media_type),
        "media_type": attachment.media_type,
        **named,
        "size": attachment.size,
        "id": attachment.id,
        "url": PATH + attachment.id,
    }


@dataclass
class UserInput:
    """A user's message as a run takes it."""

    text: str
    """Its text parts, joined: what the log's text events carry, and the run's `input`."""
    parts: list[dict[str, Any]] | None = None
    """Its text and the references of its attachments, in order; None when it has no attachments."""
    attachments: list[Attachment] = field(default_factory=list)
    """The attachments to store with its run."""


def user_input(thread_id: str, sent: str | Sequence[Mapping[str, Any]], settings: Settings) -> UserInput:
    """A message as the API took it (its parts checked against their schema: one of `data`, `url`; the
    data base64), checked against the server's limits: 413 for too many attachments or one too large,
    415 for a media type the server does not take, 422 for an image type sent as a file and the other
    way round. A message of text parts only is that text."""
    if isinstance(sent, str):
        return UserInput(sent)
    media = [part for part in sent if part["type"] != "text"]
    if len(media) > settings.max_attachments:
        raise TooLarge(
            f"the message has {len(media)} attachments; at most {settings.max_attachments} are taken "
            "(--max-attachments)",
            code="too_many_attachments",
        )
    parts: list[dict[str, Any]] = []
    new: list[Attachment] = []
    for index, part in enumerate(sent):
        if part["type"] == "text":
            parts.append({"type": "text", "text": part["text"]})
            continue
        where = f"input.parts.{index}"
        media_type = part["media_type"]
        if media_type not in settings.attachment_types:
            raise UnsupportedMediaType(
                f"{where}: media_type {media_type[:100]!r} is not taken here; these are: "
                f"{', '.join(settings.attachment_types)} (--attachment-types)",
                code="unsupported_media_type",
            )
        if kind(media_type) != part["type"]:
            raise Unprocessable(
                f"{where}: {media_type} is {'an image' if kind(media_type) == 'image' else 'not an image'}: "
                f"send it as type {kind(media_type)!r}",
                code="invalid_request",
            )
        if "url" in part:
            parts.append({"type": part["type"], "media_type": media_type, "url": part["url"]})
            continue
        data = base64.b64decode(part["data"])  # checked as base64 by the API's schema
        if len(data) > settings.max_attachment_bytes:
            raise TooLarge(
                f"{where}: the attachment has {len(data)} bytes; at most {settings.max_attachment_bytes} are "
                "taken (--max-attachment-bytes)",
                code="attachment_too_large",
            )
        attachment = Attachment(
            id=f"att_{uuid.uuid4().hex}",
            thread_id=thread_id,
            media_type=media_type,
            name=part.get("name"),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            created_at=time.time(),
            data=data,
        )
        new.append(attachment)
        parts.append(ref(attachment))
    return UserInput(text_of(parts), parts, new) if media else UserInput(text_of(parts))


def text_of(parts: Sequence[Mapping[str, Any]]) -> str:
    """A message's text: its text parts, joined."""
    return TEXT_JOINER.join(part["text"] for part in parts if part["type"] == "text")


def shown(parts: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The references among a message's parts (what its CUSTOM event and `GET /v1/runs/{rid}` show)."""
    return [dict(part) for part in parts or [] if part["type"] != "text"]


def prompt(parts: Sequence[Mapping[str, Any]], data: Mapping[str, bytes]) -> list[UserContent]:
    """A message's parts as the model takes them, with the bytes of its attachments (by id)."""
    content: list[UserContent] = []
    for part in parts:
        if part["type"] == "text":
            content.append(part["text"])
        elif "id" in part:
            media = BinaryContent(data=data[part["id"]], media_type=part["media_type"], identifier=part["id"])
            content.append(BinaryContent.narrow_type(media))
        elif part["type"] == "image":
            content.append(ImageUrl(url=part["url"], media_type=part["media_type"]))
        else:
            content.append(DocumentUrl(url=part["url"], media_type=part["media_type"]))
    return content


def referenced(history: Iterable[ModelMessage]) -> list[BinaryContent]:
    """The attachments that a history's user prompts hold (with or without their bytes)."""
    return [
        item
        for message in history
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, UserPromptPart) and not isinstance(part.content, str)
        for item in part.content
        if _is_attachment(item)
    ]


def hydrate(attachments: Iterable[BinaryContent], data: Mapping[str, bytes]) -> None:
    """Give stored attachments their bytes, in place (the messages stay the objects they were, so the
    journal still knows their stored JSON)."""
    for item in attachments:
        if not item.data:
            item.data = data[item.identifier]


def stored(message: ModelMessage) -> ModelMessage:
    """The message as a checkpoint keeps it: its attachments without their bytes (`hydrate` puts them back)."""
    if not isinstance(message, ModelRequest) or not any(_holds_bytes(part) for part in message.parts):
        return message
    return replace(
        message,
        parts=[
            replace(part, content=[_without_bytes(item) for item in part.content]) if _holds_bytes(part) else part
            for part in message.parts
        ],
    )


async def references(store: Store, thread_id: str, history: Sequence[ModelMessage]) -> dict[str, dict[str, Any]]:
    """What each attachment of the thread is (id → `ref`), if the history holds any: for `dump_messages`."""
    if not referenced(history):
        return {}
    return {a.id: ref(a) for a in await store.attachments(thread_id)}


def dump_messages(history: Sequence[ModelMessage], refs: Mapping[str, Mapping[str, Any]]) -> list[Message]:
    """The history as AG-UI messages (pydantic-ai's rendering), each user message with attachments as
    its text and their references (`refs`: id → `ref`), never their bytes."""
    marked = [_marked(message) for message in history]
    return [_with_references(m, refs) if _has_parts(m) else m for m in AGUIAdapter.dump_messages(marked)]


def _is_attachment(item: Any) -> bool:
    return isinstance(item, BinaryContent) and ID.fullmatch(item.identifier) is not None


def _holds_bytes(part: Any) -> bool:
    return (
        isinstance(part, UserPromptPart)
        and not isinstance(part.content, str)
        and any(_is_attachment(item) and item.data for item in part.content)
    )


def _without_bytes(item: Any) -> Any:
    if not _is_attachment(item):
        return item
    return BinaryContent.narrow_type(BinaryContent(data=b"", media_type=item.media_type, identifier=item.identifier))


def _marked(message: ModelMessage) -> ModelMessage:
    """The message with each attachment as a url of the attachment route, which `dump_messages` renders as
    a url source and `_with_references` knows by its id."""
    if not isinstance(message, ModelRequest) or not referenced([message]):
        return message

    def mark(item: Any) -> Any:
        if not _is_attachment(item):
            return item
        made = ImageUrl if item.is_image else DocumentUrl
        return made(PATH + item.identifier, media_type=item.media_type)

    parts = [
        replace(part, content=[mark(item) for item in part.content])
        if isinstance(part, UserPromptPart) and not isinstance(part.content, str)
        else part
        for part in message.parts
    ]
    return replace(message, parts=parts)


def _has_parts(message: Message) -> bool:
    return isinstance(message, UserMessage) and not isinstance(message.content, str)


def _with_references(message: UserMessage, refs: Mapping[str, Mapping[str, Any]]) -> UserMessage:
    texts, attachments = [], []
    for part in message.content:
        if isinstance(part, TextPart):
            texts.append(part.text)
            continue
        source = getattr(part, "source", None)
        media_type = getattr(source, "mime_type", None)
        media = {"type": "image" if isinstance(part, ImagePart) else "file", "media_type": media_type}
        if isinstance(source, UrlSource):
            stored_id = source.value.removeprefix(PATH)
            known = source.value.startswith(PATH) and stored_id in refs
            attachments.append(dict(refs[stored_id]) if known else {**media, "url": source.value})
        elif isinstance(source, DataSource):
            # Bytes an agent of its own put into a prompt: what they are, not the bytes themselves.
            attachments.append({**media, "size": len(base64.b64decode(source.value))})
    dumped = {**message.model_dump(by_alias=True, exclude_none=True), "content": TEXT_JOINER.join(texts)}
    return UserMessage.model_validate({**dumped, "attachments": attachments} if attachments else dumped)
