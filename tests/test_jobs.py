"""Jobs as the UI runs them: background subprocesses, a queue in the run store, stop and kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import last_line, llm_lab, wait_for

from lab import jobs
from lab.runs import Run


def steps_logged(run: Run) -> int:
    return max((r["step"] for r in run.metrics()[0] if "loss" in r), default=0)


def nano_job(steps: int = 5000) -> Run:
    """A nano pretrain queued as a background job; by default long enough to be stopped."""
    return Run.open(last_line(llm_lab("train", "pretrain", "--preset", "nano", "--max-steps", str(steps), "--logging-steps", "2", "--sample-every", "0", "--eval-every", "0", "--detach")))


def test_stop_ends_the_run_at_the_next_step_saved_and_stopped(store):
    run = nano_job()
    wait_for(lambda: steps_logged(run) >= 4)
    assert run.status == "running"
    llm_lab("stop", run.id)
    assert run.status == "stopped"
    info = run.info
    assert info["ended"] and info["final_metrics"]["steps"] < 5000
    assert (run.path / "model" / "model.safetensors").exists()  # what it learned is kept
    assert not any(p.name.startswith(".model") for p in run.path.iterdir())  # no half-written folder


def test_a_run_queued_again_counts_every_stretch_it_ran(store):
    """A run resumed from its checkpoint, or a lifecycle or experiment continued, runs in stretches, and its next
    start overwrites `started`: queue_again keeps each stretch, and runs.seconds (an experiment's cost, the
    expected time on its card, a lifecycle's total) adds them all."""
    from lab import runs
    from lab.stages import pretrain

    run = Run.create("pretrain", pretrain.Config(), name="stretches")
    assert runs.seconds(run.info) is None  # never started
    run.update(status="stopped", started=100.0, ended=130.0)
    run.queue_again(20)
    info = run.info
    assert info["status"] == "queued" and info["started"] is None and info["ended"] is None
    assert info["resumes"][-1]["step"] == 20 and info["resumes"][-1]["ran"] == 30.0
    assert runs.seconds(info) == 30.0  # waiting in the queue costs nothing
    run.update(status="running", started=200.0)
    assert runs.seconds(run.info, now=210.0) == 40.0
    run.update(status="failed", ended=215.0)
    run.queue_again()  # a parent's continue: from its first unfinished step, no checkpoint step
    assert "step" not in run.info["resumes"][-1]
    run.update(status="completed", started=300.0, ended=301.5)
    assert runs.seconds(run.info) == 30.0 + 15.0 + 1.5


def test_kill_9_reads_failed_and_a_new_process_lists_it(store):
    run = nano_job()
    wait_for(lambda: steps_logged(run) >= 2)
    os.kill(run.info["pid"], signal.SIGKILL)
    wait_for(lambda: run.status == "failed", timeout=10)
    assert "ended without reporting" in run.info["error"]
    rows = json.loads(llm_lab("runs", "--json").stdout)  # a fresh process sees it too
    assert next(r for r in rows if r["id"] == run.id)["status"] == "failed"
    assert not (run.path / "model").exists()


def test_a_job_forked_from_the_warm_server_is_a_job_like_any_other(store):
    """The lifecycle starts its steps from a fork server that has imported the stages once: such a job has its own
    session and log, outlives the process that started it, and stops as any job does."""
    script = ("import sys\nfrom lab import jobs, configs, stages\njobs.start_from_fork_server()\n"
              "config = configs.from_dict(stages.get('pretrain').Config, {'preset': 'nano', 'max_steps': 5000, 'logging_steps': 2, "
              "'sample_every': 0, 'eval_every': 0}, source='test')\nprint(jobs.submit('pretrain', config).id)\n")
    starter = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert starter.returncode == 0, starter.stderr[-3000:]
    run = Run.open(starter.stdout.strip().splitlines()[-1])  # its starter has exited: the job goes on
    wait_for(lambda: steps_logged(run) >= 4)
    pid = run.info["pid"]
    assert run.status == "running" and os.getsid(pid) == pid  # its own session: a Ctrl-C of its starter's terminal misses it
    assert f"[lab] run {run.id}: stage pretrain started" in (run.path / "log.txt").read_text()
    llm_lab("stop", run.id)
    assert run.status == "stopped" and (run.path / "model" / "model.safetensors").exists()
    assert f"[lab] run {run.id}: stopped" in (run.path / "log.txt").read_text()


def test_jobs_queue_one_at_a_time_a_queued_one_can_be_stopped_and_the_rest_complete(store):
    first, second, third = nano_job(), nano_job(4), nano_job(4)
    wait_for(lambda: first.status == "running")
    time.sleep(1.0)
    assert second.status == third.status == "queued"
    assert jobs.queue_position(second) == 1 and jobs.queue_position(third) == 2
    assert not second.metrics()[0]  # it has not started
    assert second.info["pid"] is None and third.info["pid"] is None  # waiting costs no process

    jobs.stop(third, wait=True)  # stopped while queued: it never starts
    assert third.status == "stopped" and not third.info["started"]
    assert jobs.queue_position(second) == 1
    jobs.stop(first, wait=True)
    assert first.status == "stopped"
    assert jobs.wait(second, timeout=120) == "completed"
    assert second.info["started"] >= first.info["ended"] - 0.5
    assert third.status == "stopped" and not third.info["started"]


def test_the_queue_holds_at_most_lab_max_queued(store, monkeypatch):
    from lab import runs
    from lab.errors import UserError

    monkeypatch.setenv("LAB_MAX_QUEUED", "2")
    waiting = [Run.create("pretrain", {"max_steps": 1}) for _ in range(2)]
    try:
        for run in waiting:  # queued, with a live process (this one): as a job waiting for its slot
            run.update(pid=os.getpid(), pid_start=runs.process_start(os.getpid()))
        with pytest.raises(UserError, match=r"2 jobs are already waiting \(the queue holds 2, LAB_MAX_QUEUED\)"):
            jobs.check_room(None)
        waiting[0].update(status="stopped")
        jobs.check_room(None)  # room again
    finally:
        for run in waiting:
            run.update(status="stopped")


def test_jobs_that_may_run_side_by_side_share_the_cores(store, nano_run):
    """LAB_MAX_JOBS=2 on a machine where torch takes two threads: a job left at torch's default takes one, so two
    jobs side by side do not run four threads on two cores; a job that names its threads keeps them."""
    def device(*flags: str, max_jobs: str) -> str:
        proc = llm_lab("train", "sft", "--parent", nano_run.name, "--max-steps", "1", "--batch-size", "2", "--kl-every", "0", "--sample-every", "0",
                       "--no-world-evals", *flags, env={"LAB_MAX_JOBS": max_jobs, "OMP_NUM_THREADS": "2"})
        return Run.open(last_line(proc)).info["device"]

    assert device(max_jobs="2") == "cpu (1 threads)"
    assert device("--threads", "2", max_jobs="2") == "cpu (2 threads)"
