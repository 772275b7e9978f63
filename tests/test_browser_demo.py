"""Demo mode in a real browser: a visitor is their browser. The run they start from the Pretrain page stays
theirs after a reload (its id lives in the browser's storage); another browser sees it but cannot stop it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import running_app, wait_for

CHROMIUM = Path("/usr/bin/chromium")
playwright = pytest.importorskip("playwright.sync_api")

if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium) for the browser tests", allow_module_level=True)

SLOW_CLICK_MS = 90_000  # as in test_browser: 2 busy cores


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    store = tmp_path_factory.mktemp("browser-demo-store")
    with running_app(store, tmp_path_factory.mktemp("browser-demo-app") / "app.log", LAB_DEMO_MODE="1", LAB_DEMO_SEED="0",
                     LAB_DEMO_MAX_STEPS="100000") as url:
        yield url


def start_nano(page) -> str:
    page.get_by_role("tab", name="Pretrain").click()
    page.locator("#pretrain-field-preset input").fill("nano")
    page.keyboard.press("Enter")
    steps = page.locator("#pretrain-field-max_steps input")
    steps.fill("100000")  # more than a loaded machine runs in the test: it must still be running at the stop
    steps.press("Tab")
    cli = lambda: page.locator("#pretrain-cli").inner_text()  # noqa: E731
    wait_for(lambda: "--preset nano --max-steps 100000" in cli(), 60, "the CLI command to follow the form", shown=cli)
    page.locator("#pretrain-start").click()
    wait_for(lambda: "queued" in page.locator("#pretrain-message").inner_text(), 30, "the run to be queued")
    return re.search(r"Run (\S+) queued", page.locator("#pretrain-message").inner_text()).group(1)


def test_a_run_stays_its_browsers_across_a_reload_and_no_one_elses(demo_url):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        viewport = {"width": 1400, "height": 1600}
        mine, theirs = browser.new_context(viewport=viewport), browser.new_context(viewport=viewport)  # two browsers: two storages
        try:
            page = mine.new_page()
            page.set_default_timeout(SLOW_CLICK_MS)
            page.goto(demo_url)
            run_id = start_nano(page)

            other = theirs.new_page()
            other.set_default_timeout(SLOW_CLICK_MS)
            other.goto(demo_url)
            other.get_by_role("tab", name="Pretrain").click()
            wait_for(lambda: run_id in other.locator("#pretrain-progress").inner_text(), 60, "the other browser to show the run")
            other.locator("#pretrain-stop").click()
            wait_for(lambda: "started by another visitor" in other.locator("#pretrain-message").inner_text(), 30, "the refusal")

            page.reload()  # a new gradio session, the same browser
            page.get_by_role("tab", name="Pretrain").click()
            wait_for(lambda: run_id in page.locator("#pretrain-progress").inner_text(), 60, "the run after the reload")
            page.locator("#pretrain-stop").click()
            # "stopping" holds until the run ends; a quick stop can end it between two looks
            wait_for(lambda: "stopping" in page.locator("#pretrain-message").inner_text()
                     or "stopped" in page.locator("#pretrain-progress").inner_text(), 30, "the stop to be accepted",
                     shown=lambda: page.locator("#pretrain-message").inner_text())
            assert "another visitor" not in page.locator("#pretrain-message").inner_text()
            wait_for(lambda: "stopped" in page.locator("#pretrain-progress").inner_text() or "failed" in page.locator("#pretrain-progress").inner_text(),
                     120, "the run to end", shown=lambda: page.locator("#pretrain-progress").inner_text())
        finally:
            browser.close()
