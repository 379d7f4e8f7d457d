"""`tether serve --workers N`: N worker processes on one port.

The parent binds the port once and starts N ordinary `tether serve` children
that inherit the listening socket; the kernel spreads new connections among
them, and since every worker serves every stream and every control (the
database and Redis connect them), it does not matter which one a client
reaches. A child that dies is started again (meanwhile its runs are taken over
by the others when its lease lapses). SIGTERM or SIGINT is passed on to every
child, each of which hands its runs over at their next step boundary; a
second signal kills them at once.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from types import FrameType

RESTART_BACKOFF = (0.5, 1, 2, 5, 10)
"""Seconds before restarting a child that keeps dying soon after it started."""
STABLE_AFTER = 30.0
"""A child that lived this long had a good run: its next restart is immediate."""


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def child_argv(argv: list[str], fd: int) -> list[str]:
    """The child's command line: the parent's `serve` arguments, one worker, on the shared socket."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            kept.append(arg)
    return [sys.executable, "-m", "tether", *kept, "--workers", "1", "--listen-fd", str(fd)]


class Supervisor:
    def __init__(self, argv: list[str], sock: socket.socket, workers: int) -> None:
        self._argv = child_argv(argv, sock.fileno())
        self._sock = sock
        self._workers = workers
        self._children: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self._failures: dict[int, int] = {}
        self._stopping = False

    def run(self) -> int:
        host, port = self._sock.getsockname()[:2]
        print(f"tether: {self._workers} workers on http://{host}:{port}/", flush=True)
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        for slot in range(self._workers):
            self._start(slot)
        while self._children:
            for slot, (child, started) in list(self._children.items()):
                code = child.poll()
                if code is None:
                    continue
                del self._children[slot]
                if self._stopping:
                    continue
                lived = time.monotonic() - started
                failures = 0 if lived > STABLE_AFTER else self._failures.get(slot, 0) + 1
                self._failures[slot] = failures
                wait = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF)) - 1] if failures else 0
                print(
                    f"tether: worker {slot} (pid {child.pid}) exited with {code} after {lived:.1f}s; "
                    f"starting it again in {wait:g}s",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(wait)
                if not self._stopping:
                    self._start(slot)
            time.sleep(0.1)
        self._sock.close()
        return 0

    def _start(self, slot: int) -> None:
        child = subprocess.Popen(self._argv, pass_fds=(self._sock.fileno(),))
        self._children[slot] = (child, time.monotonic())

    def _signal(self, sig: int, frame: FrameType | None) -> None:
        if self._stopping:
            print("tether: second signal, killing the workers", file=sys.stderr, flush=True)
            for child, _ in self._children.values():
                child.kill()
            return
        self._stopping = True
        print(f"tether: signal {sig}: stopping {len(self._children)} workers gracefully", file=sys.stderr, flush=True)
        for child, _ in self._children.values():
            child.send_signal(sig)


def supervise(argv: list[str], host: str, port: int, workers: int) -> int:
    try:
        sock = bind(host, port)
    except OSError as exc:
        print(f"tether: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 2
    return Supervisor(argv, sock, workers).run()
