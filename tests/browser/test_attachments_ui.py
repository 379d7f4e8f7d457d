"""Attachments in the browser: an image and a file attached by drop, by paste and by the attach button,
waiting in the composer (and removable) until sent, shown in the transcript (the image as a thumbnail,
the file as a chip with its name, type and size), answered by the demo agent, kept after a reload and in
a new tab, with their bytes fetched with the signed-in user's token."""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tether.client import TetherClient

from .test_a11y_ui import assert_accessible
from .test_export_ui import export
from .test_users_ui import TOKENS, sign_in, users_file
from .ui import ChatPage, eventually, new_chat, settled_runs

pytestmark = pytest.mark.sqlite_only  # the UI against one engine; the engines are tested beside


def png(width: int, height: int) -> bytes:
    """A real picture (a colour gradient), so that a thumbnail that loads has its width."""
    pixel = [[bytes((x * 255 // width, y * 255 // height, 180)) for x in range(width)] for y in range(height)]
    rows = b"".join(b"\x00" + b"".join(row) for row in pixel)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG = png(64, 40)
NOTES = b"# Notes\n\nbuy milk\n"
FILES = [
    {"name": "dot.png", "type": "image/png", "data": base64.b64encode(PNG).decode()},
    {"name": "notes.md", "type": "text/markdown", "data": base64.b64encode(NOTES).decode()},
]
ANSWER = f'You said: "{{}}" and attached image/png, {len(PNG)} bytes; text/markdown, {len(NOTES)} bytes.'

# Files as a page holds them, and the two ways a page is given them without a person's hands.
_DATA = """(files) => {
  const data = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
    data.items.add(new File([bytes], f.name, { type: f.type }));
  }
  return data;
}"""
DROP = f"""files => {{
  const data = ({_DATA})(files);
  const target = document.querySelector('#input');
  for (const type of ['dragenter', 'dragover', 'drop']) {{
    target.dispatchEvent(new DragEvent(type, {{ dataTransfer: data, bubbles: true, cancelable: true }}));
  }}
}}"""
PASTE = f"""files => {{
  const event = {{ clipboardData: ({_DATA})(files), bubbles: true, cancelable: true }};
  document.querySelector('#input').dispatchEvent(new ClipboardEvent('paste', event));
}}"""

SHOWN = """() => [...document.querySelectorAll('#messages > li.user')].map((li) =>
  [...li.querySelectorAll('.attachment')].map((a) => ({
    name: a.querySelector('.name').textContent,
    what: a.querySelector('.what').textContent,
    thumbnail: a.querySelector('img.thumb') ? a.querySelector('img.thumb').naturalWidth : null,
  })))"""


async def shown(page: Page) -> list[list[dict[str, Any]]]:
    """Each user message's attachments as drawn: name, "type · size", and a thumbnail's loaded width."""
    return await page.evaluate(SHOWN)


EXPECTED = [
    {"name": "dot.png", "what": f"image/png · {len(PNG) / 1024:.1f} KB", "thumbnail": 64},
    {"name": "notes.md", "what": f"text/markdown · {len(NOTES)} bytes", "thumbnail": None},
]


async def pending_names(page: Page) -> list[str]:
    return await page.locator("[data-testid=pending-attachment] .name").all_inner_texts()


async def assert_sent_and_kept(chat: ChatPage, url: str, answer: str, token: str | None = None) -> None:
    """The message's image and file are drawn (the image loaded), the demo agent names them, and they
    stay after a reload, in a new tab, and in the thread's stored history."""
    await expect(chat.page.get_by_test_id("pending-attachments")).to_be_hidden()
    await chat.wait_until_idle()
    await eventually(lambda: shown(chat.page), [EXPECTED])
    await chat.assert_last_answer(answer)
    async with TetherClient(url, token) as client:
        stored = (await client.get_thread(chat.thread_id))["messages"]
    await chat.assert_shows(stored)
    assert [(a["name"], a["media_type"], a["size"]) for a in stored[0]["attachments"]] == [
        ("dot.png", "image/png", len(PNG)),
        ("notes.md", "text/markdown", len(NOTES)),
    ]
    await chat.page.reload()
    await eventually(lambda: shown(chat.page), [EXPECTED])
    await chat.assert_shows(stored)
    other = await ChatPage(await chat.page.context.new_page(), url).open(chat.thread_id)
    await eventually(lambda: shown(other.page), [EXPECTED])
    await other.assert_shows(stored)


async def test_an_image_and_a_file_dropped_on_the_composer(server, context):
    chat = await new_chat(context, server.url)
    await chat.page.evaluate(DROP, FILES)
    assert await pending_names(chat.page) == ["dot.png", "notes.md"]
    await chat.send("what are these?")
    await assert_sent_and_kept(chat, server.url, ANSWER.format("what are these?"))
    _, markdown = await export(chat.page, "Markdown")
    assert f"> what are these?\n\n> Attached: dot.png (image/png, {len(PNG)} bytes)\n\n> Attached: notes.md" in markdown


async def test_an_image_and_a_file_pasted_into_the_message_box_one_removed_before_sending(server, context):
    chat = await new_chat(context, server.url)
    await chat.page.evaluate(PASTE, FILES)
    await chat.page.evaluate(PASTE, [{"name": "extra.txt", "type": "text/plain", "data": "eA=="}])
    assert await pending_names(chat.page) == ["dot.png", "notes.md", "extra.txt"]
    await chat.page.get_by_role("button", name="Remove extra.txt").click()
    assert await pending_names(chat.page) == ["dot.png", "notes.md"]
    await expect(chat.page.get_by_role("button", name="Remove notes.md")).to_be_focused()
    await chat.send("pasted")
    await assert_sent_and_kept(chat, server.url, ANSWER.format("pasted"))


async def test_attachments_alone_start_a_thread_from_the_first_screen(server, context):
    chat = await ChatPage(await context.new_page(), server.url).open()
    await chat.page.evaluate(DROP, FILES[:1])
    await chat.page.press("#input", "Enter")
    await chat.page.wait_for_function("() => location.hash.startsWith('#/t/')")
    await chat.wait_until_idle()
    await chat.assert_last_answer(f"You attached image/png, {len(PNG)} bytes.")
    await eventually(lambda: shown(chat.page), [EXPECTED[:1]])
    await expect(chat.page.locator("#chat-title")).to_have_text("dot.png")


async def test_the_attach_button_with_a_signed_in_user_and_a_download(start_server, new_context, tmp_path: Path):
    """The button is reached by the keyboard; with a token the thumbnail still loads (it is fetched with
    the token, not by an <img src>), and a file's chip saves its exact bytes."""
    server = start_server(users_file=users_file(tmp_path))
    page = await (await new_context()).new_page()
    # Listened for from the start: Playwright takes over the page's file choosers once it has told the
    # browser to, which it does without waiting when the first listener comes.
    page.on("filechooser", lambda _: None)
    chat = await ChatPage(page, server.url).open()
    await sign_in(page, TOKENS["alice"])
    await chat.new_thread()
    (tmp_path / "dot.png").write_bytes(PNG)
    (tmp_path / "notes.md").write_bytes(NOTES)
    await expect(page.locator("#input")).to_be_focused()  # where the new thread puts it, once it is drawn
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Attach images or files")).to_be_focused()
    async with page.expect_file_chooser() as choosing:
        await page.keyboard.press("Enter")
    await (await choosing.value).set_files([tmp_path / "dot.png", tmp_path / "notes.md"])
    assert await pending_names(page) == ["dot.png", "notes.md"]
    await chat.send("picked")
    await assert_sent_and_kept(chat, server.url, ANSWER.format("picked"), TOKENS["alice"])
    async with page.expect_download() as saving:
        await page.get_by_role("button", name="Download notes.md").click()
    download = await saving.value
    assert download.suggested_filename == "notes.md"
    assert await asyncio.to_thread(Path(await download.path()).read_bytes) == NOTES


async def test_a_message_too_large_says_why_and_keeps_its_attachments(start_server, context):
    server = start_server(max_attachment_bytes=10)
    chat = await new_chat(context, server.url)
    await chat.page.evaluate(DROP, FILES)
    await chat.page.fill("#input", "too big")
    await chat.page.press("#input", "Enter")
    await expect(chat.page.get_by_test_id("composer-error")).to_contain_text("--max-attachment-bytes")
    assert await pending_names(chat.page) == ["dot.png", "notes.md"]
    await chat.page.get_by_role("button", name="Remove dot.png").click()
    await chat.page.get_by_role("button", name="Remove notes.md").click()
    await expect(chat.page.locator("#input")).to_be_focused()
    await chat.send("/stream 2")
    await chat.wait_until_idle()
    await chat.assert_last_answer("w1 w2")
    assert len(await settled_runs(server.url, chat.thread_id, 1)) == 1


async def test_an_edited_message_takes_its_attachments_to_the_branch(server, context):
    chat = await new_chat(context, server.url)
    await chat.page.evaluate(DROP, FILES)
    await chat.send("first words")
    await chat.wait_until_idle()
    parent = chat.thread_id
    await chat.page.get_by_test_id("edit-message").click()
    await chat.page.get_by_test_id("edit-text").fill("second words")
    await chat.page.get_by_test_id("edit-save").click()
    await chat.page.wait_for_function("parent => !location.hash.endsWith(parent)", arg=parent)
    await chat.wait_until_idle()
    await chat.assert_last_answer(ANSWER.format("second words"))
    await eventually(lambda: shown(chat.page), [EXPECTED])
    async with TetherClient(server.url) as client:
        branch = (await client.get_thread(chat.thread_id))["messages"][0]
        original = (await client.get_thread(parent))["messages"][0]
        # The branch's own copies: the same bytes, sent again under new ids.
        assert [await client.get_attachment(a["id"]) for a in branch["attachments"]] == [PNG, NOTES]
    assert original["content"] == "first words" and branch["content"] == "second words"


async def test_attachments_waiting_and_sent_have_no_serious_axe_violation(server, context):
    chat = await new_chat(context, server.url)
    await chat.page.evaluate(DROP, FILES)
    await chat.page.fill("#input", "checked")
    await assert_accessible(chat.page, "attachments waiting in the composer")
    await chat.page.press("#input", "Enter")
    await chat.wait_until_idle()
    await eventually(lambda: shown(chat.page), [EXPECTED])
    await assert_accessible(chat.page, "a message with an image and a file")
