"""The store's logic, written once for SQLite and PostgreSQL.

Every method is SQL run through a `Database` (see `tether.store.db`); where
the two databases need different SQL, the `Dialect` says so. Transactions
that read before they write are scripts, so they are atomic on both.

Checkpoints are stored as deltas: a checkpoint row keeps the first `keep`
messages of its parent (the thread's checkpoint before it) and adds its own,
one pydantic-ai JSON text per line (JSON text has no raw newline). A thread's
history is written about once, not once per checkpoint, and reading any
checkpoint is one recursive query that walks back only as far as it keeps.
The latest checkpoints this process wrote or read are also kept in memory
(see `tether.store.cache`): a run's start asks only which id is its
thread's latest.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from tether.errors import NotFound
from tether.events import Event, FeedItem
from tether.store import (
    ACTIVE_STATUSES,
    Attachment,
    Checkpoint,
    Claim,
    ClaimMode,
    ClientMessage,
    ClientRun,
    Decision,
    InboxItem,
    Lease,
    LeaseLost,
    PendingCall,
    Renewed,
    Run,
    RunStatus,
    Thread,
    ThreadSnapshot,
    ToolMark,
    WriteBatch,
    search,
)
from tether.store.cache import CheckpointCache
from tether.store.db import Database, Execute, InsertMany, Query, Script

log = logging.getLogger("tether.store")

_RUN_COLUMNS = (
    "id, thread_id, status, input, multitask, model, created_at, started_at, finished_at, error, "
    "pending_approvals, decisions, base_checkpoint_id, retry_of, inflight_response, recoveries, "
    "ordinal, worker, lease_epoch, lease_expires_at, released, cancel_requested, cancel_discards, usage, input_parts"
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
    "worker",
    "lease_expires_at",
    "released",
    "cancel_requested",
    "cancel_discards",
    "usage",
}
_ACTIVE = ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)
_LIVE = "'running', 'awaiting_approval'"
_THREAD_COLUMNS = (
    "id, title, created_at, updated_at, metadata, allowed_tools, "
    "(SELECT status FROM runs WHERE runs.thread_id = threads.id ORDER BY ordinal DESC LIMIT 1), user_id, agent, "
    "parent_thread_id"
)
_EVENT_COLUMNS = ("thread_id", "seq", "run_id", "type", "data")
_ATTACHMENT_COLUMNS = "id, thread_id, media_type, name, size, sha256, created_at"


def _chain(start: str) -> str:
    """A recursive query for the rows that make up one checkpoint, its oldest needed ancestor first.

    `start` is an SQL expression for the checkpoint's id. Each row: the checkpoint's own columns
    (repeated), then one link's `keep`, its added messages, and how far back it is (`depth`).
    """
    return f"""
        WITH RECURSIVE chain (id, parent_id, keep, messages, depth) AS (
            SELECT id, parent_id, keep, messages, 0 FROM checkpoints WHERE id = {start}
            UNION ALL
            SELECT c.id, c.parent_id, c.keep, c.messages, chain.depth + 1
            FROM checkpoints AS c JOIN chain ON c.id = chain.parent_id
            WHERE chain.keep > 0
        )
        SELECT head.thread_id, head.run_id, head.created_at, head.id, head.kind, chain.keep, chain.messages, chain.depth
        FROM chain JOIN checkpoints AS head ON head.id = {start}
    """


class SQLStore:
    """The Store, on any `Database`."""

    exclusive = False
    """True when one process holds the database alone (SQLite's lock file)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        d = db.dialect
        self.engine = d.name
        self._checkpoints = CheckpointCache()
        self._claimable = f"""
            SELECT r.id, r.status, r.released, r.worker FROM runs AS r
            WHERE (r.status = 'queued' AND NOT EXISTS (
                      SELECT 1 FROM runs AS o WHERE o.thread_id = r.thread_id
                      AND (o.status IN ({_LIVE}) OR (o.status = 'queued' AND o.ordinal < r.ordinal))))
               OR (r.status = 'running' AND (r.worker IS NULL OR r.lease_expires_at < {d.now}))
            ORDER BY r.created_at LIMIT ? {d.for_update} {d.skip_locked}
        """
        self._take_lease = (
            f"UPDATE runs SET status = 'running', worker = ?, lease_epoch = lease_epoch + 1, "
            f"lease_expires_at = {d.now} + ?, released = NULL WHERE id = ? RETURNING {_RUN_COLUMNS}"
        )

    @property
    def url(self) -> str:
        return self.db.url

    @property
    def problem(self) -> str | None:
        return self.db.problem

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """One write statement as its own transaction; its row count."""

        def script() -> Script[int]:
            return (yield Execute(sql, args))

        return await self.db.transaction(script())

    async def _one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        rows = await self.db.fetch(sql, args)
        return rows[0] if rows else None

    # threads

    async def create_thread(self, thread: Thread) -> None:
        def script() -> Script[None]:
            yield Execute(_INSERT_THREAD, _thread_values(thread))
            yield from _index_title(thread.id, thread.title)

        await self.db.transaction(script())

    async def create_thread_if_absent(self, thread: Thread) -> bool:
        def script() -> Script[bool]:
            count = yield Execute(_INSERT_THREAD + " ON CONFLICT (id) DO NOTHING", _thread_values(thread))
            if count == 1:
                yield from _index_title(thread.id, thread.title)
            return count == 1

        return await self.db.transaction(script())

    async def get_thread(self, thread_id: str) -> Thread | None:
        if "\x00" in thread_id:  # no id holds one (nothing stored does), and PostgreSQL cannot even compare it
            return None
        row = await self._one(f"SELECT {_THREAD_COLUMNS} FROM threads WHERE id = ?", (thread_id,))
        return _thread(row) if row else None

    async def list_threads(
        self,
        user_id: str,
        limit: int,
        before: float | None = None,
        *,
        after: tuple[float, str] | None = None,
        query: str | None = None,
    ) -> list[Thread]:
        sql = f"SELECT {_THREAD_COLUMNS} FROM threads WHERE user_id = ?"
        args: list[Any] = [user_id]
        if query is not None:
            found = search.words(query)
            if not found:
                return []  # nothing to look for (punctuation only): nothing matches
            sql += f" AND id IN ({self.db.dialect.text_match})"
            args.append(self.db.dialect.text_query(found))
        if before is not None:
            sql += " AND updated_at < ?"
            args.append(before)
        if after is not None:
            sql += " AND (updated_at < ? OR (updated_at = ? AND id < ?))"
            args += [after[0], after[0], after[1]]
        sql += " ORDER BY updated_at DESC, id DESC LIMIT ?"
        return [_thread(row) for row in await self.db.fetch(sql, (*args, limit))]

    async def update_thread(self, thread_id: str, *, title: str | None) -> None:
        def script() -> Script[None]:
            yield Execute("UPDATE threads SET title = ? WHERE id = ?", (title, thread_id))
            yield Execute("DELETE FROM thread_text WHERE thread_id = ? AND position = ?", (thread_id, search.TITLE))
            yield from _index_title(thread_id, title)

        await self.db.transaction(script())

    async def allow_tools(self, thread_id: str, tools: list[str]) -> None:
        await self._execute("UPDATE threads SET allowed_tools = ? WHERE id = ?", (json.dumps(tools), thread_id))

    async def delete_thread(self, thread_id: str) -> None:
        def script() -> Script[None]:
            yield Execute("DELETE FROM events WHERE thread_id = ?", (thread_id,))
            yield Execute("DELETE FROM threads WHERE id = ?", (thread_id,))

        await self.db.transaction(script())
        self._checkpoints.forget(thread_id)

    # runs

    async def create_run(
        self, run: Run, *, unless_active: bool = False, attachments: Sequence[Attachment] = ()
    ) -> Run | None:
        def script() -> Script[Run | None]:
            found = yield Query(f"SELECT id FROM threads WHERE id = ? {self.db.dialect.for_update}", (run.thread_id,))
            if not found:
                raise NotFound(f"thread {run.thread_id!r} not found")
            if unless_active:
                active = yield Query(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE thread_id = ? AND status IN ({_ACTIVE}) "
                    "ORDER BY ordinal LIMIT 1",
                    (run.thread_id,),
                )
                if active:
                    return _run(active[0])
            ((ordinal,),) = yield Query(
                "SELECT COALESCE(MAX(ordinal), 0) + 1 FROM runs WHERE thread_id = ?", (run.thread_id,)
            )
            run.ordinal = ordinal
            values = _run_values(run)
            marks = ", ".join("?" for _ in values)
            yield Execute(f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({marks})", values)
            for a in attachments:
                yield Execute(
                    f"INSERT INTO attachments ({_ATTACHMENT_COLUMNS}, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (a.id, a.thread_id, a.media_type, a.name, a.size, a.sha256, a.created_at, a.data),
                )
            yield Execute("UPDATE threads SET updated_at = ? WHERE id = ?", (run.created_at, run.thread_id))
            return None

        return await self.db.transaction(script())

    async def get_run(self, run_id: str) -> Run | None:
        if "\x00" in run_id:  # as in get_thread
            return None
        row = await self._one(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return _run(row) if row else None

    async def list_runs(self, thread_id: str, statuses: tuple[RunStatus, ...] | None = None) -> list[Run]:
        sql, args = f"SELECT {_RUN_COLUMNS} FROM runs WHERE thread_id = ?", (thread_id,)
        if statuses is not None:
            sql += f" AND status IN ({', '.join('?' for _ in statuses)})"
            args += statuses
        return [_run(row) for row in await self.db.fetch(sql + " ORDER BY ordinal", args)]

    async def runs_with_status(self, statuses: tuple[RunStatus, ...], user_id: str | None = None) -> list[Run]:
        marks = ", ".join("?" for _ in statuses)
        sql = f"SELECT {_RUN_COLUMNS} FROM runs WHERE status IN ({marks})"
        args: tuple[Any, ...] = statuses
        if user_id is not None:
            sql += " AND thread_id IN (SELECT id FROM threads WHERE user_id = ?)"
            args = (*statuses, user_id)
        rows = await self.db.fetch(sql + " ORDER BY created_at, id", args)
        return [_run(row) for row in rows]

    async def decide(self, run_id: str, before: dict[str, Decision], after: dict[str, Decision], resume: bool) -> bool:
        count = await self._execute(
            "UPDATE runs SET decisions = ?, status = CASE WHEN ? THEN 'running' ELSE status END, "
            "released = CASE WHEN ? THEN 'decided' ELSE released END "
            "WHERE id = ? AND status = 'awaiting_approval' AND COALESCE(decisions, '{}') = ?",
            (_json_decisions(after), resume, resume, run_id, _json_decisions(before) or "{}"),
        )
        return count == 1

    async def cancel_queued(self, run_id: str, reason: str) -> bool:
        count = await self._execute(
            "UPDATE runs SET status = 'cancelled', error = ?, finished_at = ? WHERE id = ? AND status = 'queued'",
            (reason, time.time(), run_id),
        )
        return count == 1

    async def request_cancel(self, run_id: str, reason: str, discards: bool) -> None:
        await self._execute(
            f"UPDATE runs SET cancel_requested = ?, cancel_discards = ? WHERE id = ? AND status IN ({_ACTIVE})",
            (reason, discards, run_id),
        )

    async def claim_runs(self, worker: str, lease_seconds: float, limit: int) -> list[Claim]:
        def script() -> Script[list[Claim]]:
            claims = []
            for run_id, status, released, previous in (yield Query(self._claimable, (limit,))):
                mode: ClaimMode = (
                    "start"
                    if status == "queued"
                    else "resume"
                    if released == "decided"
                    else "handover"
                    if released == "stopped"
                    else "takeover"
                )
                (row,) = yield Query(self._take_lease, (worker, lease_seconds, run_id))
                claims.append(Claim(_run(row), mode, previous))
            return claims

        return await self.db.transaction(script())

    async def claim_paused(self, run_id: str, worker: str, lease_seconds: float) -> Run | None:
        d = self.db.dialect

        def script() -> Script[Run | None]:
            rows = yield Query(
                f"UPDATE runs SET worker = ?, lease_epoch = lease_epoch + 1, lease_expires_at = {d.now} + ? "
                f"WHERE id = ? AND status = 'awaiting_approval' AND (worker IS NULL OR lease_expires_at < {d.now}) "
                f"RETURNING {_RUN_COLUMNS}",
                (worker, lease_seconds, run_id),
            )
            return _run(rows[0]) if rows else None

        return await self.db.transaction(script())

    async def renew_leases(self, leases: list[Lease], lease_seconds: float) -> dict[str, Renewed]:
        d = self.db.dialect

        def script() -> Script[dict[str, Renewed]]:
            held: dict[str, Renewed] = {}
            for lease in sorted(leases, key=lambda lease: lease.run_id):  # the order _write locks them in
                rows = yield Query(
                    f"UPDATE runs SET lease_expires_at = {d.now} + ? WHERE id = ? AND worker = ? AND lease_epoch = ? "
                    "RETURNING cancel_requested, cancel_discards, "
                    "EXISTS (SELECT 1 FROM inbox WHERE inbox.run_id = runs.id AND applied_at IS NULL)",
                    (lease_seconds, lease.run_id, lease.worker, lease.epoch),
                )
                if rows:
                    reason, discards, steered = rows[0]
                    cancel = (reason, bool(discards)) if reason is not None else None
                    held[lease.run_id] = Renewed(cancel, bool(steered))
            return held

        return await self.db.transaction(script())

    async def expire_leases(self, except_worker: str) -> int:
        return await self._execute(
            "UPDATE runs SET lease_expires_at = 0 WHERE worker IS NOT NULL AND worker <> ?", (except_worker,)
        )

    async def add_to_inbox(self, item: InboxItem) -> bool:
        def script() -> Script[bool]:
            active = yield Query(
                f"SELECT id FROM runs WHERE id = ? AND status IN ({_ACTIVE}) {self.db.dialect.for_share}",
                (item.run_id,),
            )
            if not active:
                return False
            yield Execute(
                "INSERT INTO inbox (id, run_id, input, created_at, applied_at) VALUES (?, ?, ?, ?, ?)",
                (item.id, item.run_id, item.input, item.created_at, item.applied_at),
            )
            return True

        return await self.db.transaction(script())

    async def inbox(self, run_id: str) -> list[InboxItem]:
        rows = await self.db.fetch(
            "SELECT id, run_id, input, created_at, applied_at FROM inbox WHERE run_id = ? ORDER BY created_at, id",
            (run_id,),
        )
        return [InboxItem(*row) for row in rows]

    async def tool_marks(self, run_id: str) -> list[ToolMark]:
        rows = await self.db.fetch(
            "SELECT run_id, tool_call_id, tool_name, started_at, finished_at, result FROM tool_calls WHERE run_id = ?",
            (run_id,),
        )
        return [ToolMark(*row) for row in rows]

    # attachments

    async def attachment(self, attachment_id: str, user_id: str) -> Attachment | None:
        if "\x00" in attachment_id:  # as in get_thread
            return None
        # A fork holds copies under the same ids, all in threads of the same user: any one will do.
        row = await self._one(
            f"SELECT {_ATTACHMENT_COLUMNS}, data FROM attachments "
            "WHERE id = ? AND thread_id IN (SELECT id FROM threads WHERE user_id = ?) LIMIT 1",
            (attachment_id, user_id),
        )
        return _attachment(row) if row else None

    async def attachments(self, thread_id: str) -> list[Attachment]:
        rows = await self.db.fetch(
            f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments WHERE thread_id = ? ORDER BY created_at, id", (thread_id,)
        )
        return [_attachment(row) for row in rows]

    async def attachment_data(self, thread_id: str, ids: Sequence[str]) -> dict[str, bytes]:
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        rows = await self.db.fetch(
            f"SELECT id, data FROM attachments WHERE thread_id = ? AND id IN ({marks})", (thread_id, *ids)
        )
        return {attachment_id: bytes(data) for attachment_id, data in rows}

    async def copy_attachments(self, from_thread: str, to_thread: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        marks = ", ".join("?" for _ in ids)
        await self._execute(
            f"INSERT INTO attachments ({_ATTACHMENT_COLUMNS}, data) "
            f"SELECT id, ?, media_type, name, size, sha256, created_at, data FROM attachments "
            f"WHERE thread_id = ? AND id IN ({marks})",
            (to_thread, from_thread, *ids),
        )

    # checkpoints

    async def latest_checkpoint(self, thread_id: str) -> Checkpoint | None:
        row = await self._one("SELECT MAX(id) FROM checkpoints WHERE thread_id = ?", (thread_id,))
        return await self._latest(thread_id, row[0] if row else None)

    async def get_checkpoint(self, checkpoint_id: int) -> Checkpoint | None:
        return _checkpoint(await self.db.fetch(_chain("?") + " ORDER BY depth DESC", (checkpoint_id, checkpoint_id)))

    async def _latest(self, thread_id: str, checkpoint_id: int | None) -> Checkpoint | None:
        """The thread's checkpoint `checkpoint_id`, found to be its latest: from memory if it is there."""
        if checkpoint_id is None:
            return None
        checkpoint = self._checkpoints.get(thread_id, checkpoint_id)
        if checkpoint is None:
            checkpoint = await self.get_checkpoint(checkpoint_id)
            if checkpoint is not None:
                self._checkpoints.put(checkpoint)
        return checkpoint

    async def thread_snapshot(self, thread_id: str) -> ThreadSnapshot:
        # One statement reads one snapshot of the database: the three answers agree with each other.
        # (The checkpoint is read after it by its id, which names the same history at any later time.)
        row = await self._one(
            f"SELECT (SELECT MAX(seq) FROM events WHERE thread_id = ?), "
            f"EXISTS (SELECT 1 FROM runs WHERE thread_id = ? AND status IN ({_ACTIVE})), "
            f"(SELECT MAX(id) FROM checkpoints WHERE thread_id = ?)",
            (thread_id, thread_id, thread_id),
        )
        assert row is not None
        last_seq, run_active, checkpoint_id = row
        checkpoint = await self._latest(thread_id, checkpoint_id)
        return ThreadSnapshot(last_seq=last_seq or 0, checkpoint=checkpoint, run_active=bool(run_active))

    # the event log and the feed

    async def last_seq(self, thread_id: str) -> int:
        row = await self._one("SELECT MAX(seq) FROM events WHERE thread_id = ?", (thread_id,))
        return row[0] or 0 if row else 0

    async def read_events(self, thread_id: str, after: int, limit: int, run_id: str | None = None) -> list[Event]:
        if run_id is None:
            sql = "SELECT seq, run_id, type, data FROM events WHERE thread_id = ? AND seq > ? ORDER BY seq LIMIT ?"
            args: tuple[Any, ...] = (thread_id, after, limit)
        else:
            sql = "SELECT seq, run_id, type, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?"
            args = (run_id, after, limit)
        return [Event(thread_id, seq, rid, type_, data) for seq, rid, type_, data in await self.db.fetch(sql, args)]

    async def last_feed_seq(self) -> int:
        row = await self._one("SELECT seq FROM feed_head WHERE id = 1")
        return row[0] if row else 0

    async def first_feed_seq(self) -> int:
        row = await self._one("SELECT MIN(seq) FROM feed")
        return row[0] if row and row[0] is not None else await self.last_feed_seq() + 1

    async def trim_feed(self, keep: int) -> int:
        sql = "DELETE FROM feed WHERE seq <= (SELECT seq FROM feed_head WHERE id = 1) - ?"
        return await self._execute(sql, (keep,))

    async def read_feed(self, after: int, limit: int) -> list[FeedItem]:
        rows = await self.db.fetch(
            "SELECT seq, thread_id, run_id, data, user_id FROM feed WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        )
        return [FeedItem(*row) for row in rows]

    # ids that protocol clients give

    async def add_client_run(self, run: ClientRun) -> bool:
        count = await self._execute(
            "INSERT INTO client_runs (thread_id, client_run_id, run_id, after_seq) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (thread_id, client_run_id) DO NOTHING",
            (run.thread_id, run.client_run_id, run.run_id, run.after_seq),
        )
        return count == 1

    async def client_runs(self, thread_id: str) -> list[ClientRun]:
        rows = await self.db.fetch(
            "SELECT thread_id, client_run_id, run_id, after_seq FROM client_runs WHERE thread_id = ?", (thread_id,)
        )
        return [ClientRun(*row) for row in rows]

    async def add_client_messages(self, messages: list[ClientMessage]) -> None:
        def script() -> Script[None]:
            for m in messages:
                yield Execute(
                    "INSERT INTO client_messages (thread_id, message_id, run_id, is_input) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (thread_id, message_id) DO UPDATE SET run_id = excluded.run_id, "
                    "is_input = excluded.is_input",
                    (m.thread_id, m.message_id, m.run_id, m.is_input),
                )

        await self.db.transaction(script())

    async def client_messages(self, thread_id: str) -> list[ClientMessage]:
        rows = await self.db.fetch(
            "SELECT thread_id, message_id, run_id, is_input FROM client_messages WHERE thread_id = ?", (thread_id,)
        )
        return [ClientMessage(t, m, r, bool(i)) for t, m, r, i in rows]

    async def write(self, batch: WriteBatch) -> list[FeedItem]:
        stored: list[tuple[Checkpoint, int]] = []
        feed = await self.db.quick_transaction(self._write(batch, stored))
        for checkpoint, checkpoint_id in stored:  # committed: now they have their ids
            self._checkpoints.put(replace(checkpoint, id=checkpoint_id))
        return feed

    def _write(self, batch: WriteBatch, stored: list[tuple[Checkpoint, int]]) -> Script[list[FeedItem]]:
        """The batch's statements; each checkpoint written goes to `stored` with the id it is given."""
        if batch.leases:
            # One statement for every run of the batch; its row locks are taken in one order (by run id),
            # as in every transaction that takes several: no deadlocks.
            marks = ", ".join("?" for _ in batch.leases)
            held = yield Query(
                f"SELECT id, worker, lease_epoch FROM runs WHERE id IN ({marks}) ORDER BY id "
                f"{self.db.dialect.for_share}",
                tuple(batch.leases),
            )
            current = {run_id: (worker, epoch) for run_id, worker, epoch in held}
            lost = sorted(r for r, lease in batch.leases.items() if current.get(r) != (lease.worker, lease.epoch))
            if lost:
                raise LeaseLost(lost)
        if batch.events:
            rows = [(e.thread_id, e.seq, e.run_id, e.type, e.data) for e in batch.events]
            yield InsertMany("events", _EVENT_COLUMNS, rows)
        for cp in batch.checkpoints:
            keep = _shared_prefix(cp.follows, cp.messages)
            ((checkpoint_id,),) = yield Query(
                "INSERT INTO checkpoints (thread_id, run_id, created_at, kind, keep, messages, parent_id) "
                "VALUES (?, ?, ?, ?, ?, ?, (SELECT MAX(id) FROM checkpoints WHERE thread_id = ?)) RETURNING id",
                (cp.thread_id, cp.run_id, cp.created_at, cp.kind, keep, b"\n".join(cp.messages[keep:]), cp.thread_id),
            )
            stored.append((cp, checkpoint_id))
            yield from _index_messages(cp.thread_id, cp.messages, keep, rewound=keep < len(cp.follows))
        for run_id, fields in sorted(batch.run_updates, key=lambda update: update[0]):  # stable: in order per run
            yield _run_update(run_id, fields)
        for mark in batch.tool_marks:
            yield Execute(
                "INSERT INTO tool_calls (run_id, tool_call_id, tool_name, started_at, finished_at, result) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, tool_call_id) DO UPDATE SET "
                "started_at = excluded.started_at, finished_at = excluded.finished_at, result = excluded.result",
                (mark.run_id, mark.tool_call_id, mark.tool_name, mark.started_at, mark.finished_at, mark.result),
            )
        for item_id, applied_at in batch.inbox_applied:
            yield Execute("UPDATE inbox SET applied_at = ? WHERE id = ?", (applied_at, item_id))
        if not batch.feed:
            return []
        unknown = sorted({n.thread_id for n in batch.feed if n.user_id is None})
        owners: dict[str, str] = {}
        if unknown:
            marks = ", ".join("?" for _ in unknown)
            rows = yield Query(f"SELECT id, user_id FROM threads WHERE id IN ({marks})", tuple(unknown))
            owners = dict(rows)
        # A notice about a thread deleted meanwhile has no reader left: it is dropped.
        notices = [(n, n.user_id or owners[n.thread_id]) for n in batch.feed if n.user_id or n.thread_id in owners]
        if not notices:
            return []
        # Last, so the counter's row lock is held only for the end of the transaction: feed commits take
        # turns on it, which makes feed numbers follow commit order across workers, without gaps.
        ((head,),) = yield Query("UPDATE feed_head SET seq = seq + ? WHERE id = 1 RETURNING seq", (len(notices),))
        first = head - len(notices) + 1
        items = [FeedItem(first + i, n.thread_id, n.run_id, n.data, user) for i, (n, user) in enumerate(notices)]
        yield InsertMany(
            "feed",
            ("seq", "thread_id", "run_id", "data", "user_id"),
            [(f.seq, f.thread_id, f.run_id, f.data, f.user_id) for f in items],
        )
        return items


def index_every_thread() -> Script[None]:
    """Index every thread's title and latest history (for a database made before the search index)."""
    threads = yield Query("SELECT id, title FROM threads ORDER BY id")
    for done, (thread_id, title) in enumerate(threads, start=1):
        yield Execute("DELETE FROM thread_text WHERE thread_id = ?", (thread_id,))
        yield from _index_title(thread_id, title)
        latest = "(SELECT MAX(id) FROM checkpoints WHERE thread_id = ?)"
        checkpoint = _checkpoint((yield Query(_chain(latest) + " ORDER BY depth DESC", (thread_id, thread_id))))
        if checkpoint is not None:
            yield from _index_messages(thread_id, checkpoint.messages, 0, rewound=False)
        if done % 1000 == 0:
            log.info("indexing threads for search: %d of %d", done, len(threads))


def _index_title(thread_id: str, title: str | None) -> Script[None]:
    rows = search.rows(thread_id, search.TITLE, title or "")
    if rows:
        yield InsertMany("thread_text", search.COLUMNS, rows)


def _index_messages(thread_id: str, messages: list[bytes], keep: int, *, rewound: bool) -> Script[None]:
    """Keep the search index equal to a new checkpoint. Its first `keep` messages are its parent's, indexed
    already; the rows of any later position go (a retry's rewind, a discarded answer) before its own are
    added. A step that adds no text (a tool batch, the common case) writes nothing."""
    rows = [
        row
        for position in range(keep, len(messages))
        for row in search.rows(thread_id, position, search.message_text(messages[position]))
    ]
    if rewound or rows:
        yield Execute("DELETE FROM thread_text WHERE thread_id = ? AND position >= ?", (thread_id, keep))
    if rows:
        yield InsertMany("thread_text", search.COLUMNS, rows)


def _shared_prefix(before: list[bytes], after: list[bytes]) -> int:
    """How many leading messages two histories share (the settled ones are the same objects)."""
    n = 0
    for old, new in zip(before, after, strict=False):
        if old is not new and old != new:
            break
        n += 1
    return n


def _checkpoint(rows: list[tuple[Any, ...]]) -> Checkpoint | None:
    """A checkpoint from the rows of `_chain`, oldest link first: each keeps part of the history so far
    and adds to it."""
    if not rows:
        return None
    messages: list[bytes] = []
    for *_, keep, added, _depth in rows:
        del messages[keep:]
        if added:
            messages.extend(bytes(added).split(b"\n"))
    thread_id, run_id, created_at, id_, kind = rows[0][:5]
    return Checkpoint(thread_id, run_id, messages, created_at, id=id_, kind=kind)


_INSERT_THREAD = (
    "INSERT INTO threads (id, title, created_at, updated_at, metadata, user_id, agent, parent_thread_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _thread_values(thread: Thread) -> tuple[Any, ...]:
    return (
        thread.id,
        thread.title,
        thread.created_at,
        thread.updated_at,
        json.dumps(thread.metadata),
        thread.user_id,
        thread.agent,
        thread.parent_thread_id,
    )


def _thread(row: tuple[Any, ...]) -> Thread:
    id_, title, created_at, updated_at, metadata, allowed_tools, last_run_status, user_id, agent, parent = row
    return Thread(
        id_,
        title,
        created_at,
        updated_at,
        json.loads(metadata),
        json.loads(allowed_tools),
        last_run_status,
        user_id=user_id,
        agent=agent,
        parent_thread_id=parent,
    )


def _attachment(row: tuple[Any, ...]) -> Attachment:
    """An attachment from its columns, and its bytes if they were read too."""
    return Attachment(*row[:7], data=bytes(row[7]) if len(row) > 7 else None)


def _run(row: tuple[Any, ...]) -> Run:
    (*head, pending, decisions, base_checkpoint_id, retry_of, inflight, recoveries) = row[:16]
    ordinal, worker, lease_epoch, lease_expires_at, released, cancel_requested, cancel_discards, usage, parts = row[16:]
    return Run(
        *head,
        pending_approvals=[PendingCall(**c) for c in json.loads(pending)] if pending else None,
        decisions={k: Decision(**v) for k, v in json.loads(decisions).items()} if decisions else None,
        base_checkpoint_id=base_checkpoint_id,
        retry_of=retry_of,
        inflight_response=bytes(inflight) if inflight is not None else None,
        recoveries=recoveries,
        ordinal=ordinal,
        worker=worker,
        lease_epoch=lease_epoch,
        lease_expires_at=lease_expires_at,
        released=released,
        cancel_requested=cancel_requested,
        cancel_discards=bool(cancel_discards),
        usage=json.loads(usage) if usage else None,
        parts=json.loads(parts) if parts else None,
    )


def _run_values(run: Run) -> tuple[Any, ...]:
    return (
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
        run.ordinal,
        run.worker,
        run.lease_epoch,
        run.lease_expires_at,
        run.released,
        run.cancel_requested,
        run.cancel_discards,
        json.dumps(run.usage) if run.usage is not None else None,
        json.dumps(run.parts) if run.parts is not None else None,
    )


def _json_pending(pending: list[PendingCall] | None) -> str | None:
    return None if pending is None else json.dumps([asdict(c) for c in pending])


def _json_decisions(decisions: dict[str, Decision] | None) -> str | None:
    return None if decisions is None else json.dumps({k: asdict(v) for k, v in decisions.items()}, sort_keys=True)


def _run_update(run_id: str, fields: dict[str, Any]) -> Execute:
    unknown = set(fields) - _UPDATABLE_RUN_FIELDS
    assert not unknown, f"not updatable: {unknown}"
    assignments = ", ".join(f"{name} = ?" for name in fields)
    values = [_encode_run_field(name, value) for name, value in fields.items()]
    return Execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values, run_id))


def _encode_run_field(name: str, value: Any) -> Any:
    if name == "pending_approvals":
        return _json_pending(value)
    if name == "decisions":
        return _json_decisions(value)
    if name == "usage":
        return json.dumps(value) if value is not None else None
    return value
