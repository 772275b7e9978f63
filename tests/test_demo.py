"""The lab as a public Space: its API driven by strangers with gradio_client. Run ids never leave the store (in
every mode); in demo mode server paths and hub ids are refused at once, over-cap jobs are refused with the
cap, and one visitor cannot stop, delete or undo what another started."""

from __future__ import annotations

import json
import time

import pytest
from conftest import running_app, wait_for

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

NANO = {"preset": "nano", "max_steps": 400, "logging_steps": 2, "sample_every": 0, "eval_every": 0}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    store = tmp_path_factory.mktemp("demo-store")
    # no seeding here: its lifecycle would hold the demo's one job slot for minutes (test_a_demo_seeds_itself)
    with running_app(store, tmp_path_factory.mktemp("demo-app") / "app.log", LAB_DEMO_MODE="1", LAB_DEMO_SEED="0") as url:
        yield url, store


@pytest.fixture
def victim(tmp_path):
    """A run-shaped folder outside the store, and a file beside it: what a traversal would reach."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"id": "victim", "stage": "pretrain", "name": "victim", "config": {}, "status": "completed", "created": 0}))
    (folder / "log.txt").write_text("secret")
    return folder


def refusal(client: Client, *args, api_name: str) -> str:
    with pytest.raises(AppError) as e:
        client.predict(*args, api_name=api_name)
    message = str(e.value)
    assert "Traceback" not in message and "\n" not in message.strip()
    return message


def traversals(client: Client, victim, store) -> None:
    relative = f"../{victim.parent.name}/victim"
    for run_id in (relative, str(victim), "..", "/", "victim/../victim"):
        for api_name, args in (("/delete_run", (run_id,)), ("/stop_run", (run_id,)), ("/run_log", (run_id, 50)), ("/run_metrics", (run_id, 0)),
                               ("/run_status", (run_id,)), ("/config_diff", (run_id, run_id)), ("/lifecycle", (run_id,))):
            assert "run" in refusal(client, *args, api_name=api_name)
    assert victim.is_dir() and (victim / "log.txt").read_text() == "secret"


def test_run_ids_stay_in_the_store_outside_demo_mode(lab_app, victim, store):
    client = Client(lab_app, verbose=False)
    traversals(client, victim, store)
    runs = [r["id"] for r in client.predict(api_name="/list_runs")]
    if runs:  # the end of a real id names no run
        assert "no run" in refusal(client, runs[0][-2:], api_name="/delete_run")
        assert any(r["id"] == runs[0] for r in client.predict(api_name="/list_runs"))


def test_run_ids_stay_in_the_store_in_demo_mode(demo, victim):
    url, store = demo
    traversals(Client(url, verbose=False), victim, store)


def test_server_paths_and_hub_ids_are_refused_at_once(demo, tmp_path):
    url, _ = demo
    client = Client(url, verbose=False)
    secret = tmp_path / "notes.txt"
    secret.write_text("a file of the server's\n")
    for source in (str(secret), "/", "/etc", "../"):
        message = refusal(client, "pretrain", source, 5, api_name="/preview_data")
        assert "this demo reads only the toy world" in message and "Did you mean" not in message
    t0 = time.time()
    message = refusal(client, "sft", json.dumps({"parent": "someone/some-model"}), api_name="/start_run")
    assert time.time() - t0 < 1.0 and "hub models are off in this demo" in message and "LAB_ALLOW_HUB=1" in message
    assert "hub models are off" in refusal(client, ["someone/some-model"], "Hi", 0.7, 0.95, 16, 0, api_name="/compare")
    assert "this demo takes only the lab's runs" in refusal(client, "sft", json.dumps({"parent": str(tmp_path)}), api_name="/start_run")


def test_over_cap_jobs_say_the_cap_and_how_to_lift_it(demo):
    url, _ = demo
    client = Client(url, verbose=False)
    message = refusal(client, "pretrain", json.dumps({"preset": "small"}), api_name="/start_run")
    assert "up to `tiny`" in message and "LAB_DEMO_MODE=0" in message
    message = refusal(client, "pretrain", json.dumps({"preset": "nano", "max_steps": 100000}), api_name="/start_run")
    assert "1 to 500 steps" in message and "LAB_DEMO_MODE=0" in message
    assert "batches of up to 32" in refusal(client, "pretrain", json.dumps({"preset": "nano", "batch_size": 4096}), api_name="/start_run")
    assert "up to 512 tokens" in refusal(client, "pretrain", json.dumps({"preset": "nano", "seq_len": 100000}), api_name="/start_run")
    assert "up to 2 checkpoints per run" in refusal(client, "pretrain", json.dumps({"preset": "nano", "save_total_limit": 50}), api_name="/start_run")


def test_a_visitor_cannot_stop_delete_or_undo_what_another_started(demo):
    url, store = demo
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    first = alice.predict("pretrain", json.dumps(NANO), api_name="/start_run")
    second = None
    try:
        assert "one per visitor" in refusal(alice, "pretrain", json.dumps(NANO), api_name="/start_run")  # the first still waits
        wait_for(lambda: alice.predict(first, api_name="/run_status")["status"] == "running", 120, "alice's first job to run")
        second = alice.predict("pretrain", json.dumps(NANO), api_name="/start_run")  # waits: one job at a time in a demo
        assert alice.predict(second, api_name="/run_status")["status"] == "queued"
        assert json.loads((store / second / "run.json").read_text())["pid"] is None  # waiting costs no process
        assert "one per visitor" in refusal(alice, "pretrain", json.dumps(NANO), api_name="/start_run")
        for api_name in ("/stop_run", "/delete_run", "/resume_run"):
            assert "started by another visitor" in refusal(bob, first, api_name=api_name)
        assert alice.predict(first, api_name="/run_status")["status"] == "running"  # bob changed nothing
    finally:
        for run_id in (second, first):
            if run_id:
                alice.predict(run_id, api_name="/stop_run")
    # (a job stopped while it still imports reads failed, not stopped: issue 18)
    wait_for(lambda: all(alice.predict(r, api_name="/run_status")["status"] not in ("queued", "running") for r in (first, second)), 90, "both jobs to end")
    assert alice.predict(first, api_name="/run_status")["status"] == "stopped"
    assert "deleted" in alice.predict(second, api_name="/delete_run")

    saved = alice.predict("What is the capital of Zoker?", ["Velmora.", "No idea."], 0, None, "demo-votes", None, api_name="/vote")
    assert saved["pairs"] == 1
    assert "nothing of yours to undo" in refusal(bob, "demo-votes", api_name="/undo_feedback")
    assert alice.predict("demo-votes", api_name="/undo_feedback")["removed"] == 1


def test_a_demo_seeds_an_empty_store_with_a_lifecycle(tmp_path, monkeypatch):
    import os
    import signal

    from lab import runs
    from pages.app import seed_if_empty

    monkeypatch.setenv("LAB_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("LAB_DEMO_MODE", "1")
    seeding = seed_if_empty()
    try:
        first = wait_for(lambda: runs.list_runs(), 120, "the seed's first run")
        assert first[0].stage == "lifecycle" and first[0].info["name"] == "demo" and first[0].config["scale"] == "nano"
        assert seed_if_empty() is None  # the store has runs now: no second seed
    finally:
        os.killpg(seeding.pid, signal.SIGKILL)
        seeding.wait()
        from lab import jobs

        for run in runs.list_runs():  # the lifecycle is a job of its own, which outlives the command that follows it
            if run.status in runs.ACTIVE:
                jobs.stop(run, grace=10, wait=True)
