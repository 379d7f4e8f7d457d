"""`tether chat` as a user runs it: a real subprocess, its input piped, against a real server."""

from __future__ import annotations

import subprocess
import sys

import httpx


def chat(url: str, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", "chat", "--url", url, *args],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_chat_streams_answers_and_asks_for_approval(server):
    done = chat(server.url, "/stream 5\n/approve buy milk\ny\n/approve no way\nnot today\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "agent> w1 w2 w3 w4 w5" in out
    assert 'approve write_note({"text": "buy milk"})?' in out
    assert "saved the note 'buy milk'" in out
    assert "agent> write_note says: The user denied this tool call: not today" in out
    assert (server.settings.data_dir / "notes.txt").read_text() == "buy milk\n"
    thread_id = done.stderr.split()[1]
    # The conversation is an ordinary thread: the API shows the same history.
    messages = httpx.get(f"{server.url}/v1/threads/{thread_id}").json()["messages"]
    assert [m["role"] for m in messages if m["role"] == "user"] == ["user"] * 3


def test_chat_continues_a_thread_and_reports_errors(server):
    first = chat(server.url, "/stream 2\n")
    thread_id = first.stderr.split()[1]
    again = chat(server.url, "/fail\n", thread_id)
    assert again.returncode == 0
    assert "! the run failed" in again.stdout
    missing = chat(server.url, "", "thr_nope")
    assert missing.returncode == 1 and "not found" in missing.stderr
