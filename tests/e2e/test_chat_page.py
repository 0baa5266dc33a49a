"""The chat page in a real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gateway_harness import make_config, running_gateway, token

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture
async def browser_page() -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                   args=CHROMIUM_ARGS)
        page = await browser.new_page()
        yield page
        await browser.close()


async def _chat(page, base_url: str, jwt: str, message: str) -> None:  # type: ignore[no-untyped-def]
    await page.goto(base_url)
    await page.fill("#token", jwt)
    await page.click("#connect")
    await page.wait_for_selector("#input:not([disabled])")
    await page.fill("#input", message)
    await page.click("#send")


async def test_send_a_message_and_watch_it_stream_with_usage(
        tmp_path: Path, redis_url: str, browser_page) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    config = make_config(tmp_path, redis_url, mock={"token_delay_ms": 15})
    async with running_gateway(config) as server:
        await _chat(page, str(server.make_url("/")), token(), "Hello from the browser")
        assistant = page.locator(".msg.assistant").last
        # Streaming: partial text shows up before the turn's usage line does.
        await page.wait_for_function(
            "() => { const m = [...document.querySelectorAll('.msg.assistant')].pop();"
            " return m && m.textContent.startsWith('[2 messages') && !m.querySelector('.meta'); }")
        await assistant.locator(".meta").wait_for()
        meta = await assistant.locator(".meta").text_content()
        await page.locator("#conversations li").first.wait_for()
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "chat_page.png"), full_page=True)
    assert meta is not None and "mock · gpt-4o-mini" in meta and "tokens" in meta
    assert "$0.0000" in meta and "stop" in meta
    assert (ARTIFACTS / "chat_page.png").stat().st_size > 10_000


async def test_budget_error_is_shown_in_plain_words(
        tmp_path: Path, redis_url: str, browser_page) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    config = make_config(tmp_path, redis_url, plans={"free": {"tokens_per_day": 30}})
    async with running_gateway(config) as server:
        await _chat(page, str(server.make_url("/")), token(), "Hello")
        error = page.locator(".msg.error")
        await error.wait_for()
        text = await error.text_content()
    assert text == "Your token budget is used up for today."
