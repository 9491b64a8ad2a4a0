"""The web chat widget in a real headless Chromium (Debian's `chromium`, driven by Playwright):
the demo page the gateway serves, a streamed reply, feedback, a reload that keeps the
conversation, a new conversation; screenshots are kept under .local/artifacts/."""

import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Route, async_playwright, expect

from .conftest import ROOT, Platform
from .markers import word_marker

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("SWITCHBOARD_E2E_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / ".local" / "artifacts"
REPLY_TIMEOUT_MS = 30_000

# Counts the changes of the reply's text while it streams (a MutationObserver in the page).
WATCH_STREAMING = """() => {
  const root = document.querySelector('[data-switchboard-widget]').shadowRoot;
  window.__replyUpdates = 0;
  new MutationObserver(() => { window.__replyUpdates += 1; })
    .observe(root.querySelector('.log'), {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - a stat, once
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        await chromium.close()


def shot(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


async def paced(route: Route) -> None:
    """The widget's chat request, asking the simulator for tokens 20 ms apart (as a provider
    sends them) so that the page sees them arrive one by one; the request goes on unchanged
    otherwise, to the real gateway."""
    body = json.loads(route.request.post_data or "{}")
    body.setdefault("metadata", {})["sim.delay_ms"] = "20"
    await route.continue_(post_data=json.dumps(body))


async def send(page: Page, message: str) -> None:
    box = page.get_by_label("Your message")
    await box.fill(message)
    await box.press("Enter")  # the keyboard sends


async def test_the_demo_page_streams_a_reply_that_survives_a_reload(
    browser: Browser, platform: Platform
) -> None:
    page = await browser.new_page(viewport={"width": 1100, "height": 760})
    await page.route("**/v1/chat/completions", paced)
    await page.goto(f"{platform.http_url}/")
    await expect(page.get_by_role("region", name="Demo Retail support")).to_be_visible()
    await page.evaluate(WATCH_STREAMING)

    hello = f"Hello! I am {word_marker(6)}, what can you help me with?"
    await send(page, hello)
    user = page.locator(".msg.user")
    await expect(user).to_have_text([hello])
    reply = page.locator('.msg.assistant[data-complete="true"] .text')
    await expect(reply).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
    text = await reply.inner_text()
    assert len(text) > 20
    # Streamed: the reply's text changed many times before it was complete.
    assert await page.evaluate("window.__replyUpdates") > 10

    # Thumbs up, over HTTP, tied to the turn (a refused rating would say so in the status).
    helpful = page.get_by_role("button", name="Helpful", exact=True)
    await helpful.click()
    await expect(helpful).to_have_attribute("aria-pressed", "true")
    await expect(page.locator(".status")).to_have_text("Thanks for your feedback.")
    await page.screenshot(path=shot("widget-streamed-reply.png"))

    await page.reload()
    await expect(page.locator(".msg.user")).to_have_text([hello])
    await expect(page.locator(".msg.assistant .text")).to_have_text([text])
    # The conversation goes on after the reload: a second turn in the same conversation.
    await send(page, "Thanks, and how do returns work?")
    await expect(page.locator('.msg.assistant[data-complete="true"]')).to_have_count(
        2, timeout=REPLY_TIMEOUT_MS
    )
    await page.screenshot(path=shot("widget-after-reload.png"))

    await page.get_by_role("button", name="Start a new conversation").click()
    await expect(page.locator(".msg")).to_have_count(0)
    await page.reload()
    await expect(page.get_by_label("Your message")).to_be_visible()
    await expect(page.locator(".msg")).to_have_count(0)


async def test_the_widget_on_a_phone_hands_off_to_a_person(
    browser: Browser, platform: Platform
) -> None:
    context = await browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    page = await context.new_page()
    await page.goto(f"{platform.http_url}/")
    panel = page.get_by_role("region", name="Demo Retail support")
    box = await panel.bounding_box()
    assert box is not None and box["width"] == 390  # full screen on a phone
    await send(page, "This is going nowhere, I want to speak to a human agent.")
    notice = page.locator(".handoff")
    await expect(notice).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
    await expect(notice).to_have_text(re.compile(r"A person will take over .*ticket \S+"))
    await page.screenshot(path=shot("widget-phone-handoff.png"))
    # Escape closes the panel and gives the focus back to the launcher.
    await page.get_by_label("Your message").press("Escape")
    launcher = page.get_by_role("button", name="Demo Retail support")
    await expect(launcher).to_be_focused()
    await context.close()
