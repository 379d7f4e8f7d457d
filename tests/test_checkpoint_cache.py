"""The store's memory of each thread's latest checkpoint: bounded, and never older than what it holds."""

from __future__ import annotations

from tether.store import Checkpoint
from tether.store.cache import CheckpointCache


def stored(thread_id: str, checkpoint_id: int, size: int) -> Checkpoint:
    return Checkpoint(thread_id, None, [b"x" * size], 0.0, id=checkpoint_id)


def test_a_checkpoint_is_found_only_under_its_own_id():
    cache = CheckpointCache()
    cache.put(stored("t", 3, 10))
    assert cache.get("t", 3).messages == [b"x" * 10]
    assert cache.get("t", 4) is None  # the thread has a later one: read it from the database
    assert cache.get("u", 3) is None


def test_an_older_checkpoint_does_not_replace_a_later_one():
    cache = CheckpointCache()
    cache.put(stored("t", 5, 10))
    cache.put(stored("t", 4, 20))  # read before the later one was written, put after it
    assert cache.get("t", 5) is not None and cache.get("t", 4) is None
    assert cache.size == 10


def test_the_least_recently_used_go_when_the_bytes_run_out():
    cache = CheckpointCache(limit=100)
    cache.put(stored("a", 1, 40))
    cache.put(stored("b", 2, 40))
    assert cache.get("a", 1) is not None  # a is used again: b is now the oldest
    cache.put(stored("c", 3, 40))
    assert cache.get("b", 2) is None
    assert cache.get("a", 1) is not None and cache.get("c", 3) is not None
    assert cache.size == 80
    cache.put(stored("d", 4, 101))  # larger than all the room there is: not kept
    assert cache.get("d", 4) is None and cache.size == 80
    cache.forget("a")
    assert cache.get("a", 1) is None and cache.size == 40
