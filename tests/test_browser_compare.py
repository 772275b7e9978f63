"""The Compare page in a real browser (Debian's Chromium driven by Playwright): fill the panes with a nano
lifecycle (base → instruct → aligned), send one prompt, watch three answers stream in side by side, vote
one best, and see the preference counter rise."""

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

PANES = 3

# Records, in the page itself, every state the panes pass through (a MutationObserver sees each DOM
# update, however short-lived), so that the test can tell a streamed answer from one that came at once.
WATCH_PANES = """n => {
    window.seen = {streaming: Array(n).fill(false), chats: Array.from({length: n}, () => [])};
    const look = () => {
        for (let i = 0; i < n; i++) {
            const stats = document.querySelector(`#compare-stats-${i}`)?.innerText || "";
            if (stats.includes("streaming")) window.seen.streaming[i] = true;
            const chat = document.querySelector(`#compare-chat-${i}`)?.innerText || "";
            const states = window.seen.chats[i];
            if (states[states.length - 1] !== chat) states.push(chat);
        }
    };
    new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def pairs_counted(page) -> int | None:
    match = re.search(r"(\d+)\s+preference pairs", page.locator("#compare-counter").inner_text())
    return int(match.group(1)) if match else None


def test_compare_page_streams_a_lifecycle_side_by_side_and_counts_a_vote(lab_app, nano_run, nano_sft_run, nano_dpo_run, tmp_path):
    from lab.world import build_world

    question = build_world().facts[0].question  # a toy-world question: the gold judge scores the answers too
    dataset = f"browser-{os.getpid()}"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(90_000)  # 30 s is short on 2 busy cores (see test_browser.SLOW_CLICK_MS)
        try:
            page.goto(lab_app)
            page.get_by_role("tab", name="Compare").click()
            # the tab bar stays whole: every page's tab once (a stray component between tabs once broke it)
            tabs = [t.inner_text() for t in page.locator("button[role=tab]").all() if t.is_visible()]
            assert tabs == ["Home", "Data & tokenizer", "Pretrain", "SFT", "Align", "Feedback", "Compare", "Runs", "Experiments"], tabs

            # The aligned run's lifecycle fills three panes: base → instruct → aligned, by parent links.
            page.locator("#compare-lifecycle input").click()
            page.get_by_role("option", name=f"{nano_dpo_run.name} · dpo").click()
            page.locator("#compare-fill").click()
            wait_for(lambda: "lifecycle of" in page.locator("#compare-message").inner_text(), 30, "the lifecycle message")
            for i, run in enumerate((nano_run, nano_sft_run, nano_dpo_run)):
                wait_for(lambda: run.name in page.locator(f"#compare-title-{i}").inner_text(), 30, f"pane {i}'s title")
            assert page.locator("#compare-chat-2").is_visible() and not page.locator("#compare-chat-3").is_visible()

            # A fresh preference dataset: its counter starts at 0.
            box = page.locator("#compare-dataset").get_by_role("textbox")
            box.fill(dataset)
            box.blur()
            wait_for(lambda: f"{dataset}.jsonl" in page.locator("#compare-counter").inner_text(), 30, "the counter to show the new dataset")
            assert pairs_counted(page) == 0

            page.evaluate(WATCH_PANES, PANES)
            page.locator("#compare-prompt").get_by_role("textbox").fill(question)
            page.locator("#compare-send").click()
            # Done when every pane's stats show its token count (while streaming they read "streaming… mode").
            wait_for(lambda: all(re.search(r"\d+ tokens", page.locator(f"#compare-stats-{i}").inner_text()) for i in range(PANES)),
                       180, "all three answers to finish")
            stats = [page.locator(f"#compare-stats-{i}").inner_text() for i in range(PANES)]
            assert "raw" in stats[0] and "chat" in stats[1] and "chat" in stats[2]  # mode auto: the base model continues text
            assert all("gold" in s for s in stats)  # the world's question: the judge scored every answer
            seen = page.evaluate("() => window.seen")
            for i in range(PANES):
                chat = page.locator(f"#compare-chat-{i}").inner_text()
                assert question in chat, f"pane {i} lost the prompt: {chat!r}"
                answer = chat.split(question, 1)[1].strip()
                assert answer and answer != "…", f"pane {i} has no answer: {chat!r}"
                # Streamed: the pane was shown unfinished before its final answer.
                assert seen["streaming"][i], f"pane {i} never showed a streaming state"
                assert seen["chats"][i][-1] == chat and len(seen["chats"][i]) >= 2, f"pane {i} went through {seen['chats'][i]!r}"

            # B is best: B is preferred to A and to C (a pair is left out if its two answers are identical).
            before = pairs_counted(page)
            page.locator("#compare-best-1").click()
            wait_for(lambda: "saved B as preferred" in page.locator("#compare-message").inner_text(), 30, "the vote's message")
            message = page.locator("#compare-message").inner_text()
            added = int(re.search(r"preferred to (\d+) other", message).group(1))
            skipped = int(re.search(r"\((\d+) left out", message).group(1)) if "left out" in message else 0
            assert added >= 1 and added + skipped == PANES - 1, message
            wait_for(lambda: pairs_counted(page) == before + added, 30, f"the counter to rise by {added}")
            assert "from 1 votes" in page.locator("#compare-counter").inner_text().replace("**", "")
            # The same round cannot be voted on twice.
            page.locator("#compare-best-0").click()
            wait_for(lambda: "already voted" in page.locator("#compare-message").inner_text(), 30, "the second vote to be refused")
            assert pairs_counted(page) == before + added
        finally:
            shot = tmp_path / "compare-page.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("LAB_SCREENSHOTS"):
                Path(os.environ["LAB_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(os.environ["LAB_SCREENSHOTS"]) / shot.name)
            browser.close()
