"""The embedded store: one SQLite file in WAL mode.

Two connections: one writes (every write goes through it, so SQLite never
sees two writers), one reads (WAL lets readers run beside the writer, so a
long replay never holds up a run's group commits).

`synchronous=NORMAL` in WAL mode: a committed transaction survives the
process being killed; only an OS crash or power loss can lose the last few.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from tether.events import Event, FeedItem
from tether.store import Checkpoint, Run, RunStatus, Thread, WriteBatch
from tether.store.migrations import MIGRATIONS

_RUN_COLUMNS = "id, thread_id, status, input, multitask, model, created_at, started_at, finished_at, error"
_UPDATABLE_RUN_FIELDS = {"status", "started_at", "finished_at", "error"}


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._migrate(self._writer)
        self._reader = await self._connect()

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        return conn

    @staticmethod
    async def _migrate(conn: aiosqlite.Connection) -> None:
        async with conn.execute("PRAGMA user_version") as cur:
            (version,) = await cur.fetchone()  # type: ignore[misc]
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"database schema version {version} is newer than this Tether knows ({len(MIGRATIONS)}); "
                "upgrade Tether"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction at a time: coroutines share the writer connection."""
        async with self._write_lock:
            await self._w.execute("BEGIN IMMEDIATE")
            try:
                yield self._w
            except BaseException:
                await self._w.execute("ROLLBACK")
                raise
            await self._w.execute("COMMIT")

    @property
    def _w(self) -> aiosqlite.Connection:
        assert self._writer is not None, "store is not open"
        return self._writer

    @property
    def _r(self) -> aiosqlite.Connection:
        assert self._reader is not None, "store is not open"
        return self._reader

    # threads

    async def create_thread(self, thread: Thread) -> None:
        async with self._transaction() as w:
            await w.execute(
            "INSERT INTO threads (id, title, created_at, updated_at, metadata) VALUES (?, ?, ?, ?, ?)",
                (thread.id, thread.title, thread.created_at, thread.updated_at, json.dumps(thread.metadata)),
            )

    async def get_thread(self, thread_id: str) -> Thread | None:
        async with self._r.execute(
            "SELECT id, title, created_at, updated_at, metadata FROM threads WHERE id = ?", (thread_id,)
        ) as cur:
            row = await cur.fetchone()
        return _thread(row) if row else None

    async def list_threads(self, limit: int, before: float | None = None) -> list[Thread]:
        sql = "SELECT id, title, created_at, updated_at, metadata FROM threads"
        args: tuple = ()
        if before is not None:
            sql += " WHERE updated_at < ?"
            args = (before,)
        sql += " ORDER BY updated_at DESC LIMIT ?"
        async with self._r.execute(sql, (*args, limit)) as cur:
            return [_thread(row) for row in await cur.fetchall()]

    async def update_thread(self, thread_id: str, *, title: str | None) -> None:
        async with self._transaction() as w:
            await w.execute("UPDATE threads SET title = ? WHERE id = ?", (title, thread_id))

    async def delete_thread(self, thread_id: str) -> None:
        async with self._transaction() as w:
            await w.execute("DELETE FROM events WHERE thread_id = ?", (thread_id,))
            await w.execute("DELETE FROM threads WHERE id = ?", (thread_id,))

    # runs

    async def create_run(self, run: Run) -> None:
        async with self._transaction() as w:
            await w.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.id, run.thread_id, run.status, run.input, run.multitask, run.model,
                    run.created_at, run.started_at, run.finished_at, run.error,
                ),
            )
            await w.execute(
                "UPDATE threads SET updated_at = ? WHERE id = ?", (run.created_at, run.thread_id)
            )

    async def get_run(self, run_id: str) -> Run | None:
        async with self._r.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)) as cur:
            row = await cur.fetchone()
        return Run(*row) if row else None

    async def list_runs(self, thread_id: str) -> list[Run]:
        async with self._r.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE thread_id = ? ORDER BY created_at, rowid", (thread_id,)
        ) as cur:
            return [Run(*row) for row in await cur.fetchall()]

    async def runs_with_status(self, statuses: tuple[RunStatus, ...]) -> list[Run]:
        marks = ", ".join("?" for _ in statuses)
        async with self._r.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE status IN ({marks}) ORDER BY created_at, rowid", statuses
        ) as cur:
            return [Run(*row) for row in await cur.fetchall()]

    # checkpoints

    async def latest_checkpoint(self, thread_id: str) -> Checkpoint | None:
        async with self._r.execute(
            "SELECT thread_id, run_id, messages, created_at FROM checkpoints "
            "WHERE thread_id = ? ORDER BY id DESC LIMIT 1",
            (thread_id,),
        ) as cur:
            row = await cur.fetchone()
        return Checkpoint(*row) if row else None

    # the event log and the feed

    async def last_seq(self, thread_id: str) -> int:
        async with self._r.execute("SELECT MAX(seq) FROM events WHERE thread_id = ?", (thread_id,)) as cur:
            (seq,) = await cur.fetchone()  # type: ignore[misc]
        return seq or 0

    async def read_events(
        self, thread_id: str, after: int, limit: int, run_id: str | None = None
    ) -> list[Event]:
        if run_id is None:
            sql = "SELECT seq, run_id, type, data FROM events WHERE thread_id = ? AND seq > ? ORDER BY seq LIMIT ?"
            args: tuple = (thread_id, after, limit)
        else:
            sql = "SELECT seq, run_id, type, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?"
            args = (run_id, after, limit)
        async with self._r.execute(sql, args) as cur:
            rows = await cur.fetchall()
        return [Event(thread_id, seq, rid, type_, data) for seq, rid, type_, data in rows]

    async def last_feed_seq(self) -> int:
        async with self._r.execute("SELECT MAX(seq) FROM feed") as cur:
            (seq,) = await cur.fetchone()  # type: ignore[misc]
        return seq or 0

    async def read_feed(self, after: int, limit: int) -> list[FeedItem]:
        async with self._r.execute(
            "SELECT seq, thread_id, run_id, data FROM feed WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ) as cur:
            return [FeedItem(*row) for row in await cur.fetchall()]

    async def write(self, batch: WriteBatch) -> None:
        async with self._transaction() as w:
            if batch.events:
                await w.executemany(
                    "INSERT INTO events (thread_id, seq, run_id, type, data) VALUES (?, ?, ?, ?, ?)",
                    [(e.thread_id, e.seq, e.run_id, e.type, e.data) for e in batch.events],
                )
            for cp in batch.checkpoints:
                await w.execute(
                    "INSERT INTO checkpoints (thread_id, run_id, created_at, messages) VALUES (?, ?, ?, ?)",
                    (cp.thread_id, cp.run_id, cp.created_at, cp.messages),
                )
            for run_id, fields in batch.run_updates:
                unknown = set(fields) - _UPDATABLE_RUN_FIELDS
                assert not unknown, f"not updatable: {unknown}"
                assignments = ", ".join(f"{name} = ?" for name in fields)
                await w.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*fields.values(), run_id))
            if batch.feed:
                await w.executemany(
                    "INSERT INTO feed (seq, thread_id, run_id, data) VALUES (?, ?, ?, ?)",
                    [(f.seq, f.thread_id, f.run_id, f.data) for f in batch.feed],
                )


def _thread(row: tuple) -> Thread:
    id_, title, created_at, updated_at, metadata = row
    return Thread(id_, title, created_at, updated_at, json.loads(metadata))
