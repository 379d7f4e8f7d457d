"""Storage is checked, never trusted (SQLite): a database file deleted or replaced under a running
server is noticed at the next write (503, /healthz unhealthy) instead of taking acknowledged writes
into an unlinked file; a garbage or damaged file stops the server at start, naming the file."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess

import httpx
import pytest

from tether.client import TetherClient

from .conftest import IN_CI, wait_for_status
from .test_bad_input import assert_error
from .test_process import cli

pytestmark = pytest.mark.sqlite_only


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_database_file_removed_under_the_server_refuses_writes_and_says_so(server, how):
    path = server.settings.database_path
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        kept = (await http.post("/v1/threads", json={"title": "before"})).json()
        assert (await http.get("/healthz")).json()["status"] == "ok"
        os.unlink(path)
        if how == "replaced":
            sqlite3.connect(path).close()  # another, empty database at the same path
        error = assert_error(await http.post("/v1/threads", json={"title": "after"}), 503, "unavailable")
        assert how in error["message"] and str(path) in error["message"]
        health = await http.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy" and how in health.json()["problem"]
        # Reads still serve what the server has; every write keeps being refused, none is acknowledged.
        assert (await http.get(f"/v1/threads/{kept['id']}")).status_code == 200
        assert_error(await http.post(f"/v1/threads/{kept['id']}/runs", json={"input": "hi"}), 503, "unavailable")


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\x00" * 50])
async def test_a_garbage_or_truncated_database_stops_the_server_at_start_naming_it(tmp_path, content):
    data = tmp_path / "d"
    data.mkdir()
    (data / "tether.db").write_bytes(content)
    code, out, err = await cli("serve", "--port", "0", "--data-dir", str(data))
    assert code == 2, (out, err)
    assert str(data / "tether.db") in err and "not a usable Tether database" in err
    assert "Traceback" not in err and "ready" not in out


async def test_a_damaged_database_stops_the_server_at_start(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    path = data / "tether.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x TEXT)")
        db.execute("CREATE INDEX t_x ON t (x)")
        db.executemany("INSERT INTO t VALUES (?)", [(f"row {i:05d} " * 20,) for i in range(2000)])
    raw = bytearray(path.read_bytes())
    page = 4096
    for offset in range(3 * page, len(raw) - page, 7 * page):  # scribble over some pages, not the header
        raw[offset + 100 : offset + 400] = os.urandom(300)
    path.write_bytes(bytes(raw))
    code, out, err = await cli("serve", "--port", "0", "--data-dir", str(data))
    assert code == 2, (out, err)
    assert str(path) in err and "not a usable Tether database" in err and "Traceback" not in err


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs: a disk that really fills up (ENOSPC). CI runs as root; elsewhere, mounting may be
    impossible, and only then does the test skip. Ask for it before the server, so that the server
    stops before the disk goes."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        message = f"cannot mount a tmpfs here: {done.stderr.decode().strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_a_full_disk_is_a_503_that_says_so_and_writes_resume_once_there_is_room(small_disk, start_server):
    server = start_server(data_dir=small_disk / "data")
    filler = small_disk / "filler"
    async with TetherClient(server.url) as client, httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        thread = await client.create_thread()
        used = sum(f.stat().st_size for f in small_disk.rglob("*") if f.is_file())
        filler.write_bytes(b"\0" * (16 * 2**20 - used - 300_000))  # leave the run 300 KB
        run = await client.send(thread["id"], "/stream 8000")
        refused = None
        for _ in range(100):  # the run fills what is left; then writes fail
            response = await http.post("/v1/threads", json={"title": "while full"})
            if response.status_code == 503:
                refused = response.json()["error"]
                break
            await asyncio.sleep(0.1)
        assert refused is not None and "full" in refused["message"], refused
        assert (await http.get(f"/v1/threads/{thread['id']}")).status_code == 200  # reads go on
        filler.unlink()  # room again, no restart
        done = await wait_for_status(client, run["run_id"], {"completed", "failed"}, within=60)
        assert done["status"] == "completed", done
        events = [e async for e in client.stream_run(run["run_id"])]
        assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + len(events)))
        assert events[-1].data["type"] == "RUN_FINISHED"
        assert (await http.post("/v1/threads", json={"title": "after"})).status_code == 201
