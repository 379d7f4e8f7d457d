"""Garbage-collector settings for a server process that streams many runs at once.

With CPython's defaults (700, 10, 10), 150 concurrent streaming runs (bench/stream.py, part d)
set off a full collection every few seconds. Each one walked every object the process had, the
~135,000 made at start-up (modules, schemas, the app) included, and stopped the event loop for
up to 280 ms: a gap in every live stream at once, and about a tenth of the loop's time. So, once
start-up is done, what it made is frozen (never collected, never walked again), and young objects
are collected after 50,000 allocations instead of 700, which makes full collections rare. The
price is a little memory: cyclic garbage waits longer to be freed.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 10)


def settle_after_start_up() -> None:
    """Freeze what exists now (after a collection) and raise the thresholds; once per process."""
    if gc.get_threshold() == THRESHOLDS:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
