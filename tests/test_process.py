"""A real `tether serve` process: streams over HTTP, signals, restarts, flags and environment
variables, user agents, the `threads`/`runs` commands and the log."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tether.cli import build_parser
from tether.server import SummariseFloods

from .conftest import TetherProcess

pytestmark = pytest.mark.server

READY = re.compile(r"Tether is ready: http://[\d.]+:(\d+)/")
EVENT = re.compile(r"id: (\d+)\ndata: ([^\n]*)\n\n")


# helpers


def wait_ready(proc: TetherProcess, timeout: float = 30) -> int:
    """Wait for a spawned process's "ready" line and for /healthz on 127.0.0.1; returns the port.

    (TetherProcess.start() talks to the address it printed, which for 0.0.0.0 is not loopback.)
    """
    assert proc.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise AssertionError(f"tether exited with {proc.proc.returncode}:\n{proc.log()}")
        ready = READY.search(proc.log())
        if ready and httpx.get(f"http://127.0.0.1:{ready[1]}/healthz", timeout=5).status_code == 200:
            proc.port, proc.url = int(ready[1]), f"http://127.0.0.1:{ready[1]}"
            return proc.port
        time.sleep(0.05)
    raise AssertionError(f"tether did not become ready:\n{proc.log()}")


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`python -m tether ARGS` → (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tether",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def sse_events(response: httpx.Response) -> list[tuple[int, dict[str, Any]]]:
    """(seq, event) for each SSE event of a response, to the end of the response."""
    out: list[tuple[int, dict[str, Any]]] = []
    seq: int | None = None
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            seq = int(line.removeprefix("id:").strip())
        elif line.startswith("data:"):
            assert seq is not None, line
            out.append((seq, json.loads(line.removeprefix("data:").strip())))
            seq = None
    return out


async def read_run(http: httpx.AsyncClient, run_id: str, last_event_id: int | None = None) -> list:
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    async with http.stream("GET", f"/v1/runs/{run_id}/stream", headers=headers, timeout=30) as response:
        assert response.status_code == 200, await response.aread()
        return await sse_events(response)


def words(events: list[tuple[int, dict[str, Any]]], prompt: str) -> list[str]:
    """The streamed reply's words (the user's own message is echoed as a text message too)."""
    text = "".join(e["delta"] for _, e in events if e["type"] == "TEXT_MESSAGE_CONTENT" and e["delta"] != prompt)
    return text.split()


async def wait_status(http: httpx.AsyncClient, run_id: str, statuses: set[str], within: float = 30) -> dict:
    deadline = time.monotonic() + within
    while True:
        run = (await http.get(f"/v1/runs/{run_id}")).json()
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
        await asyncio.sleep(0.02)


async def wait_for_log(proc: TetherProcess, pattern: str, within: float = 10) -> list[str]:
    """Poll the process log until `pattern` matches a line; returns every matching line."""
    deadline = time.monotonic() + within
    while True:
        lines = [line for line in proc.log().splitlines() if re.search(pattern, line)]
        if lines:
            return lines
        assert time.monotonic() < deadline, f"no log line matches {pattern!r}:\n{proc.log()[-3000:]}"
        await asyncio.sleep(0.02)


def assert_clean_log(proc: TetherProcess) -> None:
    log = proc.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


# (a) streaming, and a client killed mid-stream that reconnects


async def kill_mid_stream(port: int, run_id: str, after_events: int) -> list[tuple[int, dict[str, Any]]]:
    """Like curl killed mid-stream: read raw bytes until `after_events` whole events, then reset
    the connection (SO_LINGER 0). Returns the whole events received."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /v1/runs/{run_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    buffer = b""
    while len(EVENT.findall(buffer.decode(errors="replace"))) < after_events:
        chunk = await asyncio.wait_for(reader.read(4096), 10)
        assert chunk, f"stream ended early:\n{buffer.decode(errors='replace')}"
        buffer += chunk
    assert buffer.startswith(b"HTTP/1.1 200"), buffer[:200]
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    return [(int(seq), json.loads(data)) for seq, data in EVENT.findall(buffer.decode())]


async def test_stream_to_the_end_then_kill_mid_stream_and_resume_exactly_once(tether_process):
    server = tether_process().start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        tid = (await http.post("/v1/threads")).json()["id"]

        # The whole stream of a `/stream 50` run, read by one connection to its end.
        rid = (await http.post(f"/v1/threads/{tid}/runs", json={"input": "/stream 50"})).json()["run_id"]
        events = await read_run(http, rid)
        assert events[0][1]["type"] == "RUN_STARTED" and events[-1][1]["type"] == "RUN_FINISHED"
        assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
        assert words(events, "/stream 50") == [f"w{i}" for i in range(1, 51)]

        # A slower run: one reader reads it whole; another is killed after 10 events, while the
        # run is still going, and reconnects with Last-Event-ID.
        prompt = "/stream 50 ms=20"
        rid = (await http.post(f"/v1/threads/{tid}/runs", json={"input": prompt})).json()["run_id"]
        whole = asyncio.create_task(read_run(http, rid))
        before = await kill_mid_stream(server.port, rid, after_events=10)
        assert len(before) >= 10
        last = before[-1][0]
        assert (await http.get(f"/v1/runs/{rid}")).json()["status"] == "running"  # the seam is live
        after = await read_run(http, rid, last_event_id=last)
        reference = await asyncio.wait_for(whole, 30)

    assert after and after[0][0] == last + 1, after[:2]
    assert before + after == reference  # every event exactly once, in order, same content
    seqs = [seq for seq, _ in reference]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert seqs[0] == events[-1][0] + 1  # seq goes on across runs of the thread
    assert reference[-1][1]["type"] == "RUN_FINISHED"
    assert words(reference, prompt) == [f"w{i}" for i in range(1, 51)]
    assert_clean_log(server)


# (b) SIGTERM and restart


async def test_sigterm_exits_0_promptly_and_data_survives_a_restart(tether_process):
    server = tether_process().start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        tid = (await http.post("/v1/threads", json={"title": "kept"})).json()["id"]
        other = (await http.post("/v1/threads", json={"title": "also kept"})).json()["id"]
        for text in ("/stream 5", "/tools 2", "hello there"):
            rid = (await http.post(f"/v1/threads/{tid}/runs", json={"input": text})).json()["run_id"]
            await read_run(http, rid)
        before = (await http.get(f"/v1/threads/{tid}")).json()
        runs_before = (await http.get(f"/v1/threads/{tid}/runs")).json()["runs"]
        assert [m["role"] for m in before["messages"]].count("user") == 3
        log_before = await read_thread(http, tid, before["last_seq"])

        # An idle follower of the thread must not hold the shutdown up.
        async with http.stream("GET", f"/v1/threads/{tid}/stream", params={"after": before["last_seq"]}) as follower:
            assert follower.status_code == 200
            started = time.monotonic()
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            tail = await asyncio.wait_for(follower.aread(), 10)
            code = await asyncio.to_thread(server.proc.wait, 10)
            took = time.monotonic() - started
    assert code == 0, server.log()[-3000:]
    assert took < 5, f"SIGTERM took {took:.1f}s"
    assert b"server shutting down" in tail  # the follower was told to reconnect
    assert_clean_log(server)

    restarted = tether_process(data_dir=server.data_dir).start()
    async with httpx.AsyncClient(base_url=restarted.url, timeout=30) as http:
        listed = {t["id"]: t for t in (await http.get("/v1/threads")).json()["threads"]}
        assert set(listed) == {tid, other}
        assert listed[tid]["title"] == "kept" and listed[other]["title"] == "also kept"
        after = (await http.get(f"/v1/threads/{tid}")).json()
        # (AG-UI message ids are made up each time the history is rendered; all else is the same.)
        assert without_ids(after["messages"]) == without_ids(before["messages"])
        assert after["last_seq"] == before["last_seq"] and after["status"] == "idle"
        assert (await http.get(f"/v1/threads/{tid}/runs")).json()["runs"] == runs_before
        assert await read_thread(http, tid, before["last_seq"]) == log_before
        # ... and the thread goes on where it was.
        rid = (await http.post(f"/v1/threads/{tid}/runs", json={"input": "/stream 2"})).json()["run_id"]
        events = await read_run(http, rid)
        assert events[0][0] == before["last_seq"] + 1
        assert events[-1][1]["type"] == "RUN_FINISHED"


def without_ids(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k != "id"} for m in messages]


async def read_thread(http: httpx.AsyncClient, tid: str, last_seq: int) -> list[tuple[int, dict[str, Any]]]:
    """The thread's log from its start up to last_seq (the thread stream itself never ends)."""
    out: list[tuple[int, dict[str, Any]]] = []
    async with http.stream("GET", f"/v1/threads/{tid}/stream", timeout=30) as response:
        assert response.status_code == 200
        seq = None
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                seq = int(line[3:])
            elif line.startswith("data:"):
                assert seq is not None
                out.append((seq, json.loads(line[5:])))
                if seq == last_seq:
                    break
    assert [s for s, _ in out] == list(range(1, last_seq + 1))
    return out


# (c) binding beyond loopback


async def test_a_public_address_without_a_token_is_refused(tmp_path):
    serve = ("serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path / "d"))
    for code, out, err in await asyncio.gather(cli(*serve), cli(*serve, "--token", "")):
        assert code == 2, (out, err)
        assert "refusing to bind 0.0.0.0 without a token" in err
        assert "--token" in err and "TETHER_TOKEN" in err
        assert "Traceback" not in err
        assert "ready" not in out


async def test_engine_settings_that_cannot_work_are_refused_with_the_fix(tmp_path):
    base = ("serve", "--port", "0", "--data-dir", str(tmp_path / "d"))
    cases = [
        (("--workers", "2"), "--workers above 1 needs --database postgresql://"),
        (("--database", "postgresql://127.0.0.1/x"), "add --redis redis://"),
        (("--database", "mysql://x"), "--database must be postgresql://"),
        (("--lease", "0.5"), "--lease must be at least 1 second"),
        (("--max-runs", "-1"), "--max-runs must be 0 or more"),
        (
            ("--database", "postgresql://127.0.0.1:1/x", "--redis", "redis://127.0.0.1:1"),
            "cannot connect to PostgreSQL",
        ),
    ]
    results = await asyncio.gather(*[cli(*base, *args) for args, _ in cases])
    for (args, message), (code, out, err) in zip(cases, results, strict=True):
        assert code == 2, (args, out, err)
        assert message in err, (args, err)
        assert "Traceback" not in err


async def test_a_public_address_with_a_token_serves(tether_process):
    server = tether_process("--host", "0.0.0.0", "--token", "x").spawn()
    port = await asyncio.to_thread(wait_ready, server)
    assert "http://0.0.0.0:" in server.log()  # it bound the address it was given
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        assert (await http.get("/healthz")).status_code == 200
        refused = await http.get("/v1/threads")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        headers = {"Authorization": "Bearer x"}
        tid = (await http.post("/v1/threads", headers=headers)).json()["id"]
        run = await http.post(f"/v1/threads/{tid}/runs", json={"input": "/stream 3"}, headers=headers)
        assert run.status_code == 202
        rid = run.json()["run_id"]
        async with http.stream("GET", f"/v1/runs/{rid}/stream", headers=headers) as response:
            events = await sse_events(response)
        assert words(events, "/stream 3") == ["w1", "w2", "w3"]


# (d) the user's own agent


AGENT_MODULE = """
from pydantic_ai import Agent
from pydantic_ai.messages import ModelRequest, UserPromptPart
from pydantic_ai.models.function import FunctionModel


async def reply(messages, info):
    prompt = [p.content for m in messages if isinstance(m, ModelRequest) for p in m.parts
              if isinstance(p, UserPromptPart)][-1]
    yield "Hello from mymod. "
    yield f"You said: {prompt}"


agent = Agent(FunctionModel(stream_function=reply))
not_an_agent = 42
"""


def agent_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "mymod.py").write_text(AGENT_MODULE)
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)}


async def test_serves_the_users_agent(tether_process, tmp_path):
    server = tether_process("--agent", "mymod:agent", env=agent_env(tmp_path)).start()
    assert "serving mymod:agent" in server.log()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        tid = (await http.post("/v1/threads")).json()["id"]
        rid = (await http.post(f"/v1/threads/{tid}/runs", json={"input": "ping 42"})).json()["run_id"]
        events = await read_run(http, rid)
        text = "".join(e["delta"] for _, e in events if e["type"] == "TEXT_MESSAGE_CONTENT" and e["delta"] != "ping 42")
        assert text == "Hello from mymod. You said: ping 42"
        assert events[-1][1]["type"] == "RUN_FINISHED"
        assert (await http.get(f"/v1/runs/{rid}")).json()["status"] == "completed"
        messages = (await http.get(f"/v1/threads/{tid}")).json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[-1]["content"] == "Hello from mymod. You said: ping 42"


async def test_bad_agents_or_auth_exit_with_a_clear_message(tmp_path):
    env = agent_env(tmp_path)
    users = tmp_path / "users.toml"
    users.write_text('[[users]]\nid = "a"\ntoken = "short"\n')
    cases = {
        ("--agent", "x=mymod:agent", "--agent", "x=mymod:agent"): "two agents are named 'x'",
        ("--agent", "bad name=mymod:agent"): "agent name 'bad name' must be 1-64 letters",
        ("--users", str(tmp_path / "none.toml")): "cannot read the users file",
        ("--users", str(users)): "token must be a string of at least 8 characters",
        ("--token", "t0ken-t0ken", "--users", str(users)): "--token and --users cannot be used together",
        ("--auth", "nosuch:fn"): "cannot import 'nosuch' for --auth",
        ("--auth", "mymod:not_an_agent"): "--auth mymod:not_an_agent is a int, not a function",
    }
    done = await asyncio.gather(
        *(cli("serve", "--port", "0", "--data-dir", str(tmp_path / "d"), *args, env=env) for args in cases)
    )
    for (args, message), (code, out, err) in zip(cases.items(), done, strict=True):
        assert code == 2, (args, out, err)
        assert message in err, (args, err)
        assert "Traceback" not in err and "ready" not in out, (args, err)


async def test_a_bad_agent_exits_with_a_clear_message(tmp_path):
    env = agent_env(tmp_path)
    cases = {
        "nosuch:thing": "cannot import 'nosuch' for --agent",
        "mymod:missing": "module 'mymod' has no attribute 'missing'",
        "mymod:not_an_agent": "mymod:not_an_agent is a int, not a pydantic_ai.Agent or a tether.ServedAgent",
        "mymod": "--agent must look like 'package.module:attribute'",
    }
    done = await asyncio.gather(
        *(cli("serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--agent", spec, env=env) for spec in cases)
    )
    for (spec, message), (code, out, err) in zip(cases.items(), done, strict=True):
        assert code == 2, (spec, out, err)
        assert message in err, (spec, err)
        assert "Traceback" not in err, (spec, err)
        assert "ready" not in out, (spec, out)


# (e) the `threads` and `runs` commands


async def test_threads_and_runs_commands(tether_process):
    server = tether_process().start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        first = (await http.post("/v1/threads", json={"title": "first thread"})).json()["id"]
        second = (await http.post("/v1/threads", json={"title": "second thread"})).json()["id"]
        ok = (await http.post(f"/v1/threads/{first}/runs", json={"input": "/stream 2"})).json()["run_id"]
        await read_run(http, ok)
        bad = (await http.post(f"/v1/threads/{first}/runs", json={"input": "/fail"})).json()["run_id"]
        await read_run(http, bad)

    url = ("--url", server.url)
    threads, threads_json, runs, runs_json, missing, unreachable = await asyncio.gather(
        cli("threads", *url),
        cli("threads", *url, "--json"),
        cli("runs", first, *url),
        cli("runs", first, *url, "--json"),
        cli("runs", "thr_nope", *url),
        cli("threads", "--url", f"http://127.0.0.1:{free_port()}"),
    )

    code, out, err = threads
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["THREAD", "TITLE", "AGENT", "UPDATED"]
    assert all(" demo " in line for line in lines[1:])
    assert {line.split()[0] for line in lines[1:]} == {first, second}
    assert "first thread" in out and "second thread" in out

    code, out, err = threads_json
    assert code == 0, err
    assert {t["id"]: t["title"] for t in json.loads(out)["threads"]} == {first: "first thread", second: "second thread"}

    code, out, err = runs
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split()[:2] == ["RUN", "STATUS"]
    assert rows == {ok: "completed", bad: "failed"}
    assert "/fail" in out  # the failed run's error

    code, out, err = runs_json
    assert code == 0, err
    assert {r["id"]: r["status"] for r in json.loads(out)["runs"]} == {ok: "completed", bad: "failed"}

    code, out, err = missing
    assert code != 0 and out == ""
    assert "404" in err and "thr_nope" in err

    code, out, err = unreachable
    assert code != 0 and "cannot reach" in err and "Traceback" not in err


# (f) every flag as an environment variable


def _sample(action: argparse.Action) -> tuple[str, Any]:
    """A value for the option's environment variable, and what it must parse to."""
    if action.choices:
        choice = list(action.choices)[-1]
        return choice, choice
    if action.type is int:
        return "7", 7
    if action.type is float:
        return "2.5", 2.5
    if action.type is Path:
        return "/tmp/somewhere", Path("/tmp/somewhere")
    if action.dest == "agent":  # repeatable: comma-separated in the environment
        return "a=m:x, b=m:y", ["a=m:x", "b=m:y"]
    if action.dest in ("allowed_hosts", "cors_origins"):  # lists: comma-separated
        return "a.example, b.example", ["a.example", "b.example"]
    if action.dest == "attachment_types":
        return "image/png, text/plain", ["image/png", "text/plain"]
    return "from-env", "from-env"


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, list[str], argparse.Action]]:
    """(command, its required positionals, option) for every documented option of every command (not
    the hidden --listen-fd, which only `tether serve --workers N` gives its own children)."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = []
    for name, sub in commands.choices.items():
        positionals = ["thr_x" for a in sub._actions if not a.option_strings and a.nargs is None]
        for action in sub._actions:
            documented = action.help != argparse.SUPPRESS
            if action.option_strings and action.dest != "help" and action.nargs != 0 and documented:
                out.append((name, positionals, action))
    return out


def test_every_option_reads_its_environment_variable(monkeypatch):
    options = _options(build_parser())
    assert {"--port", "--data-dir", "--token", "--host", "--agent", "--url"} <= {
        a.option_strings[0] for _, _, a in options
    }
    for command, positionals, action in options:
        flag = action.option_strings[0]
        env = re.search(r"\[(TETHER_[A-Z_]+)\]", action.help or "")[1]  # --help names the variable
        assert env.startswith("TETHER_" + flag.removeprefix("--").upper().replace("-", "_")), (flag, env)
        raw, expected = _sample(action)
        monkeypatch.setenv(env, raw)
        args = build_parser().parse_args([command, *positionals])
        assert getattr(args, action.dest) == expected, (command, flag, env)
        assert f"[{env}]" in (action.help or ""), (command, flag)  # --help names the variable
        # A flag on the command line wins over the environment.
        if action.type in (int, float):
            assert getattr(build_parser().parse_args([command, *positionals, flag, "3"]), action.dest) == 3
        monkeypatch.delenv(env)


async def test_a_server_configured_only_by_environment_variables(tether_process, tmp_path):
    data_dir = tmp_path / "from-env"
    port = free_port()
    env = {
        "TETHER_PORT": str(port),
        "TETHER_DATA_DIR": str(data_dir),
        "TETHER_TOKEN": "env-token",
        "TETHER_MAX_BODY_BYTES": "2000",
        "TETHER_LOG_LEVEL": "warning",
    }
    server = tether_process(data_dir=data_dir, env=env)
    server.args = [sys.executable, "-m", "tether", "serve"]  # no flags at all
    server.start()
    assert server.port == port
    assert (data_dir / "tether.db").exists()
    headers = {"Authorization": "Bearer env-token"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        assert (await http.get("/v1/threads")).status_code == 401
        tid = (await http.post("/v1/threads", headers=headers)).json()["id"]
        # (Not a run's message: its body may be larger, by what its attachments may hold.)
        big = await http.patch(f"/v1/threads/{tid}", json={"metadata": {"x": "x" * 3000}}, headers=headers)
        assert big.status_code == 413 and "2000" in big.json()["error"]["message"]
        http.headers.update(headers)
        rid = (await http.post(f"/v1/threads/{tid}/runs", json={"input": "/stream 2"})).json()["run_id"]
        await wait_status(http, rid, {"completed"})
    assert " INFO " not in server.log()  # TETHER_LOG_LEVEL=warning

    # The client commands read TETHER_URL and TETHER_TOKEN.
    code, out, err = await cli("threads", "--json", env={"TETHER_URL": server.url, "TETHER_TOKEN": "env-token"})
    assert code == 0, err
    assert [t["id"] for t in json.loads(out)["threads"]] == [tid]
    code, _, err = await cli("threads", env={"TETHER_URL": server.url})
    assert code != 0 and "401" in err

    # TETHER_HOST is checked like --host; a bad value gets argparse's clear error.
    refused, bad_port = await asyncio.gather(
        cli("serve", "--port", "0", "--data-dir", str(tmp_path / "x"), env={"TETHER_HOST": "0.0.0.0"}),
        cli("serve", "--data-dir", str(tmp_path / "y"), env={"TETHER_PORT": "eighty"}),
    )
    assert refused[0] == 2 and "refusing to bind 0.0.0.0" in refused[2]
    assert bad_port[0] == 2 and "--port" in bad_port[2] and "eighty" in bad_port[2]


# (g) the log


async def test_the_log_has_one_line_when_a_run_starts_and_one_when_it_ends(tether_process):
    server = tether_process().start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        tid = (await http.post("/v1/threads")).json()["id"]

        async def run(text: str, multitask: str = "reject") -> str:
            body = {"input": text, "multitask": multitask}
            return (await http.post(f"/v1/threads/{tid}/runs", json=body)).json()["run_id"]

        done = await run("/stream 10 ms=30")
        await read_run(http, done)
        failed = await run("/fail")
        await read_run(http, failed)
        cancelled = await run("/stream 500 ms=20")
        await wait_status(http, cancelled, {"running"})
        await asyncio.sleep(0.2)
        assert (await http.post(f"/v1/runs/{cancelled}/cancel")).json()["status"] == "cancelled"

    ends = {
        done: (r"completed in (\d+\.\d+)s$", 0.3),
        failed: (r"failed after (\d+\.\d+)s: .*/fail", 0.0),
        cancelled: (r"cancelled in (\d+\.\d+)s$", 0.2),
    }
    for rid, (ending, at_least) in ends.items():
        finish = await wait_for_log(server, rf"run {rid} {ending}")
        log = server.log()
        assert len(finish) == 1, finish
        took = float(re.search(ending, finish[0])[1])  # type: ignore[index]
        assert at_least <= took < 30, finish[0]
        start = [line for line in log.splitlines() if re.search(rf"run {rid} started on thread {tid}$", line)]
        assert len(start) == 1, log[-3000:]
        mentions = [line for line in log.splitlines() if rid in line and " tether." in line]
        assert mentions == [*start, *finish], mentions  # one line each from Tether, start before end
    assert " INFO " in start[0] and " WARNING " in (await wait_for_log(server, rf"run {failed} failed"))[0]


# (g) the HTTP edge: connections that send nothing, too many connections, log floods


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (reading whatever it sends first)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


async def test_connections_that_do_not_send_their_headers_are_closed(tether_process):
    server = tether_process("--header-timeout", "1", "--keepalive", "0.5").start()
    port = server.port
    idle, slow = _connect(port), _connect(port)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
    assert await asyncio.to_thread(_closed_within, idle, 5)
    assert await asyncio.to_thread(_closed_within, slow, 5)
    # A stream outlives the header timeout: it sent its request long ago.
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        tid = (await http.post("/v1/threads")).json()["id"]
        rid = (await http.post(f"/v1/threads/{tid}/runs", json={"input": "/stream 12 ms=250"})).json()["run_id"]
        events = await read_run(http, rid)
        assert (
            events[-1][1]["type"] == "RUN_FINISHED"
            and len([e for e in events if e[1]["type"] == "TEXT_MESSAGE_CONTENT"]) >= 12
        )
        # Keep-alive requests on one connection still work, each within the timeout of the last.
        for _ in range(3):
            assert (await http.get("/healthz")).status_code == 200
            await asyncio.sleep(0.5)


async def test_past_max_connections_requests_get_503_at_once_until_idle_ones_are_closed(tether_process):
    server = tether_process("--max-connections", "20", "--header-timeout", "2").start()
    idle = [_connect(server.port) for _ in range(25)]
    try:
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            refused = await http.get("/healthz")
            assert refused.status_code == 503 and time.monotonic() - started < 5
            # The idle ones are closed at their header timeout: then the server answers again.
            deadline = time.monotonic() + 15
            while (await http.get("/healthz")).status_code != 200:
                assert time.monotonic() < deadline, "the idle connections were never closed"
                await asyncio.sleep(0.2)
    finally:
        for sock in idle:
            sock.close()
    assert "Traceback" not in server.log()


def test_a_flood_of_one_log_line_is_summarised():
    records = []
    flood = SummariseFloods(burst=5, window=0.2)

    def log(message: str) -> bool:
        record = logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, message, None, None)
        passed = flood.filter(record)
        if passed:
            records.append(record.getMessage())
        return passed

    assert [log("Exceeded concurrency limit.") for _ in range(100)].count(True) == 5
    assert log("another message")  # other kinds are not held back
    time.sleep(0.25)
    assert log("Exceeded concurrency limit.")
    assert records[-1] == "Exceeded concurrency limit. (and 95 more like it in the last 0.2s)"


async def test_json_logs_name_the_run_each_line_is_about(tether_process):
    server = tether_process("--log-format", "json").start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        tid = (await http.post("/v1/threads")).json()["id"]
        rid = (await http.post(f"/v1/threads/{tid}/runs", json={"input": "/fail"})).json()["run_id"]
        await read_run(http, rid)
    server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    about_run = [line for line in lines if line.get("run_id") == rid]
    assert {line["thread_id"] for line in about_run} == {tid}
    assert any(line["level"] == "warning" and "failed" in line["message"] for line in about_run), about_run
    # Not a line of the log is anything else (the two lines the CLI prints for people aside).
    others = [line for line in server.log().splitlines() if line and not line.startswith("{")]
    assert all(line.startswith(("Tether ", "Tether is ready")) for line in others), others


def _spans(log: str) -> list[dict[str, Any]]:
    """The spans OpenTelemetry's console exporter printed (indented JSON objects)."""
    spans, lines = [], log.splitlines()
    for start, line in enumerate(lines):
        if line == "{":
            end = lines.index("}", start)
            spans.append(json.loads("\n".join(lines[start : end + 1])))
    return spans


async def test_traces_have_a_span_per_run_with_pydantic_ais_spans_beneath(tether_process):
    server = tether_process(env={"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "tether-test"}).start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        tid = (await http.post("/v1/threads")).json()["id"]
        rid = (await http.post(f"/v1/threads/{tid}/runs", json={"input": "/tools 2"})).json()["run_id"]
        await read_run(http, rid)
    assert server.stop() == 0  # a graceful stop exports what is buffered
    spans = _spans(server.log())
    (run_span,) = [s for s in spans if s["name"] == "tether run"]
    attributes = run_span["attributes"]
    assert (attributes["tether.thread_id"], attributes["tether.run_id"]) == (tid, rid)
    assert (attributes["tether.agent"], attributes["tether.status"]) == ("demo", "completed")
    assert run_span["resource"]["attributes"]["service.name"] == "tether-test"
    beneath = [s for s in spans if s["parent_id"] == run_span["context"]["span_id"]]
    assert beneath, [s["name"] for s in spans]
    trace_id = run_span["context"]["trace_id"]
    tools = [s for s in spans if s["context"]["trace_id"] == trace_id and "sleep" in s["name"]]
    assert len(tools) == 2, [s["name"] for s in spans]  # pydantic-ai's span of each tool call, in the run's trace


async def test_traces_asked_for_with_an_unknown_exporter_stop_the_server(tmp_path):
    code, out, err = await cli(
        "serve", "--port", "0", "--data-dir", str(tmp_path / "d"), env={"OTEL_TRACES_EXPORTER": "zipkin"}
    )
    assert code == 2 and "OTEL_TRACES_EXPORTER='zipkin'" in err and "Traceback" not in err and "ready" not in out
