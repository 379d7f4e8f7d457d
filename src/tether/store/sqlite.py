"""The embedded database: one SQLite file in WAL mode.

Two connections: one writes (every write goes through it, one transaction at
a time, so SQLite never sees two writers), one reads (WAL lets readers run
beside the writer, so a long replay never holds up a run's group commits).
Each read and each transaction is one function run on its connection's own
thread: one hop there and back, however many statements its script has. The
journal's group commits are the exception: small, frequent and bounded, they
run on the event loop's thread, where they cost the loop less than the hop
(each hop hands the GIL over and back, ~0.7 ms of the loop's time here).

`synchronous=NORMAL` in WAL mode: a committed transaction survives the
process being killed; only an OS crash or power loss can lose the last few.
One process holds the file at a time (an exclusive lock beside it), which is
what lets the store end a dead process's leases at once.

The file is checked, never trusted: at start, that it is a database and passes
`PRAGMA quick_check`; before every write transaction, that the path still names
the file the server opened. A database deleted or replaced while the server runs
would otherwise take every later write into an unlinked file, acknowledged and
then lost at the next restart; here writes are refused (503) and /healthz says why.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from tether.store.db import Dialect, Execute, InsertMany, Query, Script, Statement, StoreCorrupt, StoreUnavailable
from tether.store.migrations import MIGRATIONS
from tether.store.search import fts5_query
from tether.store.sql import SQLStore

MIN_SQLITE = (3, 38)  # the ->> JSON operator

DIALECT = Dialect(
    name="sqlite",
    now="((julianday('now') - 2440587.5) * 86400.0)",
    for_update="",
    skip_locked="",
    for_share="",
    text_match="SELECT t.thread_id FROM thread_words JOIN thread_text AS t ON t.id = thread_words.rowid "
    "WHERE thread_words MATCH ?",
    text_query=fts5_query,
)

T = TypeVar("T")


class DataDirInUse(RuntimeError):
    """Another process holds the database: two servers on one file would corrupt each other's logs."""


class ThreadConnection:
    """A stdlib sqlite3 connection that lives on a thread of its own; `call(fn)` runs `fn(conn)` there."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    async def open(self, path: Path) -> None:
        self._conn = await asyncio.get_running_loop().run_in_executor(self._executor, _connect, path)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None, "store is not open"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn)

    def call_here(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on the calling thread (the caller makes sure no `call` runs meanwhile)."""
        assert self._conn is not None, "store is not open"
        return fn(self._conn)

    async def close(self) -> None:
        if self._conn is not None:
            await self.call(sqlite3.Connection.close)
            self._conn = None
        self._executor.shutdown(wait=False)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def _execute(conn: sqlite3.Connection, statement: Statement) -> Any:
    if type(statement) is Query:
        return conn.execute(statement.sql, statement.args).fetchall()
    if type(statement) is Execute:
        return conn.execute(statement.sql, statement.args).rowcount
    assert type(statement) is InsertMany
    columns = ", ".join(statement.columns)
    if all(type(value) in (str, int, float) or value is None for row in statement.rows for value in row):
        # One statement for the whole batch: executemany releases and retakes the GIL for every row,
        # and with a busy event loop each retake can wait a whole switch interval.
        values = ", ".join(f"value ->> {i}" for i in range(len(statement.columns)))
        conn.execute(
            f"INSERT INTO {statement.table} ({columns}) SELECT {values} FROM json_each(?)",
            (json.dumps(statement.rows),),
        )
    else:
        marks = ", ".join("?" for _ in statement.columns)
        conn.executemany(f"INSERT INTO {statement.table} ({columns}) VALUES ({marks})", statement.rows)
    return None


def _run(conn: sqlite3.Connection, script: Script[T]) -> T:
    """Drive a script to its end on this connection."""
    result: Any = None
    try:
        while True:
            result = _execute(conn, script.send(result))
    except StopIteration as done:
        return done.value
    finally:
        script.close()


def _in_transaction(script: Script[T], check: Callable[[], None]) -> Callable[[sqlite3.Connection], T]:
    """`script` as one write transaction: committed if it returns, rolled back if it raises. `check`
    runs first, on the writer's thread."""

    def transaction(conn: sqlite3.Connection) -> T:
        check()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = _run(conn, script)
            except BaseException:
                if conn.in_transaction:  # SQLite has already rolled back on some errors (a full disk)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if _cannot_write(exc):
                raise StoreUnavailable(f"the database cannot be written: {exc}") from exc
            raise
        return result

    return transaction


CANNOT_WRITE = ("database or disk is full", "readonly database", "disk i/o error", "unable to open database file")


def _cannot_write(exc: sqlite3.OperationalError) -> bool:
    """A full disk, a read-only file or a failing device: the write may work later, when that is fixed."""
    return any(reason in str(exc).lower() for reason in CANNOT_WRITE)


def _check_file(conn: sqlite3.Connection) -> None:
    """That the file is a database, and not damaged (a quick check of its pages and indexes)."""
    rows = conn.execute("PRAGMA quick_check").fetchall()
    if [tuple(row) for row in rows] != [("ok",)]:
        found = "; ".join(str(row[0]) for row in rows[:5])
        raise sqlite3.DatabaseError(f"quick_check found damage: {found}")


def _migrate(conn: sqlite3.Connection) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this Tether knows ({len(MIGRATIONS)}); upgrade Tether"
        )
    for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript runs the DDL inside the transaction its first statement opens; the data step
        # and the new version number join it, and COMMIT makes all of it one step.
        try:
            conn.executescript(f"BEGIN;\n{migration.sqlite}")
            if migration.data is not None:
                _run(conn, migration.data())
            conn.execute(f"PRAGMA user_version={number}")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


class SQLiteDatabase:
    dialect = DIALECT

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._lock_file: IO[str] | None = None
        self._writer = ThreadConnection("tether-sqlite-writer")
        self._writing = asyncio.Lock()
        """Held by each write transaction, wherever it runs: the writer's connection has one at a time."""
        self._reader = ThreadConnection("tether-sqlite-reader")
        self._identity: tuple[int, int] | None = None
        self.problem: str | None = None

    def lock(self) -> None:
        """Hold an exclusive lock on the database for as long as the store is open (released at exit,
        also when the process is killed). Raises DataDirInUse if another process holds it."""
        if self._lock_file is not None:
            return
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            needed = ".".join(map(str, MIN_SQLITE))
            raise RuntimeError(f"Tether needs SQLite {needed} or newer; this Python has {sqlite3.sqlite_version}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = self.path.with_name(self.path.name + ".lock").open("a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "unknown"
            lock_file.close()
            raise DataDirInUse(
                f"another Tether process (pid {holder}) is using {self.path}; stop it, or give this one "
                "its own --data-dir or --database"
            ) from None
        lock_file.truncate(0)
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        self._lock_file = lock_file

    def check(self) -> None:
        """Raise StoreCorrupt if the file exists and is not a sound database (before serving: a clear
        message at start rather than a failing lifespan)."""
        if not self.path.exists():
            return
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                _check_file(conn)
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc

    async def open(self) -> None:
        self.lock()
        try:
            await self._writer.open(self.path)
            await self._writer.call(_check_file)
            await self._writer.call(_migrate)
        except sqlite3.DatabaseError as exc:
            await self._writer.close()
            self._writer = ThreadConnection("tether-sqlite-writer")
            raise self._corrupt(exc) from exc
        await self._reader.open(self.path)
        self._identity = _identity(self.path)

    def _corrupt(self, exc: sqlite3.DatabaseError) -> StoreCorrupt:
        return StoreCorrupt(
            f"{self.path} is not a usable Tether database ({exc}). Move it away to start with an empty one, "
            "or restore it from a backup (sqlite3's .recover can save what is readable)"
        )

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    async def fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        # Executed, fetched and finished in one call: a statement left open across an await would keep
        # the reader's snapshot (its WAL read transaction) alive, and later reads would see stale data.
        return await self._reader.call(lambda conn: conn.execute(sql, args).fetchall())

    async def transaction(self, script: Script[T]) -> T:
        async with self._writing:
            work = asyncio.ensure_future(self._writer.call(_in_transaction(script, self._check_identity)))
            try:
                return await asyncio.shield(work)
            finally:
                # A caller cancelled meanwhile does not stop the writer's thread: the connection is
                # busy until it is done, and the lock is held until then.
                await asyncio.wait([work])

    async def quick_transaction(self, script: Script[T]) -> T:
        # On the event loop's thread: a hop to the writer's thread and back costs the loop more than
        # a group commit's own work. Each hop hands the GIL over twice, and on these 2 cores that took
        # ~0.7 ms of the loop's time (bench/RESULTS.md), against ~0.8 ms for a commit of ~90 events.
        async with self._writing:
            return self._writer.call_here(_in_transaction(script, self._check_identity))

    def _check_identity(self) -> None:
        """Refuse to write unless the path still names the file this server opened."""
        if self.problem is None:
            try:
                now = _identity(self.path)
            except FileNotFoundError:
                now = None
            if now != self._identity:
                how = "deleted" if now is None else "replaced by another file"
                self.problem = (
                    f"the database file {self.path} was {how} while the server ran; nothing more is written "
                    "(it would be lost). Put the file back, or restart the server to start from what is there"
                )
        if self.problem is not None:
            raise StoreUnavailable(self.problem)


class SQLiteStore(SQLStore):
    """The store in one SQLite file."""

    exclusive = True

    def __init__(self, path: Path) -> None:
        self.database = SQLiteDatabase(path)
        super().__init__(self.database)

    def lock(self) -> None:
        self.database.lock()


def _identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino
