"""The UI under its Content-Security-Policy (every browser test fails on a violation, see conftest),
and what a hostile page sees of it: it cannot frame it."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Browser

pytestmark = pytest.mark.sqlite_only


async def test_a_page_from_another_origin_cannot_frame_the_ui(server, browser: Browser):
    # Its own context, unwatched: the refusal is a console error, and here it is the point.
    context = await browser.new_context()
    try:
        page = await context.new_page()
        refusals: list[str] = []
        page.on("console", lambda message: refusals.append(message.text))
        await page.set_content(f'<iframe id="ui" src="{server.url}/" width="800" height="600"></iframe>')
        frame = page.frame_locator("#ui")
        await asyncio.sleep(1)  # the frame's navigation is refused, not slow: give it the time to try
        assert await frame.locator("#new-thread").count() == 0
        assert any("frame-ancestors" in text for text in refusals), refusals
    finally:
        await context.close()
