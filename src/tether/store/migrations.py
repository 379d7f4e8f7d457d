"""Versioned schema migrations for the SQLite store.

Each entry upgrades the schema by one version; `PRAGMA user_version` records
how far a database file has come. Append new migrations; never edit old ones.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: threads, runs, the per-thread event log, the global feed, checkpoints.
    """
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
    # 2: human in the loop: pending approvals and decisions on runs, the steering inbox,
    # the checkpoint each run started from (for retry), per-thread always-allowed tools.
    """
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
    # 3: crash recovery: a durable mark before and after every tool call, the model response
    # whose tool batch is in flight, how often a run was recovered, and what each checkpoint is.
    """
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
]
