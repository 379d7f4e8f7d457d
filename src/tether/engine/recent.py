"""The last events this worker committed of each thread it writes: a reconnect reads nothing.

A client whose connection dropped resumes a few events behind the live tail. On a quiet server the
store answers that at once; beside a run streaming at full speed it does not: every read is done on
the store's thread, which must win the GIL back from the busy event loop at each step, and a
reconnect waited 50-190 ms for ten events (bench/RESULTS.md). But the journal has just committed
those very events. So it keeps the last TAIL of each thread whose run this worker holds, and a read
that the tail can answer is answered from memory.

The tail is only ever a prefix of the log (events never change once committed), so it answers only
what it holds: the events after a seq whose next one it has. Anything later, even something
committed by another worker that took the thread over, reaches the follower as it always does: on
the bus, or from the log when the bus is quiet or skips a number. A tail begins when the worker
holding a run opens its thread (from the last seq in the store), follows every commit of the thread
here, and is dropped when the run's lease ends, is lost, or a write of the thread fails: whoever
writes the thread next may be another worker.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

from tether.events import Event

TAIL = 128
"""Events kept per thread: a moment's drop at full speed, several seconds at a model's pace."""


class Tail:
    """What this worker knows for sure of a thread it writes."""

    __slots__ = ("events", "last", "owner")

    def __init__(self, last: int) -> None:
        self.events: deque[Event] = deque(maxlen=TAIL)
        self.last = last
        """The thread's last committed seq, as of this worker's last commit of it."""
        self.owner: str | None = None
        """The user whose thread it is, once a request has looked it up (it never changes)."""

    def holds_after(self, seq: int) -> bool:
        """Whether the event after `seq` is here (so every committed one after it, up to `last`, is too)."""
        return bool(self.events) and self.events[0].seq <= seq + 1 <= self.last


class RecentEvents:
    def __init__(self) -> None:
        self._tails: dict[str, Tail] = {}
        self._held: dict[str, str] = {}
        """Run id → thread id, for the runs whose lease this worker holds."""

    def hold(self, run_id: str, thread_id: str) -> None:
        self._held[run_id] = thread_id

    def start(self, thread_id: str, last: int) -> None:
        """The thread's counter was loaded from the store: its tail begins here, if this worker writes it."""
        if thread_id in self._held.values() and thread_id not in self._tails:
            self._tails[thread_id] = Tail(last)

    def committed(self, thread_id: str, events: list[Event]) -> None:
        """These events of the thread were just committed, in order."""
        tail = self._tails.get(thread_id)
        if tail is None:
            return
        if events[0].seq != tail.last + 1:
            del self._tails[thread_id]  # a break (something of it was dropped): the log knows better
            return
        tail.events.extend(events)
        tail.last = events[-1].seq

    def release(self, run_id: str) -> None:
        """The run's lease ended (or was lost): its thread's tail goes, unless another held run writes it."""
        thread_id = self._held.pop(run_id, None)
        if thread_id is not None and thread_id not in self._held.values():
            self._tails.pop(thread_id, None)

    def forget(self, thread_id: str) -> None:
        self._tails.pop(thread_id, None)

    def tail(self, thread_id: str) -> Tail | None:
        return self._tails.get(thread_id)

    def thread_of(self, run_id: str) -> str | None:
        """The thread of a run whose lease this worker holds (None for any other run)."""
        return self._held.get(run_id)

    def read(self, thread_id: str, after: int, limit: int, run_id: str | None = None) -> list[Event] | None:
        """The committed events after `after` (of one run, with `run_id`), up to `limit`, if the tail
        has them; None if only the store can tell."""
        tail = self._tails.get(thread_id)
        if tail is None or not tail.holds_after(after):
            return None
        events = islice(tail.events, after + 1 - tail.events[0].seq, None)
        if run_id is not None:
            events = (event for event in events if event.run_id == run_id)
        return list(islice(events, limit))
