"""Deterministic crash points for the fault-injection tests.

`TETHER_CRASH_AT=name` (or `name@N`) makes the process kill itself with
SIGKILL the first (or N-th) time it reaches the point called `name`, exactly
as an out-of-memory kill or a power cut would stop it: no cleanup runs.
Unset, `crash_point` costs one dictionary lookup.

Points: run_started, text_delta, tools_started, checkpoint_committed,
approval_requested, approval_resumed, steer_applied.
"""

from __future__ import annotations

import os
import signal
import sys

_target, _, _nth = os.environ.get("TETHER_CRASH_AT", "").partition("@")
_remaining = int(_nth or 1)


def crash_point(name: str) -> None:
    global _remaining
    if name != _target:
        return
    _remaining -= 1
    if _remaining == 0:
        print(f"tether: TETHER_CRASH_AT={name}: killing the process", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
