"""The `tether` command: serve, and look at threads and runs of a running server."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tether import __version__
from tether.config import (
    DEFAULT_ATTACHMENT_TYPES,
    DEFAULT_FEED_KEEP,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEPALIVE_SECONDS,
    DEFAULT_LEASE,
    DEFAULT_MAX_ATTACHMENT_BYTES,
    DEFAULT_MAX_ATTACHMENTS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_INPUT_CHARS,
    DEFAULT_MAX_QUEUED_RUNS,
    DEFAULT_MAX_RECOVERIES,
    DEFAULT_MAX_RUNS,
    DEFAULT_MAX_STREAMS,
    DEFAULT_PORT,
    DEFAULT_REQUEST_LIMIT,
    DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_STREAM_BUFFER,
    Settings,
)

EPILOG = """\
Every flag can also be set with an environment variable, named in brackets.
Examples:
  tether serve                                  the offline demo agent on http://127.0.0.1:8765
  tether serve --agent myapp.agents:support     your own pydantic-ai Agent (or tether.ServedAgent)
  tether serve --agent support=myapp.agents:support --agent sales=myapp.agents:sales
                                                several agents; a new thread chooses one
  tether serve --users users.toml               several users, each with their own token and threads
  tether serve --model openai:gpt-4.1           any pydantic-ai model (the provider's key in the env)
  tether serve --database postgresql://db/tether --redis redis://cache:6379
                                                one of several workers sharing PostgreSQL and Redis
  tether threads                                list the threads of a running server
  tether runs thr_123                           list the runs of one thread
  tether chat                                   chat in the terminal (a new thread; or give its id)
"""


def _env_option(parser: argparse.ArgumentParser) -> Callable[..., None]:
    """Adds `--some-flag` that defaults to $TETHER_SOME_FLAG, then to `default`.

    argparse converts a string default with `type`, so a bad environment value gets the same clear
    error as a bad flag.
    """

    def option(
        flag: str, type_: Callable[[str], Any], default: Any, help_: str, *, env: str | None = None, **kwargs: Any
    ) -> None:
        env = env or "TETHER_" + flag.removeprefix("--").upper().replace("-", "_")
        parser.add_argument(flag, type=type_, default=os.environ.get(env, default), help=f"{help_} [{env}]", **kwargs)

    return option


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tether",
        description="Tether: a self-hosted server for AI-agent chats whose runs never break.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tether {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the Tether server: the HTTP API under /v1 and the web UI at /.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    option = _env_option(serve)
    option("--host", str, "127.0.0.1", "address to bind; a non-loopback address needs --token")
    option("--port", int, DEFAULT_PORT, "port to bind (0: any free port)")
    option("--data-dir", Path, Path(".tether"), "where the SQLite database and demo files live")
    option(
        "--database",
        str,
        None,
        "postgresql://USER@HOST/DB for several workers, or sqlite:///PATH; default: SQLite in the data directory",
        env="TETHER_DATABASE_URL",
    )
    option(
        "--redis",
        str,
        None,
        "redis://HOST:6379: live streams and control between workers (needed with PostgreSQL)",
        env="TETHER_REDIS_URL",
    )
    option("--redis-prefix", str, "tether:", "prefix of Tether's Redis channels (deployments sharing one stay apart)")
    option(
        "--lease",
        float,
        DEFAULT_LEASE,
        "seconds a worker's claim on a run lives without renewal: a dead worker's runs are taken over after it",
    )
    option(
        "--max-runs",
        int,
        DEFAULT_MAX_RUNS,
        "runs this worker executes at once; more wait in the queue (0: serve the API, execute nothing)",
    )
    option("--workers", int, 1, "worker processes on this port (more than 1 needs --database postgresql://…)")
    serve.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)  # a --workers child
    serve.add_argument(
        "--agent",
        action=_Repeated,
        default=_split(os.environ.get("TETHER_AGENT", "")),
        metavar="[NAME=]MODULE:ATTR",
        help="a pydantic-ai Agent or tether.ServedAgent to serve, named NAME (default: the attribute's name); "
        "repeat for several agents, the first is the default; without any: the offline demo agent "
        "(in the environment: comma-separated) [TETHER_AGENT]",
    )
    option("--model", str, None, "a pydantic-ai model string used for every run, e.g. openai:gpt-4.1")
    option("--token", str, None, "require 'Authorization: Bearer TOKEN' on every /v1 route (one user)")
    option(
        "--users",
        Path,
        None,
        "a TOML file of [[users]] with id and token (or token_sha256): each user sees only their own threads",
    )
    option(
        "--auth", str, None, "your own authentication: module:function, given the request, returns a user id or None"
    )
    option(
        "--allowed-hosts",
        _split,
        "",
        "more Host names to serve, comma-separated (*.example.com for subdomains; * serves any: dangerous, "
        "it lets a web page that rebinds its name to this address read the API); the loopback names and "
        "--host are always served",
    )
    option(
        "--cors-origins",
        _split,
        "",
        "origins of front ends on other sites that may call the API, comma-separated (e.g. "
        "https://app.example.com); any other page may not change anything",
    )
    option("--log-level", str, "info", "log verbosity", choices=["debug", "info", "warning", "error"])
    option("--log-format", str, "text", "text for people, or json: one object per line", choices=["text", "json"])
    option(
        "--header-timeout",
        float,
        DEFAULT_HEADER_TIMEOUT,
        "seconds a connection may take to send a request's headers (after connecting, or after its last "
        "response) before it is closed",
    )
    option("--max-input-chars", int, DEFAULT_MAX_INPUT_CHARS, "characters one message may have (413 beyond)")
    option("--max-queued-runs", int, DEFAULT_MAX_QUEUED_RUNS, "runs one thread may have waiting behind its active one")
    option("--max-streams", int, DEFAULT_MAX_STREAMS, "event streams one user may have open on this worker")
    option("--feed-keep", int, DEFAULT_FEED_KEEP, "feed notices kept; older ones are deleted every minute")
    option("--rate-limit", int, 0, "requests one user may make per minute; 429 beyond (0: no limit)")
    serve.add_argument(
        "--metrics-public",
        action="store_true",
        default=os.environ.get("TETHER_METRICS_PUBLIC", "").lower() in ("1", "true", "yes"),
        help="serve GET /metrics without authentication (for a scraper on a private network) [TETHER_METRICS_PUBLIC]",
    )
    option(
        "--max-connections",
        int,
        DEFAULT_MAX_CONNECTIONS,
        "open connections at once (streams included); past it, requests get 503 at once",
    )
    option(
        "--max-body-bytes",
        int,
        DEFAULT_MAX_BODY_BYTES,
        "larger request bodies get 413; a message's body may also hold its attachments, up to --max-attachments "
        "of --max-attachment-bytes each, in base64",
    )
    option(
        "--max-attachment-bytes",
        int,
        DEFAULT_MAX_ATTACHMENT_BYTES,
        "bytes one attachment (an image, a file) of a message may have; 413 beyond",
    )
    option("--max-attachments", int, DEFAULT_MAX_ATTACHMENTS, "attachments one message may carry; 413 beyond (0: none)")
    option(
        "--attachment-types",
        _split,
        ",".join(DEFAULT_ATTACHMENT_TYPES),
        "media types an attachment may have, comma-separated; 415 for others (images but PNG, JPEG, GIF and WebP "
        "are served as downloads, never shown inline)",
    )
    option(
        "--stream-buffer",
        int,
        DEFAULT_STREAM_BUFFER,
        "events a live stream may fall behind before it is cut off (the client resumes from the log)",
    )
    option("--keepalive", float, DEFAULT_KEEPALIVE_SECONDS, "seconds between keep-alive comments on idle streams")
    option(
        "--shutdown-grace",
        float,
        DEFAULT_SHUTDOWN_GRACE,
        "on SIGTERM/SIGINT, seconds runs get to reach a step boundary; they resume on the next start; "
        "a second signal exits at once",
    )
    option(
        "--max-recoveries",
        int,
        DEFAULT_MAX_RECOVERIES,
        "how many times a run interrupted by a crash or restart is resumed before it fails",
    )
    option(
        "--request-limit",
        int,
        DEFAULT_REQUEST_LIMIT,
        "model requests one run may make before it fails (a guard against runaway loops)",
    )
    serve.set_defaults(handler=serve_command)

    for name, help_ in (
        ("threads", "list the threads of a running server"),
        ("runs", "list the runs of one thread"),
        ("chat", "chat with the agent of a running server, in the terminal"),
    ):
        sub = commands.add_parser(
            name,
            help=help_,
            description=help_[0].upper() + help_[1:] + ".",
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        if name == "runs":
            sub.add_argument("thread", help="the thread id")
        if name == "chat":
            sub.add_argument("thread", nargs="?", help="a thread to continue (default: a new thread)")
        option = _env_option(sub)
        option("--url", str, f"http://127.0.0.1:{DEFAULT_PORT}", "the server")
        option("--token", str, None, "bearer token")
        if name != "chat":
            sub.add_argument("--json", action="store_true", help="print the server's JSON as it is")
        sub.set_defaults(handler={"threads": threads_command, "runs": runs_command, "chat": chat_command}[name])
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    sys.exit(args.handler(args))


def serve_command(args: argparse.Namespace) -> int:
    settings = Settings(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        agents=tuple(args.agent),
        model=args.model,
        token=args.token or None,
        users_file=args.users or None,
        auth=args.auth or None,
        allowed_hosts=tuple(args.allowed_hosts),
        cors_origins=tuple(args.cors_origins),
        log_level=args.log_level,
        max_body_bytes=args.max_body_bytes,
        stream_buffer=args.stream_buffer,
        keepalive_seconds=args.keepalive,
        shutdown_grace=args.shutdown_grace,
        max_recoveries=args.max_recoveries,
        request_limit=args.request_limit,
        database=args.database or None,
        redis=args.redis or None,
        redis_prefix=args.redis_prefix,
        lease=args.lease,
        max_runs=args.max_runs,
        workers=args.workers,
        header_timeout=args.header_timeout,
        max_connections=args.max_connections,
        max_input_chars=args.max_input_chars,
        max_queued_runs=args.max_queued_runs,
        max_streams=args.max_streams,
        rate_limit=args.rate_limit,
        feed_keep=args.feed_keep,
        metrics_public=args.metrics_public,
        max_attachment_bytes=args.max_attachment_bytes,
        max_attachments=args.max_attachments,
        attachment_types=tuple(args.attachment_types),
    )
    problem = _check_numbers(settings)
    if problem:
        print(f"tether: {problem}", file=sys.stderr)
        return 2
    if not settings.binds_loopback_only and not (settings.token or settings.users_file or settings.auth):
        print(
            f"tether: refusing to bind {settings.host} without a token: anyone on the network could "
            "drive your agent. Set --token (or TETHER_TOKEN), --users FILE or --auth, or bind 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    if settings.workers > 1:
        if not settings.uses_postgres or not settings.redis:
            print(
                "tether: --workers above 1 needs --database postgresql://… and --redis redis://…: "
                "several processes share one PostgreSQL database and one Redis",
                file=sys.stderr,
            )
            return 2
        from tether.supervisor import supervise

        return supervise(args.argv, settings.host, settings.port, settings.workers)
    from tether.agents import AgentLoadError  # imported late: refusing a bad host needs none of it
    from tether.api.auth import AuthConfigError
    from tether.app import ConfigError, check_services, create_app
    from tether.bus.redis import RedisUnavailable
    from tether.server import HeaderTimeoutProtocol, TetherServer, configure_logging, raise_file_limit
    from tether.store.db import StoreCorrupt, StoreUnavailable
    from tether.store.sqlite import DataDirInUse
    from tether.tracing import TracingUnavailable

    configure_logging(settings.log_level, args.log_format)
    files = raise_file_limit()
    if settings.max_connections + 50 > files:
        print(
            f"tether: --max-connections {settings.max_connections} needs more open files than this process may "
            f"have ({files}); lower it or raise the limit (ulimit -n)",
            file=sys.stderr,
        )
        return 2
    try:
        app = create_app(settings)
        asyncio.run(check_services(settings))
    except (
        AgentLoadError,
        AuthConfigError,
        DataDirInUse,
        ConfigError,
        StoreCorrupt,
        StoreUnavailable,
        RedisUnavailable,
        TracingUnavailable,
    ) as exc:
        print(f"tether: {exc}", file=sys.stderr)
        return 2
    engine = app.state.engine
    agents = ", ".join(settings.agents) or "the offline demo agent"
    model = f", model {settings.model}" if settings.model else ""
    print(
        f"Tether {__version__} serving {agents}{model} ({app.state.auth.kind} auth), data in {engine.store.url}, "
        f"worker {engine.worker_id}",
        flush=True,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
        timeout_graceful_shutdown=settings.shutdown_grace + 5,
        lifespan="on",
        http=HeaderTimeoutProtocol,
        timeout_keep_alive=settings.header_timeout,
        limit_concurrency=settings.max_connections,
    )
    sockets = [socket.socket(fileno=args.listen_fd)] if args.listen_fd is not None else None
    TetherServer(config, app.state.engine).run(sockets=sockets)
    return 0


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class _Repeated(argparse.Action):
    """A repeatable flag whose default (from its environment variable) is replaced, not added to, by
    the first use of the flag."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        given = getattr(namespace, self.dest)
        setattr(namespace, self.dest, [*(given if given is not self.default else []), values])


def _check_numbers(settings: Settings) -> str | None:
    if settings.lease < 1:
        return f"--lease must be at least 1 second, got {settings.lease:g}"
    if settings.max_runs < 0:
        return f"--max-runs must be 0 or more, got {settings.max_runs}"
    if settings.workers < 1:
        return f"--workers must be at least 1, got {settings.workers}"
    if settings.header_timeout <= 0:
        return f"--header-timeout must be more than 0 seconds, got {settings.header_timeout:g}"
    for flag, value in (
        ("--max-connections", settings.max_connections),
        ("--max-input-chars", settings.max_input_chars),
        ("--max-queued-runs", settings.max_queued_runs),
        ("--max-streams", settings.max_streams),
        ("--feed-keep", settings.feed_keep),
        ("--max-attachment-bytes", settings.max_attachment_bytes),
    ):
        if value < 1:
            return f"{flag} must be at least 1, got {value}"
    if settings.rate_limit < 0:
        return f"--rate-limit must be 0 (no limit) or more, got {settings.rate_limit}"
    if settings.max_attachments < 0:
        return f"--max-attachments must be 0 (none) or more, got {settings.max_attachments}"
    odd = [t for t in settings.attachment_types if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*", t)]
    if odd:
        return f"--attachment-types takes media types in lower case, like image/png; not {odd[0]!r}"
    return None


def _get(args: argparse.Namespace, path: str) -> Any:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        response = httpx.get(args.url.rstrip("/") + path, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise SystemExit(f"tether: cannot reach {args.url}: {exc}") from exc
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code >= 400:
        message = body.get("error", {}).get("message", response.text)
        raise SystemExit(f"tether: {response.status_code}: {message}")
    return body


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def chat_command(args: argparse.Namespace) -> int:
    from tether.chat import chat

    return asyncio.run(chat(args.url, args.token, args.thread))


def threads_command(args: argparse.Namespace) -> int:
    body = _get(args, "/v1/threads")
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    _table(
        [[t["id"], t["title"] or "", t.get("agent", ""), _when(t["updated_at"])] for t in body["threads"]],
        ["THREAD", "TITLE", "AGENT", "UPDATED"],
    )
    return 0


def runs_command(args: argparse.Namespace) -> int:
    body = _get(args, f"/v1/threads/{args.thread}/runs")
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    rows = []
    for r in body["runs"]:
        took = f"{r['finished_at'] - r['started_at']:.2f}s" if r["finished_at"] and r["started_at"] else "-"
        worker = r.get("worker") or ""
        rows.append([r["id"], r["status"], worker, _when(r["created_at"]), took, (r["error"] or "")[:60]])
    _table(rows, ["RUN", "STATUS", "WORKER", "CREATED", "TOOK", "ERROR"])
    return 0
