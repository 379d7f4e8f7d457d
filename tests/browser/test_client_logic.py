"""The UI's client logic (fold.js, sse.js, session.js, schema.js, streamed.js) run in the browser, checked against
the server: folding a real thread's log in JavaScript renders what the server stores (invariant 3),
exactly as the reference fold in tether/transcript.py does, and the page refuses the tool arguments
that the tool's own validator refuses."""

from __future__ import annotations

import json
import re
from typing import Literal

import httpx
import pytest
from pydantic import BaseModel, Field, ValidationError
from pydantic_ai import Tool

from tether.client import TetherClient, attachment
from tether.transcript import comparable, fold

from ..conftest import thread_events, wait_for_status
from .ui import settled_runs

pytestmark = pytest.mark.sqlite_only  # the UI against one engine; the engines are tested beside

FOLD_IN_JS = """async (events) => {
  const { fold } = await import('/ui/js/fold.js');
  return fold(events);
}"""


async def build_threads(client: TetherClient, url: str) -> list[str]:
    """Threads that exercise every kind of event: text, tools, approvals, steer, retry, cancel, failure,
    attachments."""
    ids = []

    async def thread(*inputs: str) -> str:
        created = await client.create_thread()
        for text in inputs:
            run = await client.send(created["id"], text, multitask="enqueue")
            await wait_for_status(client, run["run_id"], {"completed", "failed", "awaiting_approval"})
        ids.append(created["id"])
        return created["id"]

    await thread("/stream 20", "/tools 3", "/steps 2", "plain words")
    for approved in (True, False):
        paused = await thread("/approve note")
        [run] = await client.list_runs(paused)
        [call] = run["pending_approvals"]
        await client.decide(run["id"], {call["tool_call_id"]: {"approved": approved, "reason": "no"}})
        await settled_runs(url, paused, 1)
    retried = await thread("/tools 2")
    await client.retry(retried)
    await settled_runs(url, retried, 2)
    await thread("/fail")

    # Attachments: an image and a file with text, one alone, one as a url; a retry's snapshot holds them.
    attached = await client.create_thread()
    for message in (
        [
            {"type": "text", "text": "see these"},
            attachment(b"\x89PNG", "image/png", name="a.png"),
            attachment(b"x", "text/csv"),
        ],
        [attachment(b"\x89PNG", "image/png")],
        [{"type": "image", "media_type": "image/webp", "url": "https://example.com/a.webp"}],
    ):
        run = await client.send(attached["id"], message, multitask="enqueue")
        await wait_for_status(client, run["run_id"], {"completed"})
    await client.retry(attached["id"])
    await settled_runs(url, attached["id"], 4)
    ids.append(attached["id"])

    cancelled = await client.create_thread()
    run = await client.send(cancelled["id"], "/stream 5000 ms=2")
    await wait_for_status(client, run["run_id"], {"running"})
    await client.cancel(run["run_id"])
    await client.send(cancelled["id"], "/steps 3 ms=100")
    runs = await client.list_runs(cancelled["id"])
    await wait_for_status(client, runs[-1]["id"], {"running"})
    await client.steer(cancelled["id"], "change of plan")
    await client.send(cancelled["id"], "/stream 3000 ms=2", multitask="interrupt")
    await settled_runs(url, cancelled["id"], 3)
    ids.append(cancelled["id"])
    return ids


async def test_fold_js_renders_what_the_server_stores(server, context):
    page = await context.new_page()
    await page.goto(server.url)
    async with TetherClient(server.url) as client:
        for thread_id in await build_threads(client, server.url):
            events = await thread_events(client, thread_id)
            stored = (await client.get_thread(thread_id))["messages"]
            in_js = await page.evaluate(FOLD_IN_JS, events)
            assert comparable(in_js) == comparable(fold(events)) == comparable(stored), thread_id
            # Folding on top of a stored history, as a reloaded tab does, gives the same.
            half = len(events) // 2
            resumed = await page.evaluate(
                """async ([start, rest]) => {
                  const { Transcript } = await import('/ui/js/fold.js');
                  const t = new Transcript(start);
                  for (const e of rest) t.apply(e);
                  return t.messages;
                }""",
                [fold(events[:half]), events[half:]],
            )
            assert comparable(resumed) == comparable(stored), thread_id


async def test_the_frame_parser_survives_any_chunking(server, context):
    page = await context.new_page()
    await page.goto(server.url)
    async with TetherClient(server.url) as client:
        thread = await client.create_thread()
        run = await client.send(thread["id"], "/tools 2")
        await wait_for_status(client, run["run_id"], {"completed"})
    async with httpx.AsyncClient(base_url=server.url) as http:
        raw = (await http.get(f"/v1/runs/{run['run_id']}/stream")).text
    expected = [
        {"id": block.split("\n")[0].removeprefix("id: "), "data": block.split("\n")[1].removeprefix("data: ")}
        for block in raw.strip().split("\n\n")
    ]
    for newline in ("\n", "\r\n"):
        for size in (1, 2, 3, 7, 64, len(raw)):
            parsed = await page.evaluate(
                """async ([text, size]) => {
                  const { FrameParser } = await import('/ui/js/sse.js');
                  const parser = new FrameParser();
                  const frames = [];
                  for (let i = 0; i < text.length; i += size) frames.push(...parser.push(text.slice(i, i + size)));
                  return frames;
                }""",
                [raw.replace("\n", newline) + ": keep-alive" + newline * 2, size],
            )
            assert parsed == [*expected, {"comment": "keep-alive"}], (newline, size)
    assert [json.loads(f["data"])["type"] for f in expected][-1] == "RUN_FINISHED"


async def test_tool_cards_get_their_status_from_results_and_pending_calls(server, context):
    page = await context.new_page()
    await page.goto(server.url)
    messages = [
        {"id": "u", "role": "user", "content": "go"},
        {
            "id": "a",
            "role": "assistant",
            "content": "",
            "toolCalls": [
                {"id": c, "type": "function", "function": {"name": "t", "arguments": "{}"}}
                for c in ("done", "denied", "unknown", "interrupted", "waiting", "running")
            ],
        },
        {"id": "r1", "role": "tool", "toolCallId": "done", "content": "ok"},
        {"id": "r2", "role": "tool", "toolCallId": "denied", "content": "The user denied this tool call: no"},
        {"id": "r3", "role": "tool", "toolCallId": "unknown", "content": "The outcome of this tool call is unknown: …"},
        {
            "id": "r4",
            "role": "tool",
            "toolCallId": "interrupted",
            "content": "The tool call was interrupted before a result was produced.",
        },
    ]
    statuses = await page.evaluate(
        """async ([messages, active]) => {
          const { chatBlocks } = await import('/ui/js/session.js');
          const pending = [{toolCallId: 'waiting', toolName: 't', args: {}, decision: null}];
          const timings = {done: {start: 1000, end: 1250}};
          return chatBlocks(messages, {pending, active, timings})[1].calls.map(c => [c.id, c.status, c.durationMs]);
        }""",
        [messages, True],
    )
    assert statuses == [
        ["done", "done", 250],
        ["denied", "denied", None],
        ["unknown", "unknown", None],
        ["interrupted", "interrupted", None],
        ["waiting", "awaiting approval", None],
        ["running", "running", None],
    ]


class Address(BaseModel):
    city: str = Field(min_length=1)
    zip: str | None = None


def ship(  # a tool with the argument shapes pydantic writes schemas for: $defs, anyOf, enums, bounds
    to: Address, items: list[str], priority: Literal["low", "high"] = "low", copies: int = Field(1, ge=1, le=5)
) -> str:
    return "shipped"


CHECK_IN_JS = """async ([schema, values]) => {
  const { check } = await import('/ui/js/schema.js');
  return values.map((value) => check(schema, value));
}"""


async def test_schema_js_refuses_what_the_tool_s_validator_refuses(server, context):
    page = await context.new_page()
    await page.goto(server.url)
    tool = Tool(ship)
    values = [
        {"to": {"city": "Oslo"}, "items": ["a"]},
        {"to": {"city": "Oslo", "zip": None}, "items": [], "priority": "high", "copies": 5},
        {"to": {"city": "Oslo", "zip": "0150"}, "items": ["a", "b"], "copies": 1},
        {"to": {"city": ""}, "items": []},
        {"to": {}, "items": []},
        {"to": {"city": "Oslo", "zip": 150}, "items": []},
        {"to": {"city": "Oslo"}, "items": "a"},
        {"to": {"city": "Oslo"}, "items": [1]},
        {"to": {"city": "Oslo"}, "items": [], "priority": "urgent"},
        {"to": {"city": "Oslo"}, "items": [], "copies": 0},
        {"to": {"city": "Oslo"}, "items": [], "copies": 6},
        {"to": {"city": "Oslo"}, "items": [], "copies": 2.5},
        {"to": {"city": "Oslo"}, "items": [], "extra": True},
        {"items": []},
    ]
    verdicts = await page.evaluate(CHECK_IN_JS, [tool.function_schema.json_schema, values])
    for value, problems in zip(values, verdicts, strict=True):
        try:
            tool.function_schema.validator.validate_python(value, strict=True)
            valid = True
        except ValidationError:
            valid = False
        assert (problems == []) == valid, (value, problems)


LONG_PARAGRAPH = " ".join(
    f"*stressed {i}* and `code {i}` and [a link](https://example.org/{i})" if i % 97 == 0 else f"word{i}"
    for i in range(3000)
)
MARKDOWN = [
    "# A heading\n\nSome *text* with `code`.\n\n- one\n- two\n\n1. first\n\n2. second\n",
    "```python\ndef f():\n\n    return 1\n```\n\nafter the fence\n\n~~~\n```\nstill code\n\n~~~\nend",
    "> a quote\n> that goes on\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n---\n\nlast *paragraph",
    LONG_PARAGRAPH,
    f"intro\n\n{LONG_PARAGRAPH}\n\noutro",
    'hi <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> [x](javascript:alert(1))',
]

STREAM_IN_JS = """async ([texts, sizeLists]) => {
  const { StreamedMarkdown } = await import('/ui/js/streamed.js');
  const { renderMarkdown } = await import('/ui/js/markdown.js');
  const squash = (s) => s.replace(/\\s+/g, ' ').trim();
  return texts.map((text, i) => {
    const sizes = sizeLists[i];
    const whole = document.createElement('div');
    new StreamedMarkdown(whole).update(text);
    const once = document.createElement('div');
    once.innerHTML = renderMarkdown(text);
    const streamed = sizes.map((size) => {
      const element = document.createElement('div');
      const view = new StreamedMarkdown(element);
      for (let end = size; end < text.length + size; end += size) view.update(text.slice(0, end));
      return element.innerHTML === whole.innerHTML;
    });
    return { streamed, sameText: squash(whole.textContent) === squash(once.textContent), html: whole.innerHTML,
             runs: whole.querySelectorAll('.md-open p > span').length };
  });
}"""


async def test_streamed_markdown_draws_what_it_would_draw_at_once(server, context):
    page = await context.new_page()
    await page.goto(server.url)
    # Pieces of a token's size and larger. The long paragraphs skip 3-character pieces, 9,000 updates
    # each and most of the test's time (it once passed 120 s in a loaded CI run); 7 still split every word.
    sizes = [[3, 7, 64, 1000, 5000] if len(text) < 1000 else [7, 64, 1000, 5000] for text in MARKDOWN]
    results = await page.evaluate(STREAM_IN_JS, [MARKDOWN, sizes])
    for text, result, tried in zip(MARKDOWN, results, sizes, strict=True):
        # Streamed in pieces of any size, or drawn at once, the same HTML; and the words Markdown renders.
        assert result["streamed"] == [True] * len(tried), text[:80]
        assert result["sameText"], text[:80]
        assert not re.search(r"<script|onerror|javascript:", result["html"], re.IGNORECASE)
    # The long open paragraph is drawn as runs of words, each rendered once.
    assert results[3]["runs"] >= 5  # 26 KB in runs of 4 KB or more
    assert "<em>stressed 97</em>" in results[3]["html"] and "<code>code 194</code>" in results[3]["html"]
    assert await page.evaluate("window.__pwned") is None
    # The closed fence is highlighted, streamed or not.
    assert '<code class="hljs language-python"><span class="hljs-keyword">def</span>' in results[1]["html"]


HIGHLIGHT_IN_JS = """async (pieces) => {
  const { StreamedMarkdown } = await import('/ui/js/streamed.js');
  const element = document.createElement('div');
  const view = new StreamedMarkdown(element);
  let text = '';
  return pieces.map((piece) => {
    view.update((text += piece));
    const code = element.querySelector('pre code');
    return { highlighted: code.classList.contains('hljs'), keywords: code.querySelectorAll('.hljs-keyword').length,
             code: code.textContent, images: element.querySelectorAll('img').length };
  });
}"""


async def test_a_code_block_is_highlighted_once_its_fence_is_closed(server, context):
    page = await context.new_page()
    await page.goto(server.url)
    pieces = ["```python\ndef f():", '\n    return "<img src=x onerror=window.__pwned=1>"', "\n```", "\n\nafter"]
    drawn = await page.evaluate(HIGHLIGHT_IN_JS, pieces)
    # Open, the fence is drawn plain; closed (in the open block, then in a complete one), highlighted.
    assert [d["highlighted"] for d in drawn] == [False, False, True, True]
    assert drawn[-1]["keywords"] == 2  # def, return
    # Highlighting changes no character of the code, and markup in it stays text.
    code = 'def f():\n    return "<img src=x onerror=window.__pwned=1>"\n'
    assert [d["code"] for d in drawn[1:]] == [code] * 3
    assert {d["images"] for d in drawn} == {0}
    assert await page.evaluate("window.__pwned") is None
