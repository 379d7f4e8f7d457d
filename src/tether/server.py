"""The HTTP server around the app: uvicorn, with Tether's graceful shutdown and its edges.

uvicorn times out a keep-alive connection only after a response, so a connection that never
sends a request (or sends its headers a byte a minute) would hold a file descriptor forever;
anyone who can reach the port could exhaust them, token or not. Here every connection must
complete its request's headers within `--header-timeout`, connections beyond
`--max-connections` get a 503 at once, the process may open as many files as the system lets
it, and a flood of identical log lines is summarised instead of filling the disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from tether.logs import JSONFormatter, RunContext

if TYPE_CHECKING:
    from tether.engine import Engine

log = logging.getLogger("tether")


class TetherServer(uvicorn.Server):
    """uvicorn with Tether's graceful shutdown.

    The first SIGTERM/SIGINT refuses new runs, stops runs at their next step boundary (they resume on
    the next start) and ends every stream with a comment telling clients to reconnect; then uvicorn
    drains and exits 0. A second signal exits at once.
    """

    def __init__(self, config: uvicorn.Config, engine: Engine) -> None:
        super().__init__(config)
        self.engine = engine
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started and self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"Tether is ready: http://{host}:{port}/", flush=True)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            print("tether: second signal, exiting now", file=sys.stderr, flush=True)
            os._exit(1)
        log.info("signal %s: shutting down gracefully (again to exit now)", sig)
        self.should_exit = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.engine.begin_shutdown)


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection that has not sent a whole request head within
    `timeout_keep_alive` seconds of connecting or of its last response (uvicorn alone times out only
    a connection that sends nothing at all after a response)."""

    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        self._header_deadline = self.loop.call_later(self.timeout_keep_alive, self._headers_overdue)

    def _headers_overdue(self) -> None:
        waiting = self.cycle is None or self.cycle.response_complete  # no request is being answered
        if waiting and not self.transport.is_closing():
            self.transport.close()


def raise_file_limit() -> int:
    """Let the process open as many files (connections) as the system allows it; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


class SummariseFloods(logging.Filter):
    """Let through at most `burst` records of one kind (logger and message template) per `window`
    seconds; then one line saying how many were left out. A flood (a connection storm, a failing disk)
    cannot fill the disk with the same traceback."""

    def __init__(self, burst: int = 20, window: float = 60.0) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = time.monotonic()
        started, count = self._seen.get(key, (now, 0))
        if now - started >= self.window:
            if count > self.burst:
                record.msg = f"{record.msg} (and {count - self.burst} more like it in the last {self.window:g}s)"
            started, count = now, 0
        count += 1
        if len(self._seen) > 10_000:  # many kinds of message: forget the old ones rather than grow
            self._seen.clear()
        self._seen[key] = (started, count)
        return count <= self.burst


class _DropCutOffNoise(logging.Filter):
    """A stream cut off for a stalled client ends without completing its response, on purpose;
    Tether logs why (tether.stream), so uvicorn's generic complaint about it only confuses."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


def configure_logging(level: str, log_format: str = "text") -> None:
    """Everything to stderr: text for people (with the run a line is about), or one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(_TextWithRun("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RunContext())
    handler.addFilter(SummariseFloods())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("uvicorn.error").addFilter(_DropCutOffNoise())


class _TextWithRun(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        run_id = getattr(record, "run_id", None)
        return f"{line} [{run_id}]" if run_id and run_id not in record.getMessage() else line
