"""The journal's group commit against a real SQLite file that is full (a real "database or disk is
full", not a mock): a request's commit is answered at once, a run's commit waits the outage out."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from tether.bus.memory import MemoryBus
from tether.engine.journal import Journal
from tether.events import feed_notice
from tether.store import Thread
from tether.store.db import StoreUnavailable
from tether.store.sqlite import SQLiteStore


def limit_growth(store: SQLiteStore, pages: int) -> None:
    """Let the file grow by `pages` pages at most (on a connection of the test's own: the limit is
    per connection, so it is set on the writer's, through its thread)."""

    def limit(conn: sqlite3.Connection) -> None:
        (count,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {count + pages}")

    return store.database._writer.call(limit)


async def test_a_request_is_refused_when_an_outage_begins_and_its_change_is_written_after(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tether.db")
    await store.open()
    journal = Journal(store, MemoryBus(), interval=0.002, outage_limit=60)
    await journal.start()
    try:
        thread = Thread(id=f"thr_{uuid.uuid4().hex}", title=None, created_at=time.time(), updated_at=time.time())
        await store.create_thread(thread)
        before = await store.last_feed_seq()
        await limit_growth(store, 0)
        big = "x" * 50_000  # more than the pages left: the commit fails with "database or disk is full"
        journal.feed(thread.id, None, feed_notice("thread.renamed", thread.id, title=big))
        patient = asyncio.create_task(journal.commit())
        with pytest.raises(StoreUnavailable, match="full"):
            await asyncio.wait_for(journal.commit(refuse_outage=True), 10)
        assert journal.outage is not None and not patient.done()  # a run's commit waits it out
        journal.feed(thread.id, None, feed_notice("thread.renamed", thread.id, title="later"))
        with pytest.raises(StoreUnavailable, match="once it is back"):
            await journal.commit(refuse_outage=True)  # during the outage: refused before it waits
        await limit_growth(store, 1_000_000)
        await asyncio.wait_for(patient, 30)
        await asyncio.wait_for(journal.commit(refuse_outage=True), 30)
        titles = [item.data for item in await store.read_feed(before, 10)]
        assert len(titles) == 2 and big in titles[0] and "later" in titles[1]
        assert journal.outage is None
    finally:
        await journal.stop()
        await store.close()
