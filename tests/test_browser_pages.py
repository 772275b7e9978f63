"""The pages as a newcomer meets them, in a real browser (Debian's Chromium driven by Playwright): a stage's
form starts on the run before it and survives a reload; Feedback's Save ranking counts what it saved, and so
do its AI labeler, with the pairs' provenance, and its thumbs up and down (KTO's labels);
deleting a run that others build on is refused with them named; a Compare vote in a conversation pairs only
answers to the same turns."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from conftest import llm_lab, read_jsonl, wait_for

CHROMIUM = Path("/usr/bin/chromium")
playwright = pytest.importorskip("playwright.sync_api")

if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium) for the browser tests", allow_module_level=True)

SLOW_CLICK_MS = 90_000  # as in test_browser: 2 busy cores


@pytest.fixture()
def page(lab_app, tmp_path, request):
    """A fresh browser (its own storage) on the lab; a full-page screenshot when the test ends."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(SLOW_CLICK_MS)
        page.goto(lab_app)
        try:
            yield page
        finally:
            shot = tmp_path / f"{request.node.name}.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("LAB_SCREENSHOTS"):
                Path(os.environ["LAB_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(os.environ["LAB_SCREENSHOTS"]) / shot.name)
            browser.close()


def text(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def newest_completed(stage: str) -> str:
    from lab import runs

    return [r.id for r in runs.list_runs() if r.stage == stage and r.status == "completed" and r.model_dir is not None][-1]


def test_a_form_starts_on_the_run_before_and_survives_a_reload(page, nano_run):
    page.get_by_role("tab", name="SFT").click()
    parent = page.locator("#sft-field-parent input")
    wait_for(lambda: parent.input_value(), 60, "the parent picker to fill in")
    # The newest completed pretrain run, labelled with what it is.
    assert parent.input_value().startswith(f"{newest_completed('pretrain')} · pretrain · completed · nano"), parent.input_value()

    steps = page.locator("#sft-field-max_steps input")
    steps.fill("7")
    steps.press("Enter")
    wait_for(lambda: "--max-steps 7" in text(page, "#sft-cli"), 30, "the command to follow the form")
    page.reload()
    page.get_by_role("tab", name="SFT").click()
    steps = page.locator("#sft-field-max_steps input")
    wait_for(lambda: steps.input_value() == "7", 60, "the form as this browser left it", shown=steps.input_value)
    wait_for(lambda: "--max-steps 7" in text(page, "#sft-cli"), 30, "the command of the kept form")

    page.locator("#sft-defaults").click()
    from lab.stages import sft

    wait_for(lambda: steps.input_value() == str(sft.Config().max_steps), 30, "the default steps again", shown=steps.input_value)

    # PPO's reward picker offers the toy world's judge, as its help says.
    page.get_by_role("tab", name="Align").click()
    page.get_by_role("tab", name="PPO").click()
    page.locator("#ppo-field-reward input").click()
    assert any(o.inner_text().startswith("gold") for o in page.get_by_role("option").all())


def test_feedback_save_counts_the_ranking_and_offers_the_export(page, nano_sft_run, store):
    dataset = f"browser-feedback-{os.getpid()}"
    page.get_by_role("tab", name="Feedback").click()
    page.locator("#feedback-model input").click()
    page.get_by_role("option", name=f"{nano_sft_run.name} · sft").click()
    page.locator("#feedback-k input[type=number]").fill("2")
    page.locator("#feedback-k input[type=number]").press("Enter")
    box = page.locator("#feedback-dataset textarea, #feedback-dataset input").first
    box.fill(dataset)
    box.blur()
    wait_for(lambda: f"{dataset}.jsonl" in text(page, "#feedback-counter"), 30, "the counter on the new dataset")
    page.locator("#feedback-sample").click()
    wait_for(lambda: "rank the answers" in text(page, "#feedback-message"), 120, "two answers", shown=lambda: text(page, "#feedback-message"))
    answers = [page.locator(f"#feedback-answer-{i} textarea").input_value() for i in range(2)]
    page.locator("#feedback-rank-0").get_by_label("1", exact=True).check()
    page.locator("#feedback-rank-1").get_by_label("2", exact=True).check()
    page.locator("#feedback-save").click()
    wait_for(lambda: "saved" in text(page, "#feedback-message"), 30, "the save's message", shown=lambda: text(page, "#feedback-message"))
    assert answers[0].strip() != answers[1].strip() and all(a.strip() for a in answers), answers  # at temperature 1: two answers
    assert len(read_jsonl(store / "feedback" / f"{dataset}.jsonl")) == 1
    counter = text(page, "#feedback-counter").replace("**", "")
    assert "1 preference pairs from 1 rankings" in counter, counter
    assert "Error" not in text(page, "#feedback-message")
    # The dataset downloads from the page.
    wait_for(lambda: page.locator("#feedback-export a").count() > 0, 30, "the export's download link")
    assert f"{dataset}.jsonl" in page.locator("#feedback-export").inner_text().replace("\n", "")

    # AI feedback: a labeler (any instruct model; here the same nano SFT model) ranks the same two answers under
    # each principle of the constitution, and the pairs are counted with who labeled them.
    page.locator("#feedback-ai").get_by_text("AI feedback").click()
    principles = page.locator("#feedback-constitution textarea")
    wait_for(lambda: principles.input_value().startswith("correct: "), 30, "the constitution", shown=principles.input_value)
    page.locator("#feedback-labeler input").click()
    page.get_by_role("option", name=f"{nano_sft_run.name} · sft").click()
    page.locator("#feedback-ai-rank").click()
    wait_for(lambda: "the labeler" in text(page, "#feedback-message"), 120, "the labeler's pairs", shown=lambda: text(page, "#feedback-message"))
    assert "under correct, harmless, polite, concise" in text(page, "#feedback-message")
    rows = read_jsonl(store / "feedback" / f"{dataset}.jsonl")
    assert rows[0]["labeled_by"] == "human" and len(rows) == 1 + 4  # one pair per principle (the labeler never ties)
    assert {r["principle"] for r in rows[1:]} == {"correct", "harmless", "polite", "concise"}
    assert all(r["labeled_by"] == nano_sft_run.name and r["margin"] > 0 for r in rows[1:])
    wait_for(lambda: "5 preference pairs from 5 rankings" in text(page, "#feedback-counter").replace("**", ""), 30, "the counter with the AI's pairs")

    # Thumbs up and down on single answers: KTO's labels, in the dataset's -labels companion, counted and trained on.
    page.locator("#feedback-thumb-0").get_by_label("👍").check()
    page.locator("#feedback-thumb-1").get_by_label("👎").check()
    page.locator("#feedback-save-thumbs").click()
    wait_for(lambda: "labelled good or bad" in text(page, "#feedback-message"), 30, "the thumbs' message", shown=lambda: text(page, "#feedback-message"))
    labels = read_jsonl(store / "feedback" / f"{dataset}-labels.jsonl")
    assert [(r["completion"][0]["content"], r["label"]) for r in labels] == [(answers[0].strip(), True), (answers[1].strip(), False)]
    wait_for(lambda: "2 answers labelled good or bad" in text(page, "#feedback-counter").replace("**", ""), 30, "the counter with the thumbs")
    page.locator("#feedback-train-kto").click()
    wait_for(lambda: "KTO run" in text(page, "#feedback-message"), 30, "the KTO run", shown=lambda: text(page, "#feedback-message"))
    kto = re.search(r"KTO run (\S+) queued on 2 labelled answers", text(page, "#feedback-message"))
    assert kto, text(page, "#feedback-message")
    llm_lab("stop", kto.group(1))  # the button's job is checked; its training is test_compare's
    # Undo takes back the newest save, the thumbs, and leaves the pairs.
    page.locator("#feedback-undo").click()
    wait_for(lambda: "removed the last thumbs" in text(page, "#feedback-message"), 30, "the undo", shown=lambda: text(page, "#feedback-message"))
    assert not (store / "feedback" / f"{dataset}-labels.jsonl").exists() and len(read_jsonl(store / "feedback" / f"{dataset}.jsonl")) == 5


def test_deleting_a_run_others_build_on_is_refused_with_them_named(page, nano_sft_run, nano_dpo_run):
    page.get_by_role("tab", name="Runs").click()
    page.locator("#runs-picked input").click()
    page.get_by_role("option", name=nano_sft_run.name, exact=True).click()
    page.locator("#runs-delete").click()
    wait_for(lambda: page.locator("#runs-question").is_visible() and "cannot go alone" in text(page, "#runs-question"), 90, "the question")  # it reads every run of the store: slow on 2 busy cores
    question = text(page, "#runs-question")
    assert nano_dpo_run.name in question and "dpo" in question, question  # the LoRA run on it, by name and stage
    assert not page.locator("#runs-delete-yes").is_visible()  # no plain delete while runs depend on it
    assert page.locator("#runs-delete-all").is_visible()
    page.locator("#runs-delete-cancel").click()
    wait_for(lambda: "nothing deleted" in text(page, "#runs-outcome"), 30, "the cancel's message")
    assert not page.locator("#runs-question").is_visible()
    assert nano_sft_run.name in page.locator("#runs-picked input").input_value()  # the run card stays
    assert nano_sft_run.is_dir() and nano_dpo_run.is_dir()


def test_a_compare_vote_in_a_conversation_pairs_answers_to_the_same_turns(page, nano_run, nano_sft_run, store):
    from lab.world import build_world

    first, second = (f.question for f in build_world().facts[:2])
    dataset = f"browser-turns-{os.getpid()}"
    page.get_by_role("tab", name="Compare").click()
    for run in (nano_run, nano_sft_run):
        page.locator("#compare-models input").click()
        page.get_by_role("option", name=re.compile(rf"^{run.name} · ")).click()
    page.keyboard.press("Escape")
    box = page.locator("#compare-dataset textarea, #compare-dataset input").first
    box.fill(dataset)
    box.blur()

    def send(prompt: str, turn: int):
        page.locator("#compare-prompt textarea").fill(prompt)
        page.locator("#compare-send").click()
        wait_for(lambda: all(re.search(r"\d+ tokens", text(page, f"#compare-stats-{i}")) for i in range(2)), 180, f"round {turn}'s answers")
        if turn > 1:
            wait_for(lambda: f"turn {turn}" in text(page, "#compare-message"), 30, "the turn count")

    # Two rounds with no vote: the base and the instruct model went on from their own first answers.
    send(first, 1)
    send(second, 2)
    page.locator("#compare-best-1").click()
    wait_for(lambda: "differs" in text(page, "#compare-message"), 30, "the refusal", shown=lambda: text(page, "#compare-message"))
    assert not (store / "feedback" / f"{dataset}.jsonl").exists()

    # A vote each round: the conversation goes on from the chosen answer, so round 2 can be voted on too.
    page.locator("#compare-clear").click()
    send(first, 1)
    page.locator("#compare-best-1").click()
    wait_for(lambda: "goes on from B's answer" in text(page, "#compare-message"), 30, "the vote", shown=lambda: text(page, "#compare-message"))
    send(second, 2)
    page.locator("#compare-best-1").click()
    wait_for(lambda: "saved B" in text(page, "#compare-message"), 30, "round 2's vote", shown=lambda: text(page, "#compare-message"))
    rows = read_jsonl(store / "feedback" / f"{dataset}.jsonl")
    round_one, round_two = rows[0], rows[-1]
    # Round 2's pair replies to round 1 as it went on: its question, then the chosen (B's) answer.
    assert [t["content"].strip() for t in round_two["prompt"]] == [first, round_one["chosen"][0]["content"], second], json.dumps(round_two)[:500]

    # A reload keeps the page's models and its dataset.
    page.reload()
    page.get_by_role("tab", name="Compare").click()
    wait_for(lambda: all(run.name in text(page, "#compare-models") for run in (nano_run, nano_sft_run)), 60, "the models kept across a reload",
             shown=lambda: text(page, "#compare-models"))
    wait_for(lambda: f"{dataset}.jsonl" in text(page, "#compare-counter"), 30, "the dataset kept across a reload")


def test_the_tokenizer_page_cuts_a_text_with_two_tokenizers_side_by_side(page):
    page.get_by_role("tab", name="Data & tokenizer").click()
    wait_for(lambda: page.locator("#tokens-view .tokenizer-view").count() == 2, 60, "two tokenizers' columns")
    text = "Pirena is the capital of Desur. Ωmega!"
    box = page.locator("#tokens-text textarea")
    box.fill(text)
    page.locator("#tokens-show").click()
    wait_for(lambda: "Ωmega" in page.locator("#tokens-view").inner_text(), 60, "the new text cut")
    columns = page.locator("#tokens-view .tokenizer-view").all()
    names = [c.locator("b").first.inner_text() for c in columns]
    assert names == ["bpe", "wordpiece"], names
    for column in columns:
        assert column.locator(".token").count() >= 8  # coloured token by token
        assert "chars/token" in column.inner_text() and "tokens/word" in column.inner_text()
    # Byte-level BPE reads every character; WordPiece never saw 'Ω' and marks its word unknown.
    assert "unknown 0%" in columns[0].inner_text()
    assert "unknown 0%" not in columns[1].inner_text()
    assert columns[1].locator(".token[style*=line-through]").count() >= 1


def test_the_data_preview_names_the_shape_and_follows_a_column_mapping(page, nano_run, tmp_path):
    odd = tmp_path / "qa.jsonl"
    odd.write_text("".join(json.dumps({"ask": f"What is {i} plus one?", "reply": str(i + 1)}) + "\n" for i in range(3)))
    page.get_by_role("tab", name="SFT").click()
    data = page.locator("#sft-field-data input")
    wait_for(lambda: "toy world" in text(page, "#sft-data-summary"), 60, "the toy world's preview")
    data.fill(str(odd))
    data.press("Enter")
    # Columns the lab does not know: the preview says so, and how to map them.
    wait_for(lambda: "no known columns" in text(page, "#sft-data-summary"), 60, "the refusal", shown=lambda: text(page, "#sft-data-summary"))
    assert "'columns'" in text(page, "#sft-data-summary") and "Traceback" not in text(page, "#sft-data-summary")
    columns = page.locator("#sft-field-columns textarea")
    columns.fill("prompt=ask,completion=reply")
    columns.press("Enter")
    wait_for(lambda: "your columns ask → prompt" in text(page, "#sft-data-summary"), 60, "the mapped preview",
             shown=lambda: text(page, "#sft-data-summary"))
    assert "3 records" in text(page, "#sft-data-summary")
    wait_for(lambda: "--columns prompt=ask,completion=reply" in text(page, "#sft-cli"), 30, "the command to carry the mapping")


def test_an_open_page_asks_for_no_frames_while_nothing_changes(lab_app):
    """Gradio's status tracker times a pending event in a requestAnimationFrame loop, and that of the app's
    "Loading..." screen is destroyed while pending, so its loop asked for 60 frames a second for as long as the
    tab stayed open (about 5 CPU s/min of the browser on 2 cores). The lab's page idles it (pages.app.FirstInHead)."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(SLOW_CLICK_MS)
        # Installed before the page's own scripts, this counts the frames that reach the browser.
        page.add_init_script("""(() => { const frame = window.requestAnimationFrame.bind(window); window.frames_asked = 0;
            window.requestAnimationFrame = (callback) => { window.frames_asked += 1; return frame(callback); }; })()""")
        try:
            page.goto(lab_app)
            page.get_by_role("tab", name="Pretrain").wait_for()
            time.sleep(8)  # the page load's events end
            before = page.evaluate("() => window.frames_asked")
            time.sleep(5)
            asked = page.evaluate("() => window.frames_asked") - before
            assert asked < 60, f"an idle page asked for {asked} frames in 5 s (the leaked loop asks for ~300)"
        finally:
            browser.close()


def test_a_page_on_a_finished_run_notices_it_change_and_go(page, store):
    """A page left on a finished run asks for nothing until the run changes: a status rewritten (a restart, a
    stop) shows within seconds, and so does a delete, without a click."""
    from lab.runs import Run

    run = Run.create("pretrain", {"preset": "nano", "max_steps": 20}, name="left-open")
    for step in range(0, 21, 5):
        run.log_metrics({"step": step, "loss": 7.0 - step / 10})
    run.update(status="completed", started=time.time() - 60, ended=time.time(), final_metrics={"steps": 20})
    page.get_by_role("tab", name="Pretrain").click()
    page.locator("#pretrain-run input").click()
    page.get_by_role("option", name=run.id, exact=False).first.click()
    wait_for(lambda: "completed" in text(page, "#pretrain-progress"), 60, "the finished run's page")
    time.sleep(3)  # the page's look at its run waits now
    run.update(status="stopped")
    wait_for(lambda: "stopped" in text(page, "#pretrain-progress"), 10, "the rewritten status to show")
    shutil.rmtree(run.path)
    wait_for(lambda: "is gone (deleted)" in text(page, "#pretrain-progress"), 10, "the delete to show")
    assert "none yet" in text(page, "#pretrain-samples")
