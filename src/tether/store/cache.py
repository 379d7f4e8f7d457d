"""The latest checkpoint of recently used threads, kept in memory by the store.

A run starts by reading its thread's latest checkpoint: for a long thread a
recursive walk over hundreds of delta rows and a megabyte of history, read
on the store's thread while the event loop waits. Usually this worker wrote
that checkpoint itself a moment ago. A checkpoint never changes once stored
(a thread only gets new ones, and loses all of them when it is deleted), so a
copy kept under its id is right for as long as that id is the thread's
latest: the store still asks the database which id that is (one indexed
lookup), and reads the chain only when the answer is not in memory. Every
worker asks for itself, so a checkpoint written by another worker is never
missed.
"""

from __future__ import annotations

from collections import OrderedDict

from tether.store import Checkpoint

CACHE_BYTES = 32 * 2**20
"""What the cached histories may hold in all; the least recently used go first."""


class CheckpointCache:
    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self._limit = limit
        self._size = 0
        self._by_thread: OrderedDict[str, tuple[Checkpoint, int]] = OrderedDict()

    def get(self, thread_id: str, checkpoint_id: int) -> Checkpoint | None:
        """A copy of the thread's checkpoint `checkpoint_id`, if that is the one kept."""
        entry = self._by_thread.get(thread_id)
        if entry is None or entry[0].id != checkpoint_id:
            return None
        self._by_thread.move_to_end(thread_id)
        return _copy(entry[0])

    def put(self, checkpoint: Checkpoint) -> None:
        """Keep a stored checkpoint (it has its id) as its thread's, in place of an older one."""
        assert checkpoint.id is not None, "only a stored checkpoint can be kept"
        thread_id = checkpoint.thread_id
        held = self._by_thread.get(thread_id)
        if held is not None and held[0].id > checkpoint.id:
            return  # a later one is kept already
        self.forget(thread_id)
        size = sum(len(message) for message in checkpoint.messages)
        if size > self._limit:
            return
        self._by_thread[thread_id] = (_copy(checkpoint), size)
        self._size += size
        while self._size > self._limit:
            _, (_, evicted) = self._by_thread.popitem(last=False)
            self._size -= evicted

    def forget(self, thread_id: str) -> None:
        entry = self._by_thread.pop(thread_id, None)
        if entry is not None:
            self._size -= entry[1]

    @property
    def size(self) -> int:
        """The bytes of history kept."""
        return self._size


def _copy(checkpoint: Checkpoint) -> Checkpoint:
    """The checkpoint with a list of its own (its callers may change theirs)."""
    c = checkpoint
    return Checkpoint(c.thread_id, c.run_id, list(c.messages), c.created_at, id=c.id, kind=c.kind)
