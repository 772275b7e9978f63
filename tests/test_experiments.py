"""Every experiment at nano scale, end to end, in one store: `llm-lab experiment NAME --scale nano` trains its
child runs (sharing one nano base, instruct and reward model among all of them), then writes result.json with
the measured values, a self-contained plot and a conclusion that quotes those values. A stopped experiment
continues without redoing its finished runs; bad input is one line; the Experiments page runs one in a real
browser and shows its plot and conclusion."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import llm_lab, run_info, run_steps, running_app, wait_for

from lab.experiments import REGISTRY, num, pct

CHROMIUM = Path("/usr/bin/chromium")
SHARED = ("tokenizer", "pretrain", "sft")


def lab_in(store: Path, *args: str, timeout: float = 900, check: bool = True):
    return llm_lab(*args, timeout=timeout, check=check, store=store)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """Every experiment at nano scale in one store, kl-zero stopped once while its first PPO run trains and
    ai-vs-human-feedback once after its labels were made, each then continued: (store, {name: run id}, {name:
    its steps as the stop left them})."""
    store = tmp_path_factory.mktemp("experiments-store")
    out = {}
    for name in ("hallucination", "skip-pretraining"):
        out[name] = lab_in(store, "experiment", name, "--scale", "nano").stdout.strip().splitlines()[-1]
    rid = lab_in(store, "experiment", "kl-zero", "--scale", "nano", "--detach").stdout.strip().splitlines()[-1]
    wait_for(lambda: run_steps(store, rid).get("ppo kl 0", {}).get("status") == "running", 600, "kl-zero's first PPO run to start",
             shown=lambda: (run_info(store, rid)["status"], run_steps(store, rid)))
    lab_in(store, "stop", rid)
    stopped = run_steps(store, rid)
    assert run_info(store, rid)["status"] == "stopped"
    assert lab_in(store, "experiment", "--continue", rid).stdout.strip().splitlines()[-1] == rid
    out["kl-zero"] = rid
    out["dpo-vs-ppo"] = lab_in(store, "experiment", "dpo-vs-ppo", "--scale", "nano", "--seeds", "2").stdout.strip().splitlines()[-1]
    for name in ("preference-budget", "sft-data-quality", "objectives", "tokenizers"):
        out[name] = lab_in(store, "experiment", name, "--scale", "nano").stdout.strip().splitlines()[-1]
    ai = lab_in(store, "experiment", "ai-vs-human-feedback", "--scale", "nano", "--detach").stdout.strip().splitlines()[-1]
    wait_for(lambda: run_steps(store, ai).get("reward on gold labels", {}).get("status") == "running", 600, "its first reward model to start",
             shown=lambda: (run_info(store, ai)["status"], run_steps(store, ai)))
    lab_in(store, "stop", ai)
    ai_stopped = run_steps(store, ai)
    assert lab_in(store, "experiment", "--continue", ai).stdout.strip().splitlines()[-1] == ai
    out["ai-vs-human-feedback"] = ai
    return store, out, {"kl-zero": stopped, "ai-vs-human-feedback": ai_stopped}


def quoted(name: str, m: dict) -> list[str]:
    """Numbers of `measured` that the conclusion must quote, as it formats them."""
    if name == "kl-zero":
        zero = m["by_coef"]["kl 0"]
        return [num(zero["reward_score"]["mean"]), num(zero["gold_score"]["mean"]), num(zero["kl"]["mean"])]
    if name == "hallucination":
        r = m["models"]["instruct"]
        return [pct(r["accuracy"]), num(r["known_right"]["mean_p"]), pct(r["unseen_invents"])]
    if name == "skip-pretraining":
        raw = m["models"]["random weights, then SFT"]
        return [pct(raw["chat_format"]), pct(raw["fact_qa_pretrain_only"]), pct(raw["fluent_wrong"])]
    if name == "dpo-vs-ppo":
        return [pct(m["methods"]["dpo"]["win_rate"]["mean"]), pct(m["methods"]["ppo"]["win_rate"]["mean"]), f"{m['methods']['dpo']['seconds']['mean']:.0f} s"]
    if name == "preference-budget":
        few, most = m["budgets"][0], m["budgets"][-1]
        return [pct(few["reward_accuracy"]), pct(most["reward_accuracy"]), pct(few["dpo_win_rate"]), str(most["pairs"])]
    if name == "sft-data-quality":
        return [f"{r['gold_score']:.2f}" for r in m["models"].values()] + [pct(r["refusal_rate"]) for r in m["models"].values()]
    if name == "tokenizers":
        return [num(r["chars_per_token"]) for r in m["tokenizers"]] + [num(r["bits_per_byte"], 3) for r in m["tokenizers"]]
    if name == "ai-vs-human-feedback":
        arms = {a["arm"]: a for a in m["arms"]}
        return [pct(m["label_agreement"]), pct(arms["gold"]["reward_accuracy"]), pct(arms["ai many"]["reward_accuracy"]), str(arms["ai many"]["labels"])]
    if name == "objectives":
        return [pct(m["encoder"]["fill_blank"]), pct(m["decoder"]["fill_blank"]), pct(m["decoder"]["complete"]), pct(m["decoder"]["chat_fact_qa"])]
    raise AssertionError(f"no quoted numbers for {name}: add them here")


def test_every_experiment_is_tested():
    assert set(REGISTRY) == set(NAMES)


NAMES = ("hallucination", "skip-pretraining", "kl-zero", "dpo-vs-ppo", "preference-budget", "sft-data-quality", "objectives", "tokenizers",
         "ai-vs-human-feedback")


@pytest.mark.parametrize("name", NAMES)
def test_an_experiment_leaves_its_runs_a_result_a_plot_and_a_conclusion_from_its_numbers(done, name):
    store, made, _ = done
    run = run_info(store, made[name])
    assert run["status"] == "completed" and run["stage"] == "experiment", run.get("error")
    result = json.loads((store / made[name] / "result.json").read_text())
    assert result["name"] == name and result["question"].endswith("?") and result["measured"]
    for step, rid in result["runs"].items():  # its children: completed runs of the store, listed in run.json
        assert run_info(store, rid)["status"] == "completed", (step, rid)
        assert run["steps"][step]["run"] == rid
    for number in quoted(name, result["measured"]):
        assert number in result["conclusion"], (number, result["conclusion"])
    html = (store / made[name] / "plot.html").read_text()
    assert "plotly" in html.lower() and '<script src="http' not in html  # opens with no network
    # the runs' ids, as the last line the CLI printed
    assert made[name] == run["id"]


def test_experiments_share_one_nano_base(done):
    store, made, _ = done
    bases = {name: {s: run_steps(store, rid)[s]["run"] for s in SHARED if s in run_steps(store, rid)} for name, rid in made.items()}
    first = bases["hallucination"]
    for name, chain in bases.items():
        assert chain == {s: first[s] for s in chain}, (name, chain)
    # the runs that are the lifecycle's own steps are shared across experiments too: kl-zero's reward model is
    # preference-budget's on all pairs, dpo-vs-ppo's seed-0 DPO its DPO on all pairs
    budget = run_steps(store, made["preference-budget"])
    assert budget["reward all pairs"]["run"] == run_steps(store, made["kl-zero"])["reward"]["run"]
    assert budget["dpo all pairs"]["run"] == run_steps(store, made["dpo-vs-ppo"])["dpo seed 0"]["run"]
    later = run_steps(store, made["skip-pretraining"])
    assert all(later[s].get("shared") for s in SHARED)
    assert len([p for p in store.iterdir() if p.name.endswith("-pretrain")]) == 1  # one base, whichever experiment made it
    # seeds of dpo-vs-ppo: its DPO and PPO runs of seed 0 and seed 1, and a spread over them
    m = json.loads((store / made["dpo-vs-ppo"] / "result.json").read_text())["measured"]
    assert [r["seed"] for r in m["methods"]["dpo"]["runs"]] == [0, 1] and m["methods"]["ppo"]["win_rate"]["n"] == 2


def test_a_stopped_experiment_continues_without_redoing_its_finished_runs(done):
    store, made, stopped = done
    stopped = stopped["kl-zero"]
    assert stopped["ppo kl 0"]["status"] == "stopped" and "ppo kl 1.0" not in stopped
    after = run_steps(store, made["kl-zero"])
    for step in ("tokenizer", "pretrain", "sft", "reward"):
        assert after[step]["run"] == stopped[step]["run"], step
    assert len([p for p in store.iterdir() if p.name.endswith("kl-zero-reward")]) <= 1


def test_ai_labels_are_made_once_from_the_runs_before_them_and_trained_on(done):
    """ai-vs-human-feedback's labels come from its instruct model and its labeler, in the experiment's own step;
    stopped after that step, the experiment continues with the same label files, not labeled again."""
    from lab.experiments import ai_vs_human_feedback as exp

    store, made, stopped = done
    before, after = stopped["ai-vs-human-feedback"]["labels"], run_steps(store, made["ai-vs-human-feedback"])["labels"]
    assert before["status"] == "completed" and after["files"] == before["files"] and after["ended"] == before["ended"]
    gold, ai, many = ([json.loads(line) for line in Path(before["files"][f"{arm} labels"]).read_text().splitlines()] for arm in exp.ARMS)
    assert len(gold) == len(ai) == exp.BUDGET["nano"] and len(many) == exp.MANY["nano"] * exp.BUDGET["nano"]
    assert many[: len(ai)] == ai and all(p["chosen"] != p["rejected"] and p["margin"] > 0 for p in many)
    steps = run_steps(store, made["ai-vs-human-feedback"])
    for arm in exp.ARMS:  # each label set trained a reward model and a DPO model
        for stage in ("reward", "dpo"):
            assert run_info(store, steps[f"{stage} on {arm} labels"]["run"])["config"]["data"] == before["files"][f"{arm} labels"]
    assert run_info(store, steps["labeler"]["run"])["config"]["parent"] == steps["pretrain"]["run"]  # a judge trained from the base


def test_kl_zeros_default_coefficient_is_ppos():
    from lab.experiments import kl_zero
    from lab.stages import ppo

    assert kl_zero.DEFAULT == ppo.Config.kl_coef


def test_bad_experiment_input_is_one_line(tmp_path):
    bad = lab_in(tmp_path, "experiment", "no-such", check=False)
    assert bad.returncode == 2 and "unknown experiment 'no-such'" in bad.stderr and "kl-zero" in bad.stderr and "Traceback" not in bad.stderr
    seeds = lab_in(tmp_path, "experiment", "dpo-vs-ppo", "--seeds", "11", check=False)
    assert seeds.returncode == 2 and "--seeds" in seeds.stderr and "Traceback" not in seeds.stderr
    none = lab_in(tmp_path, "experiment", check=False)
    assert none.returncode == 2 and "name an experiment" in none.stderr
    listed = lab_in(tmp_path, "experiment", "--list").stdout
    assert all(name in listed for name in REGISTRY)
    assert not [p for p in tmp_path.iterdir() if (p / "run.json").exists()]


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")
def test_the_experiments_page_runs_one_and_shows_its_plot_and_conclusion(done, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    store, made, _ = done
    shots = []
    with running_app(store, tmp_path / "app.log", LAB_MAX_JOBS="1") as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.set_default_timeout(90_000)
        try:
            page.goto(url)
            page.get_by_role("tab", name="Experiments").click()
            card = page.locator("#experiment-card-hallucination")
            wait_for(lambda: "hallucination" in card.inner_text(), 60, "the hallucination card")
            assert "Is a hallucination" in card.inner_text() and "at nano scale" in card.inner_text()
            page.locator("#experiment-run-hallucination").click()
            wait_for(lambda: "queued" in page.locator("#experiments-message").inner_text(), 60, "the experiment to be queued")
            progress = lambda: page.locator("#experiments-progress").inner_text()  # noqa: E731
            wait_for(lambda: "made before, reused" in progress(), 120, "its shared runs in the progress", shown=progress)
            conclusion = page.locator("#experiments-conclusion")
            wait_for(lambda: conclusion.is_visible() and "Conclusion" in conclusion.inner_text(), 300, "the conclusion", shown=progress, poll=1)
            wait_for(lambda: page.locator("#experiments-plot .js-plotly-plot g.trace").count() > 0, 60, "the plot")
            # once another page was opened, every tab is still there (a State between tabs once hid the last one)
            page.get_by_role("tab", name="Runs").click()
            tabs = [t.inner_text() for t in page.get_by_role("tab").all()]
            assert "Experiments" in tabs and len(tabs) == len(set(tabs)), tabs
            page.get_by_role("tab", name="Experiments").click()
            newest = sorted(p.name for p in store.iterdir() if p.name.endswith("-experiment"))[-1]
            result = json.loads((store / newest / "result.json").read_text())
            assert result["name"] == "hallucination" and result["conclusion"][:60] in conclusion.inner_text()
            path = tmp_path / "experiments-page.png"
            page.screenshot(path=str(path), full_page=True)
            shots.append(path)
            # a past result is in the picker, and picking it shows it
            page.locator("#experiments-picker input").fill(made["kl-zero"])  # typed: a long list draws only the options in view
            page.get_by_role("option", name=f"kl-zero · nano · completed · {made['kl-zero']}").click()
            wait_for(lambda: "kl-zero" in progress() and "PPO without a KL penalty" in conclusion.inner_text(), 60, "the picked kl-zero result")
        finally:
            if not shots:  # what the page showed when it failed
                page.screenshot(path=str(tmp_path / "experiments-page-failed.png"), full_page=True)
                shots.append(tmp_path / "experiments-page-failed.png")
            browser.close()
            if os.environ.get("LAB_SCREENSHOTS"):
                Path(os.environ["LAB_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
                for path in shots:
                    shutil.copy(path, Path(os.environ["LAB_SCREENSHOTS"]) / path.name)
