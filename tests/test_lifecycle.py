"""The whole lifecycle as one run: `llm-lab quickstart --scale nano` from an empty store, stopped half-way and
continued, ends with every step completed, an eval.json per model and the report card; `llm-lab eval` writes
an eval.json again; bad input is one line; a lifecycle started while another job runs waits in the queue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import llm_lab, run_info, run_steps, wait_for

MODELS = ("pretrain", "sft", "reward", "dpo", "ppo")


def lab_in(store: Path, *args: str, timeout: float = 600, check: bool = True):
    return llm_lab(*args, timeout=timeout, check=check, store=store)


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    """One nano lifecycle from an empty store, stopped while its SFT step trains and then continued: (store,
    lifecycle id, its steps as they were right after the stop)."""
    store = tmp_path_factory.mktemp("lifecycle-store")
    run_id = lab_in(store, "quickstart", "--scale", "nano", "--detach").stdout.strip().splitlines()[-1]
    wait_for(lambda: run_steps(store, run_id).get("sft", {}).get("status") == "running", 400, "the SFT step to start",
             shown=lambda: (run_info(store, run_id)["status"], run_steps(store, run_id)))
    lab_in(store, "stop", run_id)
    stopped = run_steps(store, run_id)
    status = run_info(store, run_id)["status"]
    assert status == "stopped", (status, run_info(store, run_id).get("error"))
    done = lab_in(store, "quickstart", "--continue", run_id)
    assert done.stdout.strip().splitlines()[-1] == run_id
    return store, run_id, stopped, done


def test_stopping_a_lifecycle_stops_its_step_and_continuing_reuses_the_finished_ones(lifecycle):
    store, run_id, stopped, _ = lifecycle
    assert stopped["tokenizer"]["status"] == stopped["pretrain"]["status"] == "completed"
    assert stopped["sft"]["status"] == "stopped"  # its run, as the stop left it (the continue below carried it on)
    assert "reward" not in stopped  # nothing after the stopped step was started
    after = run_steps(store, run_id)
    for step in ("tokenizer", "pretrain"):  # the same runs, not trained again
        assert after[step]["run"] == stopped[step]["run"]
    sft = run_info(store, stopped["sft"]["run"])
    if after["sft"]["run"] == stopped["sft"]["run"]:  # stopped after a step: it went on from the checkpoint of its stop
        assert sft["resumes"] and sft["status"] == "completed"
    else:  # stopped while it loaded: no checkpoint, the step starts afresh
        assert sft["status"] == "stopped" and not (store / sft["id"] / "trainer").exists()
    assert len([p for p in store.iterdir() if p.name.endswith("lifecycle-pretrain")]) == 1
    # the stretch before the stop counts in the lifecycle's time (its report card, the next quickstart's estimate)
    lc = run_info(store, run_id)
    assert lc["resumes"][0]["ran"] > 0
    report = json.loads((store / run_id / "report.json").read_text())
    assert report["wall_seconds"] > lc["ended"] - lc["started"]


def test_a_nano_lifecycle_ends_with_every_step_an_eval_per_model_and_a_report_card(lifecycle):
    store, run_id, _, done = lifecycle
    lc = run_info(store, run_id)
    assert lc["status"] == "completed" and lc["stage"] == "lifecycle"
    made = run_steps(store, run_id)
    assert all(made[s]["status"] == "completed" for s in ("tokenizer", *MODELS, "evals"))
    # each step is a normal run of the store, with its parent links
    parent = {s: run_info(store, made[s]["run"])["parent"] for s in MODELS}
    assert parent["pretrain"] == made["tokenizer"]["run"] and parent["sft"] == made["pretrain"]["run"]
    assert parent["reward"] == parent["dpo"] == parent["ppo"] == made["sft"]["run"]
    assert run_info(store, made["ppo"]["run"])["config"]["reward"] == made["reward"]["run"]
    evals = {s: json.loads((store / made[s]["run"] / "eval.json").read_text())["metrics"] for s in MODELS}
    assert 0 < evals["pretrain"]["bits_per_byte"] < 8 and evals["pretrain"]["perplexity"] > 1
    assert 0 <= evals["reward"]["accuracy"] <= 1
    for s in ("sft", "dpo", "ppo"):
        assert {"chat_format", "fact_qa_sft_taught", "fact_qa_pretrain_only", "refusal_rate", "gold_score", "hard_gold_score"} <= set(evals[s])
    for s in ("dpo", "ppo"):
        m = evals[s]
        assert {"win_rate", "decided", "hard_win_rate", "kl", "fact_qa_change", "reward_score"} <= set(m)
        assert m["kl"] >= 0 and 0 <= m["win_rate"] <= 1
    card = json.loads((store / run_id / "report.json").read_text())
    assert [m["step"] for m in card["models"]] == list(MODELS)
    assert {r["key"] for r in card["rows"]} >= {"bits_per_byte", "chat_format", "refusal_rate", "win_rate", "kl"}
    md = (store / run_id / "report.md").read_text()
    assert "| held-out bits per byte" in md and "DPO" in md and "PPO" in md
    assert "plotly" in (store / run_id / "report.html").read_text()
    assert "Report card" in done.stderr  # the foreground command ends on the card


def test_llm_lab_eval_writes_the_eval_json_again(lifecycle):
    store, run_id, _, _ = lifecycle
    made = run_steps(store, run_id)
    path = store / made["dpo"]["run"] / "eval.json"
    before = json.loads(path.read_text())
    out = lab_in(store, "eval", made["dpo"]["run"], "--against", made["pretrain"]["run"])
    after = json.loads(path.read_text())
    assert after["time"] > before["time"] and after["against"] == made["pretrain"]["run"]
    assert "win_rate" in out.stdout and "chat_format" in out.stdout
    assert lab_in(store, "report", run_id).stdout.startswith("# Report card")
    refusal = lab_in(store, "eval", run_id, check=False)  # a lifecycle has no model of its own
    assert refusal.returncode == 2 and "no model to evaluate" in refusal.stderr and "Traceback" not in refusal.stderr


def test_bad_lifecycle_input_is_one_line(tmp_path):
    bad = lab_in(tmp_path, "train", "lifecycle", "--with-stages", "kto", check=False)
    assert bad.returncode == 2 and "the optional steps are grpo" in bad.stderr and "Traceback" not in bad.stderr
    scale = lab_in(tmp_path, "quickstart", "--scale", "huge", check=False)
    assert scale.returncode == 2 and "invalid choice: 'huge'" in scale.stderr
    data = lab_in(tmp_path, "train", "lifecycle", "--data", "notes.txt", check=False)
    assert data.returncode == 2 and "runs on the toy world" in data.stderr
    cont = lab_in(tmp_path, "quickstart", "--continue", "nope", check=False)
    assert cont.returncode == 2 and "no run 'nope'" in cont.stderr
    assert not [p for p in tmp_path.iterdir() if (p / "run.json").exists()]


def test_a_lifecycle_started_while_a_job_runs_waits_in_the_queue(tmp_path):
    busy = lab_in(tmp_path, "train", "pretrain", "--preset", "nano", "--max-steps", "5000", "--sample-every", "0", "--detach").stdout.split()[-1]
    try:
        wait_for(lambda: run_info(tmp_path, busy)["status"] == "running", 120, "the first job to run")
        proc = subprocess.Popen([sys.executable, "-m", "lab", "quickstart", "--scale", "nano"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "LAB_CHECKPOINTS": str(tmp_path), "LAB_MAX_JOBS": "1"})
        first = proc.stderr.readline()
        assert "waiting in the queue: 1 job(s) ahead" in first
        queued = [p.name for p in tmp_path.iterdir() if p.name.endswith("-lifecycle")]
        assert len(queued) == 1 and run_info(tmp_path, queued[0])["status"] == "queued" and not run_info(tmp_path, queued[0])["pid"]
        time.sleep(2)
        assert run_info(tmp_path, queued[0])["status"] == "queued"  # still waiting: no process of its own yet
        proc.send_signal(signal.SIGINT)  # Ctrl-C stops the lifecycle it follows
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:  # say where it hangs (lab/__main__.py's faulthandler)
            proc.send_signal(signal.SIGUSR1)
            time.sleep(2)
            proc.kill()
            raise AssertionError(f"quickstart did not end 120 s after Ctrl-C; it was here:\n{proc.stderr.read()[-6000:]}") from None
        assert run_info(tmp_path, queued[0])["status"] == "stopped"
    finally:  # the lifecycle first, if Ctrl-C failed to stop it (it would start as the slot frees, beside later tests), then the busy job
        for run in [*[p.name for p in tmp_path.iterdir() if p.name.endswith("-lifecycle")], busy]:
            if run_info(tmp_path, run)["status"] in ("queued", "running"):
                lab_in(tmp_path, "stop", run)
