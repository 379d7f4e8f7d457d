"""What a SQL store needs of its database: statements, scripts, and a dialect.

The store's logic is written once (`tether.store.sql`), as *scripts*: plain
generators that yield statements and receive their results. Each database
drives a script its own way: SQLite runs the whole script on its connection's
thread in one hop, PostgreSQL awaits each statement on one pooled connection.
So a transaction that reads, decides and writes (claim a run, check a lease,
assign feed numbers) is the same code on both, and the SQL text is the only
thing that may differ, through the `Dialect`.

SQL is written with `?` placeholders; a database that numbers them (`$1`)
converts the text.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tether.errors import Unavailable

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Query:
    """A statement whose rows the script receives (a list of tuples)."""

    sql: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Execute:
    """A statement whose row count the script receives."""

    sql: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class InsertMany:
    """Many rows into one table, in as few round trips as the database allows; the script receives None."""

    table: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


Statement = Query | Execute | InsertMany
Script = Generator[Statement, Any, T]


@dataclass(frozen=True)
class Dialect:
    """The SQL that differs between databases."""

    name: str
    now: str
    """An expression for the database's clock, in seconds since the epoch (leases use one clock for all workers)."""
    for_update: str
    """Locks the selected rows until the transaction ends ('' where transactions take turns anyway)."""
    skip_locked: str
    """Added to for_update: skip rows another transaction has locked (the run queue)."""
    for_share: str
    """Holds the selected rows unchanged until the transaction ends (the fencing check)."""
    text_match: str
    """A query for the `thread_id` of every row of the search index that matches `?` (see tether.store.search)."""
    text_query: Callable[[list[str]], str]
    """The `?` of `text_match` that finds rows holding all these words, each as the start of a word."""


class StoreUnavailable(Unavailable):
    """The database cannot be reached right now (503); the operation may succeed if tried again."""


class StoreConflict(StoreUnavailable):
    """The database rolled the transaction back to break a deadlock: trying it again is safe."""


class StoreCorrupt(RuntimeError):
    """At start: the database is not one Tether can use (not a database, or damaged); says what to do."""


class Database(Protocol):
    dialect: Dialect
    url: str
    """Where the data is, without any password (for logs and /healthz)."""
    problem: str | None
    """Why the database cannot be trusted with writes any more (None: it can). Shown by /healthz."""

    async def open(self) -> None:
        """Connect and bring the schema up to date."""
        ...

    async def close(self) -> None: ...

    async def fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One read statement, outside any transaction."""
        ...

    async def transaction(self, script: Script[T]) -> T:
        """Run `script` as one transaction: committed if it returns, rolled back if it raises."""
        ...

    async def quick_transaction(self, script: Script[T]) -> T:
        """`transaction`, for one that is small and frequent (a group commit): run where it costs least."""
        ...
