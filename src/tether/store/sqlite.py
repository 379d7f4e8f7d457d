"""The embedded store: one SQLite file in WAL mode.

Two connections, each on its own thread: one writes (every write goes through
it, so SQLite never sees two writers), one reads (WAL lets readers run beside
the writer, so a long replay never holds up a run's group commits). Each write
transaction and each read is one function run on its connection's thread: one
hop there and back, however many statements it has. (A hop per statement made
the writer and the event loop hand the GIL to each other several times per
group commit.)

`synchronous=NORMAL` in WAL mode: a committed transaction survives the
process being killed; only an OS crash or power loss can lose the last few.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any, TypeVar

from tether.events import Event, FeedItem
from tether.store import (
    ACTIVE_STATUSES,
    Checkpoint,
    Decision,
    InboxItem,
    PendingCall,
    Run,
    RunStatus,
    Thread,
    ThreadSnapshot,
    ToolMark,
    WriteBatch,
)
from tether.store.migrations import MIGRATIONS

_RUN_COLUMNS = (
    "id, thread_id, status, input, multitask, model, created_at, started_at, finished_at, error, "
    "pending_approvals, decisions, base_checkpoint_id, retry_of, inflight_response, recoveries"
)
_UPDATABLE_RUN_FIELDS = {
    "status",
    "started_at",
    "finished_at",
    "error",
    "pending_approvals",
    "decisions",
    "base_checkpoint_id",
    "inflight_response",
    "recoveries",
}
_ACTIVE = ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)
_CHECKPOINT_COLUMNS = "thread_id, run_id, messages, created_at, id, kind"
_THREAD_COLUMNS = (
    "id, title, created_at, updated_at, metadata, allowed_tools, "
    "(SELECT status FROM runs WHERE runs.thread_id = threads.id ORDER BY created_at DESC, rowid DESC LIMIT 1)"
)


MIN_SQLITE = (3, 38)  # the ->> JSON operator


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

    async def close(self) -> None:
        if self._conn is not None:
            await self.call(sqlite3.Connection.close)
            self._conn = None
        self._executor.shutdown(wait=False)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this Tether knows ({len(MIGRATIONS)}); upgrade Tether"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")


def _in_transaction(work: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """`work` as one write transaction: committed if it returns, rolled back if it raises."""

    def transaction(conn: sqlite3.Connection) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
        except BaseException:
            if conn.in_transaction:  # SQLite has already rolled back on some errors (a full disk)
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    return transaction


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_file: IO[str] | None = None
        self._writer = ThreadConnection("tether-sqlite-writer")
        self._reader = ThreadConnection("tether-sqlite-reader")

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
                f"another Tether process (pid {holder}) is using {self.path.parent}; stop it, or give this one "
                "its own --data-dir"
            ) from None
        lock_file.truncate(0)
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        self._lock_file = lock_file

    async def open(self) -> None:
        self.lock()
        await self._writer.open(self.path)
        await self._writer.call(_migrate)
        await self._reader.open(self.path)

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(conn)` as one write transaction on the writer's thread."""
        return await self._writer.call(_in_transaction(work))

    async def _all(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Run a read as one call on the reader's thread: execute, fetch all, finish the statement.

        A statement left open across an await would keep the reader's snapshot (its WAL read
        transaction) alive, and queries of other coroutines would see stale data.
        """
        return await self._reader.call(lambda conn: conn.execute(sql, args).fetchall())

    async def _one(self, sql: str, args: tuple = ()) -> tuple | None:
        rows = await self._all(sql, args)
        return rows[0] if rows else None

    # threads

    async def create_thread(self, thread: Thread) -> None:
        args = (thread.id, thread.title, thread.created_at, thread.updated_at, json.dumps(thread.metadata))
        await self._write(
            lambda w: w.execute(
                "INSERT INTO threads (id, title, created_at, updated_at, metadata) VALUES (?, ?, ?, ?, ?)", args
            )
        )

    async def get_thread(self, thread_id: str) -> Thread | None:
        row = await self._one(f"SELECT {_THREAD_COLUMNS} FROM threads WHERE id = ?", (thread_id,))
        return _thread(row) if row else None

    async def list_threads(self, limit: int, before: float | None = None) -> list[Thread]:
        sql = f"SELECT {_THREAD_COLUMNS} FROM threads"
        args: tuple = ()
        if before is not None:
            sql += " WHERE updated_at < ?"
            args = (before,)
        sql += " ORDER BY updated_at DESC LIMIT ?"
        return [_thread(row) for row in await self._all(sql, (*args, limit))]

    async def update_thread(self, thread_id: str, *, title: str | None) -> None:
        await self._write(lambda w: w.execute("UPDATE threads SET title = ? WHERE id = ?", (title, thread_id)))

    async def allow_tools(self, thread_id: str, tools: list[str]) -> None:
        args = (json.dumps(tools), thread_id)
        await self._write(lambda w: w.execute("UPDATE threads SET allowed_tools = ? WHERE id = ?", args))

    async def delete_thread(self, thread_id: str) -> None:
        def delete(w: sqlite3.Connection) -> None:
            w.execute("DELETE FROM events WHERE thread_id = ?", (thread_id,))
            w.execute("DELETE FROM threads WHERE id = ?", (thread_id,))

        await self._write(delete)

    # runs

    async def create_run(self, run: Run) -> None:
        def create(w: sqlite3.Connection) -> None:
            w.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.id,
                    run.thread_id,
                    run.status,
                    run.input,
                    run.multitask,
                    run.model,
                    run.created_at,
                    run.started_at,
                    run.finished_at,
                    run.error,
                    _json_pending(run.pending_approvals),
                    _json_decisions(run.decisions),
                    run.base_checkpoint_id,
                    run.retry_of,
                    run.inflight_response,
                    run.recoveries,
                ),
            )
            w.execute("UPDATE threads SET updated_at = ? WHERE id = ?", (run.created_at, run.thread_id))

        await self._write(create)

    async def get_run(self, run_id: str) -> Run | None:
        row = await self._one(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return _run(row) if row else None

    async def list_runs(self, thread_id: str) -> list[Run]:
        rows = await self._all(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE thread_id = ? ORDER BY created_at, rowid", (thread_id,)
        )
        return [_run(row) for row in rows]

    async def runs_with_status(self, statuses: tuple[RunStatus, ...]) -> list[Run]:
        marks = ", ".join("?" for _ in statuses)
        rows = await self._all(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE status IN ({marks}) ORDER BY created_at, rowid", statuses
        )
        return [_run(row) for row in rows]

    async def decide(self, run_id: str, before: dict[str, Decision], after: dict[str, Decision], resume: bool) -> bool:
        args = (_json_decisions(after), resume, run_id, _json_decisions(before) or "{}")
        cur = await self._write(
            lambda w: w.execute(
                "UPDATE runs SET decisions = ?, status = CASE WHEN ? THEN 'running' ELSE status END "
                "WHERE id = ? AND status = 'awaiting_approval' AND COALESCE(decisions, '{}') = ?",
                args,
            )
        )
        return cur.rowcount == 1

    async def add_to_inbox(self, item: InboxItem) -> None:
        args = (item.id, item.run_id, item.input, item.created_at, item.applied_at)
        await self._write(
            lambda w: w.execute(
                "INSERT INTO inbox (id, run_id, input, created_at, applied_at) VALUES (?, ?, ?, ?, ?)", args
            )
        )

    async def inbox(self, run_id: str) -> list[InboxItem]:
        rows = await self._all(
            "SELECT id, run_id, input, created_at, applied_at FROM inbox WHERE run_id = ? ORDER BY created_at, rowid",
            (run_id,),
        )
        return [InboxItem(*row) for row in rows]

    async def tool_marks(self, run_id: str) -> list[ToolMark]:
        rows = await self._all(
            "SELECT run_id, tool_call_id, tool_name, started_at, finished_at, result FROM tool_calls WHERE run_id = ?",
            (run_id,),
        )
        return [ToolMark(*row) for row in rows]

    # checkpoints

    async def latest_checkpoint(self, thread_id: str) -> Checkpoint | None:
        row = await self._one(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE thread_id = ? ORDER BY id DESC LIMIT 1",
            (thread_id,),
        )
        return Checkpoint(*row) if row else None

    async def thread_snapshot(self, thread_id: str) -> ThreadSnapshot:
        # One statement reads one snapshot of the database: the three answers agree with each other.
        row = await self._one(
            f"SELECT (SELECT MAX(seq) FROM events WHERE thread_id = ?1), "
            f"EXISTS(SELECT 1 FROM runs WHERE thread_id = ?1 AND status IN ({_ACTIVE})), c.* "
            f"FROM (SELECT 1) LEFT JOIN (SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints "
            f"WHERE thread_id = ?1 ORDER BY id DESC LIMIT 1) AS c",
            (thread_id,),
        )
        assert row is not None
        checkpoint = Checkpoint(*row[2:]) if row[2] is not None else None
        return ThreadSnapshot(last_seq=row[0] or 0, checkpoint=checkpoint, run_active=bool(row[1]))

    async def get_checkpoint(self, checkpoint_id: int) -> Checkpoint | None:
        row = await self._one(f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE id = ?", (checkpoint_id,))
        return Checkpoint(*row) if row else None

    # the event log and the feed

    async def last_seq(self, thread_id: str) -> int:
        row = await self._one("SELECT MAX(seq) FROM events WHERE thread_id = ?", (thread_id,))
        return row[0] or 0 if row else 0

    async def read_events(self, thread_id: str, after: int, limit: int, run_id: str | None = None) -> list[Event]:
        if run_id is None:
            sql = "SELECT seq, run_id, type, data FROM events WHERE thread_id = ? AND seq > ? ORDER BY seq LIMIT ?"
            args: tuple = (thread_id, after, limit)
        else:
            sql = "SELECT seq, run_id, type, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?"
            args = (run_id, after, limit)
        return [Event(thread_id, seq, rid, type_, data) for seq, rid, type_, data in await self._all(sql, args)]

    async def last_feed_seq(self) -> int:
        row = await self._one("SELECT MAX(seq) FROM feed")
        return row[0] or 0 if row else 0

    async def read_feed(self, after: int, limit: int) -> list[FeedItem]:
        rows = await self._all(
            "SELECT seq, thread_id, run_id, data FROM feed WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        )
        return [FeedItem(*row) for row in rows]

    async def write(self, batch: WriteBatch) -> None:
        # Encoded here, on the event loop, so the writer's thread holds the GIL as little as it can.
        events = json.dumps([(e.thread_id, e.seq, e.run_id, e.type, e.data) for e in batch.events])
        run_updates = []
        for run_id, fields in batch.run_updates:
            unknown = set(fields) - _UPDATABLE_RUN_FIELDS
            assert not unknown, f"not updatable: {unknown}"
            assignments = ", ".join(f"{name} = ?" for name in fields)
            values = [_encode_run_field(name, value) for name, value in fields.items()]
            run_updates.append((f"UPDATE runs SET {assignments} WHERE id = ?", (*values, run_id)))
        await self._write(lambda w: _write_batch(w, batch, events, run_updates))


def _write_batch(w: sqlite3.Connection, batch: WriteBatch, events: str, run_updates: list[tuple[str, tuple]]) -> None:
    if batch.events:
        # One statement for the whole batch: executemany releases and retakes the GIL for every row,
        # and with a busy event loop each retake can wait a whole switch interval.
        w.execute(
            "INSERT INTO events (thread_id, seq, run_id, type, data) "
            "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(?)",
            (events,),
        )
    for cp in batch.checkpoints:
        w.execute(
            "INSERT INTO checkpoints (thread_id, run_id, created_at, messages, kind) VALUES (?, ?, ?, ?, ?)",
            (cp.thread_id, cp.run_id, cp.created_at, cp.messages, cp.kind),
        )
    for sql, args in run_updates:
        w.execute(sql, args)
    for mark in batch.tool_marks:
        w.execute(
            "INSERT INTO tool_calls (run_id, tool_call_id, tool_name, started_at, finished_at, result) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, tool_call_id) DO UPDATE SET "
            "started_at = excluded.started_at, finished_at = excluded.finished_at, result = excluded.result",
            (mark.run_id, mark.tool_call_id, mark.tool_name, mark.started_at, mark.finished_at, mark.result),
        )
    if batch.inbox_applied:
        w.executemany("UPDATE inbox SET applied_at = ? WHERE id = ?", [(ts, id_) for id_, ts in batch.inbox_applied])
    if batch.feed:
        w.executemany(
            "INSERT INTO feed (seq, thread_id, run_id, data) VALUES (?, ?, ?, ?)",
            [(f.seq, f.thread_id, f.run_id, f.data) for f in batch.feed],
        )


def _thread(row: tuple) -> Thread:
    id_, title, created_at, updated_at, metadata, allowed_tools, last_run_status = row
    return Thread(id_, title, created_at, updated_at, json.loads(metadata), json.loads(allowed_tools), last_run_status)


def _run(row: tuple) -> Run:
    *head, pending, decisions, base_checkpoint_id, retry_of, inflight_response, recoveries = row
    return Run(
        *head,
        pending_approvals=[PendingCall(**c) for c in json.loads(pending)] if pending else None,
        decisions={k: Decision(**v) for k, v in json.loads(decisions).items()} if decisions else None,
        base_checkpoint_id=base_checkpoint_id,
        retry_of=retry_of,
        inflight_response=inflight_response,
        recoveries=recoveries,
    )


def _json_pending(pending: list[PendingCall] | None) -> str | None:
    return None if pending is None else json.dumps([asdict(c) for c in pending])


def _json_decisions(decisions: dict[str, Decision] | None) -> str | None:
    return None if decisions is None else json.dumps({k: asdict(v) for k, v in decisions.items()}, sort_keys=True)


def _encode_run_field(name: str, value: Any) -> Any:
    if name == "pending_approvals":
        return _json_pending(value)
    if name == "decisions":
        return _json_decisions(value)
    return value
