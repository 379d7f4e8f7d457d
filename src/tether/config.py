"""Settings: one frozen object built from CLI flags and `TETHER_*` environment variables."""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 8765
DEFAULT_MAX_BODY_BYTES = 1_000_000
DEFAULT_STREAM_BUFFER = 10_000
DEFAULT_KEEPALIVE_SECONDS = 15.0
DEFAULT_SHUTDOWN_GRACE = 10.0
DEFAULT_MAX_RECOVERIES = 3
DEFAULT_REQUEST_LIMIT = 50
DEFAULT_LEASE = 10.0
DEFAULT_MAX_RUNS = 100
DEFAULT_OUTAGE_LIMIT = 60.0
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 2000
DEFAULT_MAX_INPUT_CHARS = 100_000
DEFAULT_MAX_QUEUED_RUNS = 20
DEFAULT_MAX_STREAMS = 100
DEFAULT_FEED_KEEP = 100_000
DEFAULT_MAX_ATTACHMENT_BYTES = 10_000_000
DEFAULT_MAX_ATTACHMENTS = 4
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
DEFAULT_ATTACHMENT_TYPES = (
    *IMAGE_TYPES,
    "application/pdf",
    "text/plain",
    "text/markdown",
    "text/csv",
    "application/json",
)


@dataclass(frozen=True)
class Settings:
    """Everything a Tether process needs to know; see `tether serve --help`."""

    data_dir: Path = Path(".tether")
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    agents: tuple[str, ...] = ()
    """`NAME=module:attribute` (or `module:attribute`) of each Agent or ServedAgent; none: the offline demo."""
    model: str | None = None
    """A pydantic-ai model string that replaces the agents' own models on every run."""
    token: str | None = None
    """One shared bearer token (one user)."""
    users_file: Path | None = None
    """A TOML file of `[[users]]` (id, token or token_sha256): each user sees only their own threads."""
    auth: str | None = None
    """`module:function` that authenticates a request to a user id (or None: 401)."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names served besides the loopback names and the bound address (`*.example.com`; `*`: any)."""
    cors_origins: tuple[str, ...] = ()
    """Origins of front ends on other sites that may call the API (CORS); others may not change anything."""
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
    database: str | None = None
    """`postgresql://…` or `sqlite:///path`; None is SQLite in the data directory."""
    redis: str | None = None
    """`redis://…`: live fan-out and control between workers (required with PostgreSQL)."""
    redis_prefix: str = "tether:"
    """Prefix of every Redis channel: deployments (and tests) sharing one Redis stay apart."""
    lease: float = DEFAULT_LEASE
    """How long a worker's claim on a run lives without renewal; a dead worker's runs are taken over after it."""
    max_runs: int = DEFAULT_MAX_RUNS
    """Runs one worker executes at once; more stay queued for other workers (or until some finish)."""
    workers: int = 1
    """Worker processes serving one port (more than one needs PostgreSQL)."""
    worker_id: str | None = None
    """This worker's name; None makes one from the host name and the process id."""
    outage_limit: float = DEFAULT_OUTAGE_LIMIT
    """How long a commit waits for an unreachable database before its runs fail."""
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    """Seconds a connection may take to send a request's headers before it is closed (`tether serve`)."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Open connections at once; past it, requests get 503 at once (`tether serve`)."""
    max_input_chars: int = DEFAULT_MAX_INPUT_CHARS
    """Characters one message (a run's input or a steer) may have: 413 beyond."""
    max_queued_runs: int = DEFAULT_MAX_QUEUED_RUNS
    """Runs one thread may have waiting behind its active one: 429 beyond."""
    max_streams: int = DEFAULT_MAX_STREAMS
    """Streams one user may have open on one worker: 429 beyond."""
    feed_keep: int = DEFAULT_FEED_KEEP
    """Feed notices kept (the oldest are deleted every minute); a feed resumed from before them is 410."""
    metrics_public: bool = False
    """Serve GET /metrics without authentication (for a scraper on a private network)."""
    rate_limit: int = 0
    """Requests one user may make per minute (0: no limit): 429 with Retry-After beyond."""
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES
    """The size one attachment of a message may have (its bytes, decoded): 413 beyond."""
    max_attachments: int = DEFAULT_MAX_ATTACHMENTS
    """Attachments (images, files) one message may carry: 413 beyond (0: none)."""
    attachment_types: tuple[str, ...] = DEFAULT_ATTACHMENT_TYPES
    """The media types an attachment may have: 415 for any other."""

    def __post_init__(self) -> None:
        # Paths may be given as strings (Settings(data_dir="/var/lib/tether")) by an app that embeds Tether.
        for name in ("data_dir", "users_file"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))
        for name in ("agents", "allowed_hosts", "cors_origins", "attachment_types"):
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, (getattr(self, name),))

    @property
    def database_path(self) -> Path:
        """The SQLite file (when the database is SQLite)."""
        if self.database is not None and self.database.startswith("sqlite:///"):
            return Path(self.database.removeprefix("sqlite:///"))
        return self.data_dir / "tether.db"

    @property
    def max_message_bytes(self) -> int:
        """The body a message (POST /v1/threads/{tid}/runs) may have: --max-body-bytes, and room for as many
        attachments as it may carry, each as large as it may be, in base64. So a message within the
        attachment limits is never refused for its body's size, and every other body stays small."""
        return self.max_body_bytes + self.max_attachments * 4 * -(-self.max_attachment_bytes // 3)

    @property
    def uses_postgres(self) -> bool:
        return self.database is not None and self.database.startswith(("postgresql://", "postgres://"))

    @property
    def binds_loopback_only(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def new_worker_id() -> str:
    """Unique across machines and restarts; says where the worker runs, for logs and `GET /v1/runs/{rid}`."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
