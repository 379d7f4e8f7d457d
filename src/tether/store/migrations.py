"""Versioned schema migrations, one list for both stores.

Each entry upgrades the schema by one version, in one transaction: its DDL (the
SQL of each dialect) and then, if it has one, a data step written once as a
script (see `tether.store.db`). SQLite records the version in `PRAGMA
user_version`, PostgreSQL in the table `tether_schema`. Append new migrations;
never edit old ones.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from tether.store.db import Execute, Query, Script
from tether.store.sql import index_every_thread

log = logging.getLogger("tether.store")


@dataclass(frozen=True)
class Migration:
    sqlite: str
    postgres: str
    data: Callable[[], Script[None]] | None = None
    """A data step, run after the DDL in the same transaction."""


def _checkpoints_as_deltas() -> Script[None]:
    """Rewrite every stored checkpoint as what it adds to the one before it in its thread.

    Before version 4 each checkpoint held the whole history, so a thread's checkpoints grew with the
    square of its length. Now a checkpoint keeps the first `keep` messages of its parent and adds its
    own, one JSON text per line (see `tether.store.sql`)."""
    rows = yield Query("SELECT id, thread_id FROM checkpoints ORDER BY thread_id, id")
    previous_thread, previous_id, previous = None, None, []
    for done, (checkpoint_id, thread_id) in enumerate(rows, start=1):
        ((messages,),) = yield Query("SELECT messages FROM checkpoints WHERE id = ?", (checkpoint_id,))
        lines = [json.dumps(m, separators=(",", ":"), ensure_ascii=False).encode() for m in json.loads(messages)]
        if thread_id != previous_thread:
            previous_id, previous = None, []
        keep = 0
        while keep < min(len(lines), len(previous)) and lines[keep] == previous[keep]:
            keep += 1
        yield Execute(
            "UPDATE checkpoints SET parent_id = ?, keep = ?, messages = ? WHERE id = ?",
            (previous_id, keep, b"\n".join(lines[keep:]), checkpoint_id),
        )
        previous_thread, previous_id, previous = thread_id, checkpoint_id, lines
        if done % 1000 == 0:
            log.info("migrating checkpoints to deltas: %d of %d", done, len(rows))


_USERS_AND_AGENTS = """
ALTER TABLE threads ADD COLUMN user_id TEXT NOT NULL DEFAULT 'default';
ALTER TABLE threads ADD COLUMN agent TEXT;
CREATE INDEX threads_by_user ON threads (user_id, updated_at DESC);
ALTER TABLE feed ADD COLUMN user_id TEXT NOT NULL DEFAULT 'default';
"""

_CLIENT_IDS = """
CREATE TABLE client_runs (
    thread_id      TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    client_run_id  TEXT NOT NULL,
    run_id         TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    after_seq      BIGINT NOT NULL,
    PRIMARY KEY (thread_id, client_run_id)
);
CREATE TABLE client_messages (
    thread_id   TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    message_id  TEXT NOT NULL,
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    is_input    BOOLEAN NOT NULL,
    PRIMARY KEY (thread_id, message_id)
);
CREATE INDEX client_runs_by_run ON client_runs (run_id);
CREATE INDEX client_messages_by_run ON client_messages (run_id);
"""

_BRANCHES_AND_USAGE = """
ALTER TABLE threads ADD COLUMN parent_thread_id TEXT REFERENCES threads (id) ON DELETE SET NULL;
CREATE INDEX threads_by_parent ON threads (parent_thread_id);
DROP INDEX threads_by_user;
CREATE INDEX threads_by_user ON threads (user_id, updated_at DESC, id DESC);
ALTER TABLE runs ADD COLUMN usage TEXT;
"""

_ATTACHMENTS = """
CREATE TABLE attachments (
    thread_id   TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    name        TEXT,
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  {real} NOT NULL,
    data        {blob} NOT NULL,
    PRIMARY KEY (thread_id, id)
);
CREATE INDEX attachments_by_id ON attachments (id);
ALTER TABLE runs ADD COLUMN input_parts TEXT;
"""


MIGRATIONS: list[Migration] = [
    # 1: threads, runs, the per-thread event log, the global feed, checkpoints.
    Migration(
        sqlite="""
        CREATE TABLE threads (
            id          TEXT PRIMARY KEY,
            title       TEXT,
            created_at  REAL NOT NULL,
            updated_at  REAL NOT NULL,
            metadata    TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX threads_by_recent ON threads (updated_at DESC);

        CREATE TABLE runs (
            id           TEXT PRIMARY KEY,
            thread_id    TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
            status       TEXT NOT NULL,
            input        TEXT NOT NULL,
            multitask    TEXT NOT NULL,
            model        TEXT,
            created_at   REAL NOT NULL,
            started_at   REAL,
            finished_at  REAL,
            error        TEXT
        );
        CREATE INDEX runs_by_thread ON runs (thread_id, created_at);
        CREATE INDEX runs_by_status ON runs (status);

        CREATE TABLE events (
            thread_id  TEXT NOT NULL,
            seq        INTEGER NOT NULL,
            run_id     TEXT NOT NULL,
            type       TEXT NOT NULL,
            data       TEXT NOT NULL,
            PRIMARY KEY (thread_id, seq)
        ) WITHOUT ROWID;
        CREATE INDEX events_by_run ON events (run_id, seq);

        CREATE TABLE feed (
            seq        INTEGER PRIMARY KEY,
            thread_id  TEXT NOT NULL,
            run_id     TEXT,
            data       TEXT NOT NULL
        );

        CREATE TABLE checkpoints (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            thread_id   TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
            run_id      TEXT,
            created_at  REAL NOT NULL,
            messages    BLOB NOT NULL
        );
        CREATE INDEX checkpoints_by_thread ON checkpoints (thread_id, id);
        """,
        postgres="""
        CREATE TABLE threads (
            id          TEXT PRIMARY KEY,
            title       TEXT,
            created_at  DOUBLE PRECISION NOT NULL,
            updated_at  DOUBLE PRECISION NOT NULL,
            metadata    TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX threads_by_recent ON threads (updated_at DESC);

        CREATE TABLE runs (
            id           TEXT PRIMARY KEY,
            thread_id    TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
            status       TEXT NOT NULL,
            input        TEXT NOT NULL,
            multitask    TEXT NOT NULL,
            model        TEXT,
            created_at   DOUBLE PRECISION NOT NULL,
            started_at   DOUBLE PRECISION,
            finished_at  DOUBLE PRECISION,
            error        TEXT
        );
        CREATE INDEX runs_by_thread ON runs (thread_id, created_at);
        CREATE INDEX runs_by_status ON runs (status);

        CREATE TABLE events (
            thread_id  TEXT NOT NULL,
            seq        BIGINT NOT NULL,
            run_id     TEXT NOT NULL,
            type       TEXT NOT NULL,
            data       TEXT NOT NULL,
            PRIMARY KEY (thread_id, seq)
        );
        CREATE INDEX events_by_run ON events (run_id, seq);

        CREATE TABLE feed (
            seq        BIGINT PRIMARY KEY,
            thread_id  TEXT NOT NULL,
            run_id     TEXT,
            data       TEXT NOT NULL
        );

        CREATE TABLE checkpoints (
            id          BIGSERIAL PRIMARY KEY,
            thread_id   TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
            run_id      TEXT,
            created_at  DOUBLE PRECISION NOT NULL,
            messages    BYTEA NOT NULL
        );
        CREATE INDEX checkpoints_by_thread ON checkpoints (thread_id, id);
        """,
    ),
    # 2: human in the loop: pending approvals and decisions on runs, the steering inbox,
    # the checkpoint each run started from (for retry), per-thread always-allowed tools.
    Migration(
        sqlite="""
        ALTER TABLE runs ADD COLUMN pending_approvals TEXT;
        ALTER TABLE runs ADD COLUMN decisions TEXT;
        ALTER TABLE runs ADD COLUMN base_checkpoint_id INTEGER;
        ALTER TABLE runs ADD COLUMN retry_of TEXT;
        ALTER TABLE threads ADD COLUMN allowed_tools TEXT NOT NULL DEFAULT '[]';

        CREATE TABLE inbox (
            id          TEXT PRIMARY KEY,
            run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            input       TEXT NOT NULL,
            created_at  REAL NOT NULL,
            applied_at  REAL
        );
        CREATE INDEX inbox_by_run ON inbox (run_id, created_at);
        """,
        postgres="""
        ALTER TABLE runs ADD COLUMN pending_approvals TEXT;
        ALTER TABLE runs ADD COLUMN decisions TEXT;
        ALTER TABLE runs ADD COLUMN base_checkpoint_id BIGINT;
        ALTER TABLE runs ADD COLUMN retry_of TEXT;
        ALTER TABLE threads ADD COLUMN allowed_tools TEXT NOT NULL DEFAULT '[]';

        CREATE TABLE inbox (
            id          TEXT PRIMARY KEY,
            run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            input       TEXT NOT NULL,
            created_at  DOUBLE PRECISION NOT NULL,
            applied_at  DOUBLE PRECISION
        );
        CREATE INDEX inbox_by_run ON inbox (run_id, created_at);
        """,
    ),
    # 3: crash recovery: a durable mark before and after every tool call, the model response
    # whose tool batch is in flight, how often a run was recovered, and what each checkpoint is.
    Migration(
        sqlite="""
        CREATE TABLE tool_calls (
            run_id        TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            tool_call_id  TEXT NOT NULL,
            tool_name     TEXT NOT NULL,
            started_at    REAL NOT NULL,
            finished_at   REAL,
            result        TEXT,
            PRIMARY KEY (run_id, tool_call_id)
        );
        ALTER TABLE runs ADD COLUMN inflight_response BLOB;
        ALTER TABLE runs ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE checkpoints ADD COLUMN kind TEXT NOT NULL DEFAULT 'step';
        """,
        postgres="""
        CREATE TABLE tool_calls (
            run_id        TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            tool_call_id  TEXT NOT NULL,
            tool_name     TEXT NOT NULL,
            started_at    DOUBLE PRECISION NOT NULL,
            finished_at   DOUBLE PRECISION,
            result        TEXT,
            PRIMARY KEY (run_id, tool_call_id)
        );
        ALTER TABLE runs ADD COLUMN inflight_response BYTEA;
        ALTER TABLE runs ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE checkpoints ADD COLUMN kind TEXT NOT NULL DEFAULT 'step';
        """,
    ),
    # 4: several workers. Leases on runs (who executes a run, until when, and a fencing epoch that
    # every takeover raises), durable cancel requests, why a lease was given back, a per-thread run
    # order, one running-or-paused run per thread enforced by an index, a feed counter whose row lock
    # makes feed numbers follow commit order, and checkpoints stored as deltas.
    Migration(
        sqlite="""
        ALTER TABLE runs ADD COLUMN ordinal INTEGER;
        ALTER TABLE runs ADD COLUMN worker TEXT;
        ALTER TABLE runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE runs ADD COLUMN lease_expires_at REAL;
        ALTER TABLE runs ADD COLUMN released TEXT;
        ALTER TABLE runs ADD COLUMN cancel_requested TEXT;
        ALTER TABLE runs ADD COLUMN cancel_discards INTEGER NOT NULL DEFAULT 0;
        UPDATE runs SET ordinal = o.n
        FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY thread_id ORDER BY created_at, rowid) AS n FROM runs) AS o
        WHERE o.id = runs.id;
        CREATE UNIQUE INDEX runs_in_order ON runs (thread_id, ordinal);
        CREATE UNIQUE INDEX one_live_run_per_thread ON runs (thread_id)
            WHERE status IN ('running', 'awaiting_approval');

        CREATE TABLE feed_head (
            id   INTEGER PRIMARY KEY CHECK (id = 1),
            seq  INTEGER NOT NULL
        );
        INSERT INTO feed_head (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM feed;

        ALTER TABLE checkpoints ADD COLUMN parent_id INTEGER;
        ALTER TABLE checkpoints ADD COLUMN keep INTEGER NOT NULL DEFAULT 0;
        """,
        postgres="""
        ALTER TABLE runs ADD COLUMN ordinal INTEGER;
        ALTER TABLE runs ADD COLUMN worker TEXT;
        ALTER TABLE runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE runs ADD COLUMN lease_expires_at DOUBLE PRECISION;
        ALTER TABLE runs ADD COLUMN released TEXT;
        ALTER TABLE runs ADD COLUMN cancel_requested TEXT;
        ALTER TABLE runs ADD COLUMN cancel_discards BOOLEAN NOT NULL DEFAULT FALSE;
        UPDATE runs SET ordinal = o.n
        FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY thread_id ORDER BY created_at, id) AS n FROM runs) AS o
        WHERE o.id = runs.id;
        CREATE UNIQUE INDEX runs_in_order ON runs (thread_id, ordinal);
        CREATE UNIQUE INDEX one_live_run_per_thread ON runs (thread_id)
            WHERE status IN ('running', 'awaiting_approval');

        CREATE TABLE feed_head (
            id   INTEGER PRIMARY KEY CHECK (id = 1),
            seq  BIGINT NOT NULL
        );
        INSERT INTO feed_head (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM feed;

        ALTER TABLE checkpoints ADD COLUMN parent_id BIGINT;
        ALTER TABLE checkpoints ADD COLUMN keep INTEGER NOT NULL DEFAULT 0;
        """,
        data=_checkpoints_as_deltas,
    ),
    # 5: users and agents. A thread belongs to the user who created it (threads made before users
    # existed belong to the user "default", the one user of a server without a users file) and is
    # answered by one agent (NULL: the server's first agent). Each feed item names the thread's user,
    # so that a user's feed shows only their own threads.
    Migration(
        sqlite=_USERS_AND_AGENTS,
        postgres=_USERS_AND_AGENTS,
    ),
    # 6: the ids protocol clients give (AG-UI, the AI SDK). A client's runId names one stretch of a Tether
    # run (from its RUN_STARTED to its next terminal event), the events after `after_seq`; a client's own
    # id for a user message it sent names the run whose input it became (`is_input`: the message that
    # run's user-message events stand for; the others were merged into it).
    Migration(
        sqlite=_CLIENT_IDS,
        postgres=_CLIENT_IDS,
    ),
    # 7: search, branches and usage. The search index holds the words of each thread's title and of the
    # user's and the model's messages in its latest history (tether.store.search), one row per message
    # position (and per 2,000 words), matched by FTS5 on SQLite and by a GIN index of `to_tsvector` on
    # PostgreSQL; existing threads are indexed here. A thread forked from another names it (the link
    # goes when the parent is deleted); thread lists page by (updated_at, id); a run keeps its usage.
    Migration(
        sqlite=_BRANCHES_AND_USAGE
        + """
        CREATE TABLE thread_text (
            id        INTEGER PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
            position  INTEGER NOT NULL,
            part      INTEGER NOT NULL,
            body      TEXT NOT NULL,
            UNIQUE (thread_id, position, part)
        );
        CREATE VIRTUAL TABLE thread_words USING fts5(
            body, content='thread_text', content_rowid='id', tokenize='unicode61 remove_diacritics 0'
        );
        CREATE TRIGGER thread_text_added AFTER INSERT ON thread_text BEGIN
            INSERT INTO thread_words (rowid, body) VALUES (new.id, new.body);
        END;
        CREATE TRIGGER thread_text_removed AFTER DELETE ON thread_text BEGIN
            INSERT INTO thread_words (thread_words, rowid, body) VALUES ('delete', old.id, old.body);
        END;
        CREATE TRIGGER thread_text_changed AFTER UPDATE ON thread_text BEGIN
            INSERT INTO thread_words (thread_words, rowid, body) VALUES ('delete', old.id, old.body);
            INSERT INTO thread_words (rowid, body) VALUES (new.id, new.body);
        END;
        """,
        postgres=_BRANCHES_AND_USAGE
        + """
        CREATE TABLE thread_text (
            id        BIGSERIAL PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
            position  INTEGER NOT NULL,
            part      INTEGER NOT NULL,
            body      TEXT NOT NULL,
            UNIQUE (thread_id, position, part)
        );
        CREATE INDEX thread_words ON thread_text USING GIN (to_tsvector('simple', body));
        """,
        data=index_every_thread,
    ),
    # 8: attachments. The bytes of a message's images and files, stored once, in the thread they were sent
    # to (a fork copies the ones its history holds); the event log and the checkpoints hold only a
    # reference to them (tether.attachments). A run whose message has attachments keeps its parts (text,
    # references) beside its text `input`.
    Migration(
        sqlite=_ATTACHMENTS.format(real="REAL", blob="BLOB"),
        postgres=_ATTACHMENTS.format(real="DOUBLE PRECISION", blob="BYTEA"),
    ),
]
