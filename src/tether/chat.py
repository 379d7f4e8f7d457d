"""`tether chat`: a terminal chat with a running Tether server.

Each line you type is a message; the answer streams in as it is written. A
tool call that needs approval asks you `[y/N]` (or type a reason to deny
it). Ctrl-C stops the answering run; Ctrl-D (end of input) quits. Piped input
works too: one message (or approval answer) per line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, TextIO

from tether.client import TetherClient, TetherError


class Chat:
    def __init__(self, client: TetherClient, thread_id: str, out: TextIO = sys.stdout) -> None:
        self.client = client
        self.thread_id = thread_id
        self.out = out

    def say(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    async def ask(self, prompt: str) -> str | None:
        """One line of input, or None at end of input."""
        self.say(prompt, end="")
        line = await asyncio.to_thread(sys.stdin.readline)
        if not sys.stdin.isatty():
            self.say(line.rstrip("\n"))  # echo piped input, so the transcript reads like a session
        return line.rstrip("\n") if line else None

    async def run(self) -> None:
        while (text := await self.ask("you> ")) is not None:
            if not text.strip():
                continue
            try:
                run = await self.client.send(self.thread_id, text)
            except TetherError as exc:
                self.say(f"! {exc.message}")
                continue
            task = asyncio.ensure_future(self.follow(run["run_id"]))
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels us; stop the run, not the chat
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                self.say("\n  [stopping]")
                await self.client.cancel(run["run_id"])
                await task
        self.say()

    async def follow(self, run_id: str) -> None:
        """Print one run as it streams; answer its approval requests."""
        speaking = printed = False
        async for event in self.client.stream_run(run_id):
            data = event.data
            kind = data["type"]
            if kind == "TEXT_MESSAGE_START":
                speaking, printed = data.get("role") == "assistant", False
            elif kind == "TEXT_MESSAGE_CONTENT" and speaking:
                self.say(data["delta"] if printed else f"agent> {data['delta']}", end="")
                printed = True
            elif kind == "TEXT_MESSAGE_END" and printed:
                self.say()
                speaking = printed = False
            elif kind == "TOOL_CALL_START":
                self.say(f"  [tool] {data['toolCallName']}(", end="")
            elif kind == "TOOL_CALL_ARGS":
                self.say(data["delta"], end="")
            elif kind == "TOOL_CALL_END":
                self.say(")")
            elif kind == "TOOL_CALL_RESULT":
                self.say(f"  [result] {data['content']}")
            elif kind == "CUSTOM" and data["name"] == "tether.approval_requested":
                await self.decide(run_id, data["value"]["calls"])
            elif kind == "CUSTOM" and data["name"] == "tether.run_cancelled":
                self.say(f"\n  [cancelled] {data['value']['reason']}")
            elif kind == "RUN_ERROR":
                self.say(f"\n! the run failed: {data['message']}")

    async def decide(self, run_id: str, calls: list[dict[str, Any]]) -> None:
        for call in calls:
            args = json.dumps(call["args"])
            answer = await self.ask(f"  approve {call['toolName']}({args})? [y/N or a reason to deny] ")
            approved = (answer or "").strip().lower() in ("y", "yes")
            decision: dict[str, Any] = {"approved": approved}
            if not approved and answer and answer.strip().lower() not in ("n", "no"):
                decision["reason"] = answer.strip()
            try:
                await self.client.decide(run_id, {call["toolCallId"]: decision})
            except TetherError as exc:  # decided elsewhere meanwhile (another tab, another terminal)
                self.say(f"  ! {exc.message}")


async def chat(url: str, token: str | None, thread_id: str | None) -> int:
    async with TetherClient(url, token) as client:
        try:
            if thread_id is None:
                thread_id = (await client.create_thread("tether chat"))["id"]
            else:
                await client.get_thread(thread_id)
        except TetherError as exc:
            print(f"tether: {exc.message}", file=sys.stderr)
            return 1
        print(f"thread {thread_id} on {url}. Ctrl-C stops an answer, Ctrl-D quits.", file=sys.stderr)
        await Chat(client, thread_id).run()
    return 0
