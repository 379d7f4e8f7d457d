"""The web UI drawing a very long answer (issue 12), run by hand:

    .venv/bin/python bench/ui_stream.py [--words 100000] [--runs 2]

A real `tether serve` process and Debian's headless Chromium (as the browser tests drive it). The page
sends `/stream N` (the demo agent's words as fast as the server streams them) and records, from its
own requestAnimationFrame loop, every frame's duration while the answer streams in, and Chromium's
long tasks (over 50 ms on the main thread); the answer is checked whole at the end. Reported: frame
times (median, p95, p99, max), frames over 50 ms, the longest task, and how long after the server's
last event the page had drawn the whole answer.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.async_api import async_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

RECORD = """() => {
  window.__frames = [];
  window.__tasks = [];
  new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__tasks.push(e.duration); })
    .observe({ type: "longtask", buffered: true });
  let last = performance.now();
  const tick = (now) => {
    window.__frames.push(now - last);
    last = now;
    if (!window.__stop) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def serve(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", "serve", "--port", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        ready = re.search(r"Tether is ready: (http://[\d.]+:\d+)/", line)
        if ready:
            return proc, ready[1]
    raise RuntimeError("the server did not start")


async def one_run(url: str, words: int) -> dict[str, float]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await browser.new_page(viewport={"width": 1100, "height": 760})
        await page.goto(url)
        await page.wait_for_selector("#input")
        await page.evaluate(RECORD)
        started = time.monotonic()
        await page.fill("#input", f"/stream {words}")
        await page.press("#input", "Enter")
        await page.wait_for_selector("#stop", state="visible")
        await page.wait_for_selector("#send", state="visible", timeout=600_000)  # the run has ended
        ended = time.monotonic()
        last = f"w{words}"
        await page.wait_for_function(
            "last => (document.querySelector('#messages > li.assistant:last-child .text')?.textContent || '')"
            ".trimEnd().endsWith(last)",
            arg=last,
            timeout=600_000,
        )
        drawn = time.monotonic()
        frames, tasks = await page.evaluate("() => { window.__stop = true; return [window.__frames, window.__tasks]; }")
        text = await page.locator("#messages > li.assistant:last-child .text").inner_text()
        assert text.split() == [f"w{i}" for i in range(1, words + 1)], "the answer is not whole"
        await browser.close()
    return {
        "stream_s": ended - started,
        "lag_s": drawn - ended,
        "frames": len(frames),
        "p50": statistics.median(frames),
        "p95": quantile(frames, 0.95),
        "p99": quantile(frames, 0.99),
        "max": max(frames),
        "over_50": sum(f > 50 for f in frames),
        "longest_task": max(tasks, default=0.0),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--words", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        proc, url = serve(Path(data_dir))
        try:
            for run in range(1, args.runs + 1):
                r = await one_run(url, args.words)
                print(
                    f"run {run}: /stream {args.words} took {r['stream_s']:.1f} s, whole on the page "
                    f"{r['lag_s']:.2f} s after; {r['frames']:.0f} frames: median {r['p50']:.1f} ms, "
                    f"p95 {r['p95']:.0f} ms, p99 {r['p99']:.0f} ms, max {r['max']:.0f} ms, "
                    f"{r['over_50']:.0f} over 50 ms; longest task {r['longest_task']:.0f} ms",
                    flush=True,
                )
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    asyncio.run(main())
