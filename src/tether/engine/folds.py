"""The folds of recently read threads' logs, kept so that reading a thread again folds only what its
log gained since: the messages of `GET /v1/threads/{tid}` take their ids from the log's fold, and a
long thread's log is long (a 100,000-word answer is 100,000 events, half a second to fold)."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tether.events import Event
from tether.store import Thread
from tether.transcript import Transcript

ReadLog = Callable[[str, int, int], Awaitable[list[Event]]]
"""(thread_id, after, upto) → the thread's events after seq `after` up to seq `upto`, in order."""


@dataclass
class _Fold:
    seq: int = 0
    transcript: Transcript = field(default_factory=Transcript)


class LogFolds:
    """The log's fold of up to `capacity` threads, the most recently read kept.

    A thread is known by its id and creation time: a protocol client may make a new thread under the id
    of a deleted one, and this worker may not have seen the delete. The log only grows, so a kept fold
    is brought up to date by the events after it; a read of an instant it has gone past folds afresh.
    """

    def __init__(self, read_log: ReadLog, capacity: int = 32) -> None:
        self._read_log = read_log
        self._capacity = capacity
        self._folds: OrderedDict[tuple[str, float], _Fold] = OrderedDict()

    async def messages(self, thread: Thread, upto: int) -> list[dict[str, Any]]:
        """The thread's messages as its log up to seq `upto` renders them."""
        key = (thread.id, thread.created_at)
        kept = self._folds.get(key)
        fold = kept if kept is not None and kept.seq <= upto else _Fold()
        events = await self._read_log(thread.id, fold.seq, upto)
        for event in events:
            if event.seq > fold.seq:  # another read may have brought it this far meanwhile
                fold.transcript.apply(json.loads(event.data))
                fold.seq = event.seq
        if kept is None or fold is kept:
            self._folds[key] = fold
            self._folds.move_to_end(key)
            while len(self._folds) > self._capacity:
                self._folds.popitem(last=False)
        return fold.transcript.messages()

    def forget(self, thread_id: str) -> None:
        for key in [k for k in self._folds if k[0] == thread_id]:
            del self._folds[key]
