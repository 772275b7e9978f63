"""The Pretrain page in a real browser (Debian's Chromium driven by Playwright): set up a nano run, start
it, watch its curve grow, stop it."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import wait_for

CHROMIUM = Path("/usr/bin/chromium")
playwright = pytest.importorskip("playwright.sync_api")

if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium) for the browser tests", allow_module_level=True)


# Playwright's default of 30 s per action is short on 2 busy cores (a training job, the app, another test
# worker, two pages redrawing plots): a tab click once timed out there while the page was still rendering.
SLOW_CLICK_MS = 90_000


def step_shown(page) -> int:
    match = re.search(r"step (\d+)", page.locator("#pretrain-progress").inner_text())
    return int(match.group(1)) if match else 0


def test_pretrain_page_starts_shows_live_curves_and_stops(lab_app, tmp_path):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.set_default_timeout(SLOW_CLICK_MS)
        run_id = None
        try:
            page.goto(lab_app)
            page.get_by_role("tab", name="Pretrain").click()
            page.locator("#pretrain-field-preset input").click()
            page.get_by_role("option", name="nano").click()
            # Steps enough that the run is still going when Stop is pressed, on however fast a machine.
            page.locator("#pretrain-field-max_steps input").fill("100000")
            page.locator("#pretrain-field-max_steps input").press("Enter")
            page.locator("#pretrain-field-batch_size input").fill("8")
            page.locator("#pretrain-field-batch_size input").press("Enter")
            # The CLI box follows the form (and names the tokenizer the form picked, when the store has one).
            cli = lambda: page.locator("#pretrain-cli").inner_text()  # noqa: E731
            edited = ("--preset nano", "--max-steps 100000", "--batch-size 8")
            wait_for(lambda: all(flag in cli() for flag in edited), 60, "the CLI command to follow the form", shown=cli)

            page.locator("#pretrain-start").click()
            wait_for(lambda: "queued" in page.locator("#pretrain-message").inner_text(), 30, "the run to be queued")
            run_id = re.search(r"Run (\S+) queued", page.locator("#pretrain-message").inner_text()).group(1)
            wait_for(lambda: run_id in page.locator("#pretrain-progress").inner_text() and step_shown(page) >= 1, 180, "the first logged step")
            first = step_shown(page)
            wait_for(lambda: step_shown(page) > first, 120, "the step count to rise")
            assert "running" in page.locator("#pretrain-progress").inner_text()
            # The plot has data (while a run is active its curves follow the rows every few seconds).
            wait_for(lambda: page.locator("#pretrain-curves .js-plotly-plot g.trace").count() > 0, 30, "the curves to show the rows")

            # A second browser re-attaches: its Pretrain page opens on the running job, curves from step 1.
            other = browser.new_context().new_page()
            other.set_default_timeout(SLOW_CLICK_MS)
            other.goto(lab_app)
            other.get_by_role("tab", name="Pretrain").click()
            wait_for(lambda: run_id in other.locator("#pretrain-progress").inner_text() and step_shown(other) >= first, 60, "the second browser to show the run")
            wait_for(lambda: other.locator("#pretrain-curves .js-plotly-plot g.trace").count() > 0, 30, "the second browser's curves")
            xs = other.evaluate("() => document.querySelector('#pretrain-curves .js-plotly-plot').data.find(t => t.name === 'loss').x")
            assert min(xs) == 1  # read from the first logged step, not from where the second browser came in
            other.context.close()

            page.locator("#pretrain-stop").click()
            progress = lambda: page.locator("#pretrain-progress").inner_text()  # noqa: E731
            wait_for(lambda: "stopped" in progress(), 90, "the status to read stopped", shown=progress)
        finally:
            shot = tmp_path / "pretrain-page.png"
            page.screenshot(path=str(shot), full_page=True)
            if run_id:  # a run left going would hold the job slot and stall every later test of this worker
                from lab import jobs
                from lab.runs import ACTIVE, Run

                run = Run.open(run_id)
                if run.status in ACTIVE:
                    jobs.stop(run, grace=10, wait=True)
            if os.environ.get("LAB_SCREENSHOTS"):
                Path(os.environ["LAB_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(os.environ["LAB_SCREENSHOTS"]) / shot.name)
            browser.close()


def test_a_mistake_shows_as_a_message_not_a_traceback(lab_app, nano_run):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(lab_app)
            page.get_by_role("tab", name="SFT").click()
            parent = page.locator("#sft-field-parent input")
            # The page load pre-selects the newest pretraining run (nano_run); on a loaded machine that can land after a value
            # typed at once and replace it, so type once it has
            wait_for(lambda: parent.input_value(), 60, "the parent picker's pre-selection")
            parent.fill("no-such-run")  # a model that is not there
            parent.press("Enter")
            page.locator("#sft-start").click()
            shown = lambda: page.locator("#sft-message").inner_text()  # noqa: E731
            wait_for(lambda: "is not a run id" in shown(), 60, "the message", shown=shown)
            message = page.locator("#sft-message").inner_text()
            assert "the Runs page" in message and "llm-lab" not in message, message  # the page's words, not the CLI's
            assert "Traceback" not in page.content()
        finally:
            browser.close()
