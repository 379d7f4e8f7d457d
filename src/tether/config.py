"""Settings: one frozen object built from CLI flags and `TETHER_*` environment variables."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 8765
DEFAULT_MAX_BODY_BYTES = 1_000_000
DEFAULT_STREAM_BUFFER = 10_000
DEFAULT_KEEPALIVE_SECONDS = 15.0
DEFAULT_SHUTDOWN_GRACE = 10.0
DEFAULT_MAX_RECOVERIES = 3
DEFAULT_REQUEST_LIMIT = 50


@dataclass(frozen=True)
class Settings:
    """Everything a Tether process needs to know; see `tether serve --help`."""

    data_dir: Path = Path(".tether")
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    agent: str | None = None
    """`module:attribute` of a pydantic-ai Agent; None serves the offline demo agent."""
    model: str | None = None
    """A pydantic-ai model string that replaces the agent's own model on every run."""
    token: str | None = None
    log_level: str = "info"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    stream_buffer: int = DEFAULT_STREAM_BUFFER
    """Events a live stream may fall behind before the server cuts it off (the client resumes from the log)."""
    keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    """On SIGTERM, how long runs get to reach a step boundary before they are stopped where they are."""
    max_recoveries: int = DEFAULT_MAX_RECOVERIES
    """A run found running at start-up is resumed at most this many times, then fails."""
    request_limit: int = DEFAULT_REQUEST_LIMIT
    """Model requests one run may make (pydantic-ai's UsageLimits), a guard against runaway loops."""
    checkpoints: bool = True
    """Checkpoint before every model request. Only benchmarks turn this off, to measure its cost."""
    commit_interval: float = 0.002
    """Group commit: how long the journal gathers events before one transaction writes them."""

    @property
    def database_path(self) -> Path:
        return self.data_dir / "tether.db"

    @property
    def binds_loopback_only(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
