"""Home in a real browser, as a newcomer meets it: an empty store → "Run the whole lifecycle" (nano) → its
progress step by step → the report card → "Compare these models" answers with three models side by side.
Screenshots of each stage of the walk go to the test's folder (and to $LAB_SCREENSHOTS when set)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import running_app, wait_for

CHROMIUM = Path("/usr/bin/chromium")
playwright = pytest.importorskip("playwright.sync_api")

if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium) for the browser tests", allow_module_level=True)

SLOW_CLICK_MS = 90_000  # as in test_browser: 2 busy cores


def test_home_runs_the_whole_lifecycle_and_compares_its_models(tmp_path_factory, tmp_path):
    store = tmp_path_factory.mktemp("home-store")
    shots = []

    def shot(page, name):
        path = tmp_path / f"home-{len(shots)}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    with running_app(store, tmp_path / "app.log", LAB_MAX_JOBS="1") as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.set_default_timeout(SLOW_CLICK_MS)
        try:
            page.goto(url)
            # Home is the first page; in an empty store it says where to start
            wait_for(lambda: "run the whole lifecycle" in page.locator("#home-next").inner_text().lower(), 60, "Home's next step")
            assert "nano" in page.locator("#home-expected").inner_text()
            shot(page, "empty")
            page.locator("#home-start").click()
            wait_for(lambda: "queued" in page.locator("#home-message").inner_text(), 60, "the lifecycle to be queued")
            progress = lambda: page.locator("#home-progress").inner_text()  # noqa: E731
            # progress per step: the pretrain step shows its run and its step count as it trains
            wait_for(lambda: "pretrain" in progress() and "running (step" in progress(), 300, "the pretrain step's progress", shown=progress)
            wait_for(lambda: page.locator("#home-loss .js-plotly-plot g.trace").count() > 0, 120, "the live loss of the step that trains")
            shot(page, "running")
            wait_for(lambda: page.locator("#home-report").is_visible() and "Report card" in page.locator("#home-report").inner_text(), 900,
                     "the report card", shown=progress, poll=2)
            card = page.locator("#home-report").inner_text()
            assert "held-out bits per byte" in card and "win rate" in card and "DPO" in card and "PPO" in card
            assert "✓ PPO · completed" in page.locator("#home-box-ppo").inner_text()
            shot(page, "report-card")

            # a stage's box opens its page on the lifecycle's run
            page.locator("#home-box-sft").click()
            wait_for(lambda: "lifecycle-sft" in page.locator("#sft-progress").inner_text(), 60, "the SFT page on the lifecycle's run")
            page.get_by_role("tab", name="Home").click()

            page.locator("#home-compare").click()
            chips = page.locator("#compare-models .token")
            wait_for(lambda: chips.count() == 3, 60, "Compare filled with base, instruct and aligned")
            assert page.locator("#compare-prompt textarea").input_value().endswith("?")
            page.locator("#compare-send").click()
            for i in range(3):
                wait_for(lambda i=i: "tokens" in page.locator(f"#compare-stats-{i}").inner_text(), 180, f"answer {i + 1} of 3")
            shot(page, "compare")
        finally:
            if not shots or "compare" not in shots[-1].name:
                shot(page, "failed")
            browser.close()
            for run in store.iterdir():  # a job left going would outlive the test
                if (run / "run.json").exists() and json.loads((run / "run.json").read_text())["status"] in ("queued", "running"):
                    subprocess.run([sys.executable, "-m", "lab", "stop", run.name, "--grace", "10"], env={**os.environ, "LAB_CHECKPOINTS": str(store)}, capture_output=True)
            if os.environ.get("LAB_SCREENSHOTS"):
                Path(os.environ["LAB_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
                for path in shots:
                    shutil.copy(path, Path(os.environ["LAB_SCREENSHOTS"]) / path.name)
