"""Browser tests: the web UI in real headless Chromium (Debian's package), driven by Playwright.

Playwright's own browser downloads are not used: it drives /usr/bin/chromium. Without that
browser the tests skip on a laptop, and fail under CI=true (`make test` installs it).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from ..conftest import IN_CI

CHROMIUM = Path(os.environ.get("TETHER_TEST_CHROMIUM", "/usr/bin/chromium"))
# Headless, and quiet: this machine has no network beyond loopback, and Chromium's background
# services would otherwise keep dialling out.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHROMIUM_FOUND = CHROMIUM.exists()
RESULTS = Path(__file__).resolve().parents[2] / "test-results"
NewContext = Callable[[], Awaitable[BrowserContext]]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_FOUND:
        message = f"{CHROMIUM} is missing: `make test` installs Debian's chromium package"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


class PageErrors:
    """Uncaught exceptions and console errors of the pages in a test: a UI bug fails the test."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page) -> Page:
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"console: {message.text}")
                if message.type == "error" and not _expected(message.text, message.location.get("url", ""))
                else None
            ),
        )
        return page


def _expected(text: str, where: str) -> bool:
    # Failed fetches while a test cuts the network or restarts the server, and hostile test
    # content's broken image, are logged by Chromium itself; the UI handles them.
    if re.search(r"Failed to load resource|ERR_INTERNET_DISCONNECTED|ERR_CONNECTION_REFUSED", text):
        return True
    # A false positive: DOMPurify parses untrusted HTML with DOMParser, into an inert document where no
    # handler can run, yet Chromium reports each event-handler attribute it sees there as a CSP
    # violation. Any other CSP violation (the UI's own code) still fails the test.
    return "Content Security Policy" in text and "inline event handler" in text and where.endswith("/purify.es.mjs")


@pytest.fixture
async def new_context(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[NewContext]:
    """new_context() → a fresh browser profile (its own localStorage: another person at another
    browser). Each page's last state is saved to test-results/ as a screenshot, and any page's
    uncaught exception or console error fails the test."""
    made: list[BrowserContext] = []
    errors = PageErrors()

    async def new() -> BrowserContext:
        context = await browser.new_context(viewport={"width": 1100, "height": 760})
        context.on("page", errors.watch)
        made.append(context)
        return context

    yield new
    RESULTS.mkdir(exist_ok=True)
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    for number, context in enumerate(made):
        for index, page in enumerate(context.pages):
            if not page.is_closed():
                suffix = f"{index}" if number == 0 else f"{number}.{index}"
                await page.screenshot(path=RESULTS / f"{name}-{suffix}.png")
        await context.close()
    assert errors.errors == [], errors.errors


@pytest.fixture
async def context(new_context: NewContext) -> BrowserContext:
    """A fresh browser profile (see new_context)."""
    return await new_context()
