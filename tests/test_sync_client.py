"""`tether.Client`, the synchronous client: the same calls as the async one, and streams that resume by
themselves across a server killed and restarted, or give up with a clear error."""

from __future__ import annotations

import signal
import socket

import pytest
from ag_ui.core import RunFinishedEvent, TextMessageContentEvent

import tether
from tether.client import Reconnect, StreamLost, TetherError
from tether.transcript import comparable, fold

from .conftest import notes


def test_a_round_trip_with_an_approval(server):
    with tether.Client(server.url) as client:
        thread = client.create_thread("from sync python")
        assert thread["title"] == "from sync python" and client.get_thread(thread["id"])["status"] == "idle"
        run = client.send(thread["id"], "/approve buy milk")
        paused = []
        for event in client.stream(run["run_id"]):
            paused.append(event)
            if event.type == "RUN_FINISHED":
                break  # a pause: the run stream would go on after the decision
        assert isinstance(paused[-1].event, RunFinishedEvent) and paused[-1].data["outcome"]["type"] == "interrupt"
        [call] = client.get_run(run["run_id"])["pending_approvals"]
        assert client.decide(run["run_id"], {call["tool_call_id"]: {"approved": True}})["status"] == "running"
        rest = list(client.stream(run["run_id"], after=paused[-1].seq))
        assert [e.seq for e in rest] == list(range(paused[-1].seq + 1, paused[-1].seq + 1 + len(rest)))
        assert rest[-1].type == "RUN_FINISHED" and client.get_run(run["run_id"])["status"] == "completed"
        deltas = [e.event for e in rest if e.type == "TEXT_MESSAGE_CONTENT"]
        assert all(isinstance(d, TextMessageContentEvent) for d in deltas)
        assert "saved the note" in "".join(d.delta for d in deltas)
        assert notes(server.settings.data_dir) == ["buy milk"]
        assert [t["id"] for t in client.list_threads()] == [thread["id"]]
        with pytest.raises(TetherError) as refused:
            client.cancel(run["run_id"])
        assert (refused.value.status, refused.value.code) == (409, "run_ended")
        client.delete_thread(thread["id"])
        with pytest.raises(TetherError) as missing:
            client.get_thread(thread["id"])
        assert (missing.value.status, missing.value.code) == (404, "not_found")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.server
def test_a_stream_resumes_by_itself_across_a_sigkill_restart(tether_process):
    port = str(free_port())  # the restarted server must answer at the same address
    server = tether_process("--port", port, "--lease", "2").start()
    events = []
    with tether.Client(server.url) as client:
        thread = client.create_thread()
        run = client.send(thread["id"], "/stream 60 ms=40")
        for event in client.stream(run["run_id"]):
            events.append(event)
            if len(events) == 12:
                server.stop(signal.SIGKILL)
                tether_process("--port", port, "--lease", "2", data_dir=server.data_dir).start()
        seqs = [e.seq for e in events]
        assert seqs == sorted(set(seqs)) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # once each, in order
        assert events[-1].type == "RUN_FINISHED" and client.get_run(run["run_id"])["status"] == "completed"
        assert "MESSAGES_SNAPSHOT" in [e.type for e in events[12:]]  # the run resumed from its checkpoint
        words = " ".join(f"w{i}" for i in range(1, 61))
        transcript = fold([e.data for e in events])
        assert [m["content"] for m in transcript if m["role"] == "assistant"] == [words]
        assert comparable(transcript) == comparable(client.get_thread(thread["id"])["messages"])


@pytest.mark.server
def test_a_stream_gives_up_with_a_clear_error_when_the_server_stays_away(tether_process):
    server = tether_process().start()
    with tether.Client(server.url, reconnect=Reconnect(attempts=3, first_delay=0.05)) as client:
        run = client.send(client.create_thread()["id"], "/stream 100 ms=50")
        stream = client.stream(run["run_id"])
        assert next(stream).type == "RUN_STARTED"
        server.stop(signal.SIGKILL)
        with pytest.raises(StreamLost) as lost:
            list(stream)
    assert lost.value.code == "stream_lost" and "after 3 reconnect attempts" in lost.value.message
