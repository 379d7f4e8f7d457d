"""Test fixtures: real Tether servers over loopback, on both engines.

- `server`: a Tether app served by uvicorn in a background thread of the test
  process (fast to start; real HTTP over 127.0.0.1). `start_server(...)`
  starts one with any settings.
- `TetherProcess`: a real `tether serve` subprocess, for what only a process
  can show (startup, signals, SIGKILL).

Every test that uses them runs twice: on SQLite with the in-process bus, and
on PostgreSQL with Redis (`[postgres]`), each server with a database and a
Redis prefix of its own (a restarted process on the same data directory
finds the same database). A test marked `sqlite_only` runs on SQLite alone.
Without PostgreSQL or Redis the `[postgres]` tests skip, unless CI=true.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn

from tether.app import create_app, open_store
from tether.config import Settings
from tether.store import Store

from .services import PG_BIN, REDIS_SERVER, PrivatePostgres, PrivateRedis, require_that

IN_CI = os.environ.get("CI") == "true"
POSTGRES = os.environ.get("TETHER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""A PostgreSQL server where tests may create databases (trust auth on this machine)."""
REDIS = os.environ.get("TETHER_TEST_REDIS", "redis://127.0.0.1:6379/0")

T = TypeVar("T")


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except OSError:
        return False
    return True


def require(url: str, what: str) -> None:
    """Skip a test whose server is missing, on a laptop; under CI=true, fail it."""
    if not _reachable(url):
        message = f"{what} is not reachable at {url} (set TETHER_TEST_POSTGRES / TETHER_TEST_REDIS)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`sqlite_only` tests run on SQLite alone: their PostgreSQL variant is not collected at all."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("store_kind") == "postgres"
        (drop if on_postgres and item.get_closest_marker("sqlite_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class Databases:
    """A PostgreSQL database per data directory, created on first use and dropped at the end."""

    def __init__(self) -> None:
        self._made: dict[Path, str] = {}

    def settings(self, data_dir: Path) -> dict[str, Any]:
        name = self._made.get(data_dir)
        if name is None:
            name = f"tether_test_{uuid.uuid4().hex[:16]}"
            subprocess.run(_psql(f"CREATE DATABASE {name}"), check=True, capture_output=True)
            self._made[data_dir] = name
        base = POSTGRES.rsplit("/", 1)[0]
        return {"database": f"{base}/{name}", "redis": REDIS, "redis_prefix": f"test:{name}:"}

    def drop_all(self) -> None:
        for name in self._made.values():
            subprocess.run(_psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"), capture_output=True)


def _psql(sql: str) -> list[str]:
    return ["psql", POSTGRES, "-qc", sql]


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        require(POSTGRES, "PostgreSQL")
        require(REDIS, "Redis")
    return request.param


@pytest.fixture
def engines(store_kind: str) -> Iterator[Callable[[Path], dict[str, Any]]]:
    """engines(data_dir) → the settings that put a server with that data directory on this test's engines."""
    if store_kind == "sqlite":
        yield lambda data_dir: {}
        return
    databases = Databases()
    yield databases.settings
    databases.drop_all()


def as_flags(settings: dict[str, Any]) -> list[str]:
    return [arg for name, value in settings.items() for arg in (f"--{name.replace('_', '-')}", str(value))]


async def with_store(settings: Settings, use: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store a (stopped) server used, and read it through the store's own code."""
    store = open_store(settings)
    await store.open()
    try:
        return await use(store)
    finally:
        await store.close()


class ServerThread:
    """uvicorn serving a Tether app on its own event loop, in a thread."""

    def __init__(self, settings: Settings, app: Any = None) -> None:
        """Serves `create_app(settings)`, or `app` (an app that mounts Tether) if given."""
        self.settings = settings
        self.url = ""
        self.app = app if app is not None else create_app(self.settings)
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=1)
        )
        self.engine = getattr(self.app.state, "engine", None)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._server.serve(),), daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.settings = replace(self.settings, port=port)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the server's event loop (for tests that reach inside, e.g. into SQLite)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=20)


def host_of(chat: Any) -> Any:
    """Someone's own FastAPI app with a Tether app mounted at /chat, started in the host's lifespan
    (a mounted app gets none of its own)."""
    from fastapi import FastAPI

    import tether

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with tether.running(chat):
            yield

    host = FastAPI(lifespan=lifespan)
    host.mount("/chat", chat)
    return host


@pytest.fixture
def start_server(tmp_path: Path, engines: Callable[[Path], dict[str, Any]]) -> Iterator:
    """A factory: start_server(token=..., max_body_bytes=...) → a running ServerThread."""
    started: list[ServerThread] = []

    def start(**overrides: Any) -> ServerThread:
        data_dir = overrides.pop("data_dir", tmp_path / f"data{len(started)}")
        settings = Settings(data_dir=data_dir, **{**engines(data_dir), **overrides})
        server = ServerThread(settings).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server) -> ServerThread:
    return start_server()


class TetherProcess:
    """`python -m tether serve` in a subprocess, with its own data dir.

    It binds port 0 (unless the args say otherwise) and the test reads the real port from the
    "Tether is ready: URL" line: a port picked in advance could be taken by a parallel test's server.
    """

    _count = itertools.count()

    def __init__(
        self,
        data_dir: Path,
        *extra_args: str,
        env: dict[str, str] | None = None,
        engines: dict[str, Any] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.engines = engines or {}
        port_args = [] if "--port" in extra_args else ["--port", "0"]
        self.args = [
            *(sys.executable, "-m", "tether", "serve", *port_args, "--data-dir", str(data_dir)),
            *as_flags(self.engines),
            *extra_args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.log_path = data_dir.parent / f"server-{os.getpid()}-{next(self._count)}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0

    def spawn(self) -> TetherProcess:
        """Start the process without waiting for it to become healthy."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self

    def start(self, timeout: float = 30) -> TetherProcess:
        """Start the process and wait until /healthz answers."""
        self.spawn()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tether exited with {self.proc.returncode}:\n{self.log()}")
            ready = re.search(r"Tether is ready: (http://[\d.]+:(\d+))/", self.log())
            if ready:
                self.url, self.port = ready[1], int(ready[2])
                if httpx.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"tether did not become healthy:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def settings(self) -> Settings:
        """The settings that find this process's store (its data directory and engines)."""
        return Settings(data_dir=self.data_dir, **self.engines)


@pytest.fixture
def tether_process(tmp_path: Path, engines: Callable[[Path], dict[str, Any]]) -> Iterator:
    """A factory for TetherProcess; every process is killed at the end of the test."""
    procs: list[TetherProcess] = []

    def make(*args: str, data_dir: Path | None = None, env: dict[str, str] | None = None) -> TetherProcess:
        data_dir = data_dir or tmp_path / "data"
        proc = TetherProcess(data_dir, *args, env=env, engines=engines(data_dir))
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop(signal.SIGKILL)


async def wait_for_status(client, run_id: str, statuses: set[str], within: float = 60) -> dict:
    deadline = time.monotonic() + within
    while True:
        run = await client.get_run(run_id)
        if run["status"] in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {within}s")
        await asyncio.sleep(0.02)


def tool_log(data_dir: Path) -> list[dict]:
    path = data_dir / "demo_tools.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def notes(data_dir: Path) -> list[str]:
    path = data_dir / "notes.txt"
    return path.read_text().splitlines() if path.exists() else []


async def thread_events(client: Any, thread_id: str) -> list[dict]:
    """Every event of the thread so far, in order."""
    last = (await client.get_thread(thread_id))["last_seq"]
    events = []
    if last == 0:
        return events
    async for event in client.stream_thread(thread_id):
        events.append(event.data)
        if event.seq == last:
            return events
    return events


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, not yet started, killed at the end."""
    require_that(os.access(REDIS_SERVER, os.X_OK), f"{REDIS_SERVER} is missing")
    server = PrivateRedis(tmp_path)
    yield server
    server.kill()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of the test's own, started, removed at the end."""
    require_that((PG_BIN / "initdb").exists(), f"{PG_BIN / 'initdb'} is missing")
    server = PrivatePostgres()
    server.init()
    server.start()
    yield server
    server.remove()
