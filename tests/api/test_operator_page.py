"""Issue 8 §8: the operator page in real headless Chromium (Debian's, driven by Playwright) against a
real uvicorn on loopback: runs, a run's symbols with per-stage durations, its setups and decisions,
breakers and limiters, and a run followed live from its SSE stream until it completes."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path

import pytest
from tests.api.helpers import SIM_SYMBOLS, GateStage, serve, wait_for_run

from jax_assistant.api import create_app
from jax_assistant.config import Settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# No skip when Chromium is missing: .ci/run installs it, and a skipped browser test would hide that.


@pytest.fixture
async def browser_page(tmp_path: Path) -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        # A persistent context is the way to hand Chromium a fresh user-data-dir of our own.
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context.pages[0] if context.pages else await context.new_page()
        finally:
            await context.close()


def pixel_spread(png: bytes) -> float:
    """Standard deviation of the grey levels: about 0 for a blank (one-colour) screenshot."""
    from PIL import Image, ImageStat

    image = Image.open(BytesIO(png)).convert("L")
    return float(ImageStat.Stat(image).stddev[0])


async def test_operator_page_follows_a_run_live(
    gated_settings: Settings, api_headers: dict[str, str], browser_page: object, tmp_path: Path
) -> None:
    from playwright.async_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    console_errors: list[str] = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)

    async with serve(create_app(gated_settings), headers=api_headers) as service:
        client = service.client
        # The page starts before the run: it must pick the run up and then follow it live.
        await page.goto(f"{service.server.url}/ui")
        key = api_headers.get("Authorization", "").removeprefix("Bearer ")
        if key:
            await page.fill("#api-key", key)
            await page.click("#key-save")
        await expect(page.locator("#conn")).to_have_text("connected", timeout=10_000)
        # One row per configured breaker (the shipped defaults: memory, research.dexter, research.llm).
        configured = len(Settings().resilience.breakers)
        await expect(page.locator("#breakers tbody tr")).to_have_count(configured)
        await expect(page.locator("#breakers")).to_contain_text("research.dexter")
        await expect(page.locator("#limiters")).to_contain_text("rate limit")

        resp = await client.post("/process", json={"symbols": list(SIM_SYMBOLS[:3])})
        run_id = resp.json()["runId"]
        await GateStage.wait_entered(3)
        row = page.locator(f'#runs tr[data-run="{run_id}"]')
        await expect(row).to_contain_text("running", timeout=10_000)
        await row.click()
        await expect(page.locator("#run-id")).to_have_text(run_id)
        await expect(page.locator("#live")).to_be_visible(timeout=10_000)  # attached to the SSE stream
        await expect(page.locator("#run-status")).to_have_text("running")

        GateStage.opened.set()
        await wait_for_run(client, run_id)
        # Updated from the stream (then the stored results): the run, its symbols and their stages.
        await expect(page.locator("#run-status")).to_have_text("completed", timeout=10_000)
        await expect(page.locator("#live")).to_be_hidden(timeout=10_000)
        symbols = page.locator("#symbols tbody tr")
        await expect(symbols).to_have_count(3)
        for sym in SIM_SYMBOLS[:3]:
            await expect(page.locator(f'#symbols tr[data-symbol="{sym}"]')).to_contain_text("succeeded")
        stages = page.locator("#symbols tbody tr").first.locator(".stage")
        await expect(stages).to_have_count(len(gated_settings.pipeline))
        # Each stage: its name, then its duration in ms (from the stored results, not the stream).
        first = gated_settings.pipeline[0]
        await expect(stages.first).to_have_text(re.compile(rf"^{first} \d+$"))

        trades = (await client.get("/trades", params={"runId": run_id, "limit": 1000})).json()
        await expect(page.locator("#trades tbody tr")).to_have_count(len(trades))
        if trades:
            await expect(page.locator("#trades")).to_contain_text(trades[0]["setup"]["id"])
            assert await page.locator("#trades .s-allowed, #trades .s-rejected").count() == len(trades)
        await expect(page.locator("#flow-stats")).to_contain_text("queue depth")

        shot = await page.screenshot(path=str(tmp_path / "operator.png"), full_page=True)
        assert pixel_spread(shot) > 10, "the screenshot is (nearly) blank"
        assert console_errors == []  # checked while the server is still up
        # Leave the page (its polling and connections end) before the server shuts down.
        await page.goto("about:blank")
