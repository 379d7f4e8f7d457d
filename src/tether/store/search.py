"""Full-text search of threads (their titles and their messages' text): what is indexed, and how
a search is asked, the same for SQLite and PostgreSQL.

Text is cut into words here, in Python, and stored as those words joined by spaces, so that
both databases see the same words whatever their own tokenizers would make of URLs, numbers
with dots or accents; each is only asked to match words by their beginnings (SQLite's FTS5,
PostgreSQL's `to_tsvector('simple', …)`). A thread matches a search when its title, or one
message of its history, holds every word of it (each as the start of a word).

The index mirrors each thread's latest checkpoint: a message's rows are keyed by its position
in the history (the title's by `TITLE`), and a new checkpoint replaces the rows of the
positions where it differs from the one before it (see `tether.store.sql`).
"""

from __future__ import annotations

import json
import re
from typing import Any

TITLE = -1
"""The position under which a thread's title is indexed (messages count from 0)."""

MAX_WORDS = 16
"""Words of a search that count; more narrow it no further in practice, and each costs a match."""

CHUNK_WORDS = 2_000
"""Words per index row: a long answer is cut into rows of this many, since PostgreSQL refuses a
tsvector over 1 MB (a 100,000-word answer would fail its run's commit)."""

COLUMNS = ("thread_id", "position", "part", "body")

_WORD = re.compile(r"[^\W_]+")
_SPOKEN = (b'"part_kind":"user-prompt"', b'"part_kind":"text"')


def words(text: str) -> list[str]:
    """The words of a text, lower case: runs of letters and digits."""
    return _WORD.findall(text.lower())


def rows(thread_id: str, position: int, text: str) -> list[tuple[Any, ...]]:
    """The index rows of one text (a title, or a message's words) at its position."""
    found = words(text)
    return [
        (thread_id, position, part, " ".join(found[start : start + CHUNK_WORDS]))
        for part, start in enumerate(range(0, len(found), CHUNK_WORDS))
    ]


def message_text(message: bytes) -> str:
    """What the user or the model said in one stored message (pydantic-ai JSON); "" for the rest.

    Called for every message a checkpoint adds, so tool calls and returns, which say nothing to
    search for, are told apart by a byte search before anything is parsed.
    """
    if not any(marker in message for marker in _SPOKEN):
        return ""
    texts = []
    for part in json.loads(message).get("parts", []):
        kind, content = part.get("part_kind"), part.get("content")
        if kind == "text" and isinstance(content, str):
            texts.append(content)
        elif kind == "user-prompt":
            items = content if isinstance(content, list) else [content]
            texts += [item for item in items if isinstance(item, str)]
    return "\n".join(texts)


def fts5_query(found: list[str]) -> str:
    """An FTS5 MATCH expression: every word, each as a prefix (the words hold no quote)."""
    return " ".join(f'"{word}"*' for word in found[:MAX_WORDS])


def tsquery(found: list[str]) -> str:
    """A `to_tsquery('simple', …)` text: every word, each as a prefix (the words hold no operator)."""
    return " & ".join(f"{word}:*" for word in found[:MAX_WORDS])
