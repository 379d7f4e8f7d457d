"""The scale-out database: PostgreSQL through an asyncpg pool.

Several workers share one database. What keeps them apart is in the SQL the
store shares with SQLite (`tether.store.sql`): the run queue is claimed with
`FOR UPDATE SKIP LOCKED`, every group commit re-reads its runs' leases `FOR
SHARE` (a takeover must wait for it, and it sees any takeover that came
first), and the feed counter's row lock orders feed commits. asyncpg was
measured against psycopg 3 on group commits (bench/pg_drivers.py).

A connection that fails (the server restarts, the network drops) raises
`StoreUnavailable`: requests answer 503 and the journal retries its commit.
"""

from __future__ import annotations

import logging
import re
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tether.store.db import Dialect, Execute, InsertMany, Query, Script, Statement, StoreConflict, StoreUnavailable
from tether.store.migrations import MIGRATIONS
from tether.store.search import tsquery
from tether.store.sql import SQLStore

log = logging.getLogger("tether.store")

DIALECT = Dialect(
    name="postgresql",
    now="(EXTRACT(EPOCH FROM clock_timestamp())::double precision)",
    for_update="FOR UPDATE",
    skip_locked="SKIP LOCKED",
    for_share="FOR SHARE",
    text_match="SELECT thread_id FROM thread_text WHERE to_tsvector('simple', body) @@ to_tsquery('simple', ?)",
    text_query=tsquery,
)

COPY_FROM = 32
"""Rows from which COPY beats INSERT: at 100 events a commit it wrote 1.2-1.4x as many events/s as
INSERT and took less CPU; at 1-10 it costs an extra round trip (bench/pg_drivers.py)."""

MIGRATION_LOCK = 0x7E7E_0001
"""An advisory lock: workers that start together migrate one after the other."""

CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.CannotConnectNowError,
)

T = TypeVar("T")


def numbered(sql: str, _cache: dict[str, str] = {}) -> str:  # noqa: B006 (a cache on purpose)
    """`?` placeholders as PostgreSQL's `$1, $2, …` (the shared SQL has no `?` in its literals)."""
    converted = _cache.get(sql)
    if converted is None:
        parts = sql.split("?")
        converted = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))
        _cache[sql] = converted
    return converted


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = re.sub(r":[^@:]*@", ":***@", parts.netloc, count=1)
    return urlunsplit(parts._replace(netloc=netloc))


async def _execute(conn: asyncpg.Connection, statement: Statement) -> Any:
    if type(statement) is Query:
        return [tuple(row) for row in await conn.fetch(numbered(statement.sql), *statement.args)]
    if type(statement) is Execute:
        status = await conn.execute(numbered(statement.sql), *statement.args)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0
    assert type(statement) is InsertMany
    if len(statement.rows) >= COPY_FROM:
        await conn.copy_records_to_table(statement.table, records=statement.rows, columns=statement.columns)
        return None
    marks = ", ".join(f"${i}" for i in range(1, len(statement.columns) + 1))
    await conn.executemany(
        f"INSERT INTO {statement.table} ({', '.join(statement.columns)}) VALUES ({marks})", statement.rows
    )
    return None


async def _run(conn: asyncpg.Connection, script: Script[T]) -> T:
    result: Any = None
    try:
        while True:
            result = await _execute(conn, script.send(result))
    except StopIteration as done:
        return done.value
    finally:
        script.close()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return a connection to the pool as it is. asyncpg's reset (RESET ALL, UNLISTEN *, …) is a round
    trip per release, 0.75x the commits/s; Tether sets no session state and takes only transaction-scoped
    advisory locks, so there is nothing to reset."""


class PostgresDatabase:
    dialect = DIALECT
    problem = None
    """An unreachable server is an outage (StoreUnavailable, retried), not a lasting problem."""

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 10, connect_timeout: float = 5) -> None:
        self._dsn = url
        self.url = _without_password(url)
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._connect_timeout,
                reset=_keep_session,
            )
        except CONNECTION_ERRORS as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL at {self.url}: {exc}") from exc
        await self._migrate()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _migrate(self) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            while True:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                    await conn.execute("CREATE TABLE IF NOT EXISTS tether_schema (version INTEGER NOT NULL)")
                    version = await conn.fetchval("SELECT version FROM tether_schema")
                    if version is None:
                        await conn.execute("INSERT INTO tether_schema (version) VALUES (0)")
                        version = 0
                    if version > len(MIGRATIONS):
                        raise RuntimeError(
                            f"database schema version {version} is newer than this Tether knows "
                            f"({len(MIGRATIONS)}); upgrade Tether"
                        )
                    if version == len(MIGRATIONS):
                        return
                    migration = MIGRATIONS[version]
                    await conn.execute(migration.postgres)
                    if migration.data is not None:
                        await _run(conn, migration.data())
                    await conn.execute("UPDATE tether_schema SET version = $1", version + 1)
                    log.info("PostgreSQL schema migrated to version %d", version + 1)

    async def fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert self._pool is not None, "store is not open"
        try:
            return [tuple(row) for row in await self._pool.fetch(numbered(sql), *args)]
        except CONNECTION_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL at {self.url} is unreachable: {exc}") from exc

    async def transaction(self, script: Script[T]) -> T:
        assert self._pool is not None, "store is not open"
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                return await _run(conn, script)
        except (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError) as exc:
            raise StoreConflict(f"PostgreSQL rolled a transaction back: {exc}") from exc
        except CONNECTION_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL at {self.url} is unreachable: {exc}") from exc

    quick_transaction = transaction  # asyncpg runs every transaction on the event loop already


class PostgresStore(SQLStore):
    """The store in a PostgreSQL database shared by every worker."""

    def __init__(self, url: str) -> None:
        super().__init__(PostgresDatabase(url))
