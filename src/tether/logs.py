"""Logging: which run a line is about, and `--log-format json` (one JSON object per line).

A run executes in its own asyncio task, so a context variable set when the execution begins names
the run in every line logged on its behalf (by Tether, pydantic-ai or a tool), with no need to pass
ids to each call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_run: ContextVar[tuple[str, str] | None] = ContextVar("tether_run", default=None)


@contextmanager
def about_run(thread_id: str, run_id: str) -> Iterator[None]:
    """Lines logged inside name this thread and run."""
    token = _run.set((thread_id, run_id))
    try:
        yield
    finally:
        _run.reset(token)


class RunContext(logging.Filter):
    """Puts the current run's ids on each record (`thread_id`, `run_id`; None outside a run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _run.get()
        record.thread_id, record.run_id = current if current is not None else (None, None)
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the run's ids, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("thread_id", "run_id"):
            if getattr(record, key, None):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)
