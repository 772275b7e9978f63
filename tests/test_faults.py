"""Bad config and faults: every number field refused outside its declared bounds before a run exists, with
one line naming the field, the value and the range; a stop at any moment reads `stopped`; a killed job reads
failed with why and leaves nothing half-made; metrics stay strict JSON; a save out of space fails cleanly;
the API's arguments are checked like config fields."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from typing import get_type_hints

import gradio as gr
import pytest
import torch
from conftest import last_line, read_jsonl, refused, wait_for

from lab import configs, jobs, runs, stages
from lab.errors import ConfigError
from lab.runs import Run
from pages import api


def outside(f, t: type) -> list:
    """Values just outside a field's declared bounds."""
    low, low_out, high, high_out = configs.interval(f.metadata["within"])
    step = 1 if t is int else (abs(low) or 1) * 1e-3
    out = []
    if not math.isinf(low):
        out.append(low if low_out else low - step)
    if not math.isinf(high):
        out.append(high if high_out else high + step)
    return [t(v) if t is int else v for v in out]


NUMBER_FIELDS = [(stage, f, t) for stage in stages.names() for f in configs.fields(stages.get(stage).Config)
                 for t in [get_type_hints(stages.get(stage).Config)[f.name]] if t in (int, float)]


@pytest.mark.parametrize("stage, f, t", NUMBER_FIELDS, ids=[f"{s}-{f.name}" for s, f, _ in NUMBER_FIELDS])
def test_every_number_field_declares_bounds_and_refuses_what_lies_outside(stage, f, t):
    assert f.metadata.get("within"), f"{stage}.{f.name} declares no bounds"
    cls = stages.get(stage).Config
    configs.from_dict(cls, {f.name: f.default})  # the default is inside
    for value in outside(f, t):
        with pytest.raises(ConfigError, match=rf"{f.name.replace('_', '-')} {value!r} is out of range: it must be .*\d"):
            configs.from_dict(cls, {f.name: value})


@pytest.mark.parametrize("argv, message", [
    (("pretrain", "--max-steps", "-5"), "--max-steps -5 is out of range: it must be from 0 to 10,000,000"),
    (("pretrain", "--batch-size", "0"), "--batch-size 0 is out of range: it must be from 1 to 65,536"),
    (("pretrain", "--seq-len", "0"), "--seq-len 0 is out of range"),
    (("pretrain", "--threads", "-1"), "--threads -1 is out of range"),
    (("pretrain", "--learning-rate", "0"), "--learning-rate 0.0 is out of range: it must be above 0 and at most 1"),
    (("pretrain", "--learning-rate", "nan"), "--learning-rate nan is not a number"),
    (("pretrain", "--device", "tpu"), "--device 'tpu' is not a device the lab trains on: use auto, cpu, cuda (or cuda:N) or mps; this machine has auto, cpu"
     if not torch.cuda.is_available() else "--device 'tpu' is not a device the lab trains on"),
    (("sft", "--lora-r", "0"), "--lora-r 0 is out of range"),
    (("sft", "--lora-dropout", "1"), "--lora-dropout 1.0 is out of range: it must be at least 0 and below 1"),
    (("ppo", "--kl-coef", "-0.1"), "--kl-coef -0.1 is out of range"),
    (("ppo", "--temperature", "0"), "--temperature 0.0 is out of range"),
    (("tokenizer", "--vocab-size", "3"), "--vocab-size 3 is out of range: it must be from 16 to 1,048,576"),
    (("lifecycle", "--device", "tpu"), "--device 'tpu' is not a device"),
])
def test_out_of_range_values_are_refused_before_a_run_folder_exists(store, argv, message):
    assert message in refused("train", *argv)


def test_a_missing_gpu_is_refused_with_what_the_machine_has(store):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert "--device 'cuda' was asked for but no such CUDA GPU is visible: this machine has auto, cpu" in refused("train", "pretrain", "--device", "cuda")


@pytest.mark.parametrize("value, message", [
    (20.7, "must be a whole number, got 20.7"),
    (True, "must be a whole number, got True"),
    ("many", "must be a whole number, got 'many'"),
])
def test_a_step_count_that_is_not_a_whole_number_is_refused_not_rounded(value, message):
    with pytest.raises(ConfigError, match=message):
        configs.from_dict(stages.get("pretrain").Config, {"max_steps": value})
    assert configs.from_dict(stages.get("pretrain").Config, {"max_steps": 20.0}).max_steps == 20


def test_the_form_shows_each_fields_bounds():
    f = next(f for f in configs.fields(stages.get("pretrain").Config) if f.name == "batch_size")
    assert configs.allowed(f) == "from 1 to 65,536"
    from pages.stage import field_component

    assert "from 1 to 65,536" in field_component("pretrain", f, int).info


# -- stops, kills and saves -------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0, 4.0])
def test_a_stop_at_any_moment_after_submit_reads_stopped(store, delay):
    """Queued with no process yet, spawned before its handler, importing, loading: always `stopped`."""
    run = jobs.submit("pretrain", stages.get("pretrain").Config(preset="nano", max_steps=5000, logging_steps=2, sample_every=0, eval_every=0))
    time.sleep(delay)
    jobs.stop(run, grace=30, wait=True)
    wait_for(lambda: run.status not in runs.ACTIVE, 60, "the run to end")
    assert run.status == "stopped", run.info.get("error")
    assert not list(run.path.glob(".*.partial"))
    # A run stopped after its first steps keeps the checkpoint of the step it stopped at, whole, and nothing else.
    assert all((c / runs.COMPLETE).is_file() for c in (run.path / "trainer").glob("*")), list((run.path / "trainer").glob("*"))


def test_a_job_killed_like_the_oom_killer_does_reads_failed_with_its_peak_memory_and_leaves_nothing_half_made(store):
    run = jobs.submit("pretrain", stages.get("pretrain").Config(preset="nano", max_steps=5000, logging_steps=2, sample_every=0, eval_every=0))
    wait_for(lambda: any("loss" in r for r in run.metrics()[0]), 180, "the first logged step")
    (run.path / ".model.partial").mkdir()  # as a kill in the middle of a save leaves it
    (run.path / "trainer" / "checkpoint-7").mkdir(parents=True, exist_ok=True)  # a checkpoint half-written, never marked whole
    os.kill(run.info["pid"], signal.SIGKILL)
    wait_for(lambda: not run.alive(), 10, "the process to die")
    summary = next(r for r in api_list_runs() if r["id"] == run.id)  # the first listing already says why
    assert summary["status"] == "failed"
    assert "killed by the system (out of memory?)" in summary["error"] and re.search(r"memory peaked at \d+\.\d GiB", summary["error"])
    assert not (run.path / ".model.partial").exists() and not (run.path / "trainer").exists()


def trained(run: Run, key: str = "loss") -> list[tuple[int, float]]:
    """(step, value) of each logged training row of `key`, in the order metrics.jsonl has them."""
    return [(r["step"], r[key]) for r in read_jsonl(run.path / "metrics.jsonl") if key in r]


def weights(run: Run) -> dict:
    from safetensors.torch import load_file

    return {k: v for f in sorted(run.model_dir.glob("*.safetensors")) for k, v in load_file(f).items()}


def same_weights(a: Run, b: Run) -> float:
    """The largest difference between two runs' saved weights."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def test_kill_9_at_60_percent_then_resume_trains_the_run_it_would_have_been(store):
    """Pretraining killed at step ~24 of 40 resumes in place from its checkpoint of step 20: the same step numbers,
    losses and final weights as an uninterrupted run of the same seed (on the CPU, to the bit; on a GPU, kernels
    that are not deterministic would make it close instead)."""
    config = stages.get("pretrain").Config(preset="nano", max_steps=40, batch_size=8, save_steps=10, logging_steps=1, sample_every=0, eval_every=0,
                                           world_evals=False)
    whole = jobs.submit("pretrain", config)
    assert jobs.wait(whole, timeout=300) == "completed"
    run = jobs.submit("pretrain", config)
    wait_for(lambda: any(r.get("step", 0) >= 24 and "loss" in r for r in run.metrics()[0]), 300, "step 24")
    os.kill(run.info["pid"], signal.SIGKILL)
    wait_for(lambda: run.status == "failed", 30, "the kill to read failed")
    step, _ = run.last_checkpoint()
    assert 20 <= step < 40
    assert api.resume_run(run.id) == run.id  # the same run goes on
    assert max(r["step"] for r in run.metrics()[0]) == step  # its curves rewound to the checkpoint at once
    assert jobs.wait(run, timeout=300) == "completed", run.info.get("error")
    assert trained(run) == trained(whole) and [s for s, _ in trained(run)] == list(range(1, 41))
    assert same_weights(run, whole) < 1e-6
    assert not (run.path / "trainer").exists() and not (whole.path / "trainer").exists()  # completed: nothing left to resume
    assert [r["step"] for r in run.info["resumes"]] == [step] and run.info["final_metrics"]["steps"] == 40
    assert run.info["resumes"][0]["ran"] > 0  # the time before the kill counts in what the run cost (an experiment's seconds)


def test_a_stopped_ppo_run_resumes_from_the_batch_it_stopped_at(store, nano_sft_run):
    """PPO's own checkpoint (policy, critic, optimizer, schedule, KL controller, random state): stopped part-way and
    resumed, its rollout scores and final weights are those of the uninterrupted run."""
    config = stages.get("ppo").Config(parent=nano_sft_run.name, reward="gold", max_steps=8, save_steps=3, batch_size=4, mini_batch_size=2, ppo_epochs=1,
                                      response_length=12, sample_every=0, world_evals=False)
    whole = jobs.submit("ppo", config)
    assert jobs.wait(whole, timeout=300) == "completed"
    run = jobs.submit("ppo", config)
    wait_for(lambda: any(r.get("step", 0) >= 4 for r in run.metrics()[0]), 300, "rollout batch 4")
    assert jobs.stop(run, wait=True) == "stopped"
    stopped_at = run.info["final_metrics"]["steps"]
    step, _ = run.last_checkpoint()
    assert 3 <= step <= stopped_at < 8, (step, stopped_at)
    assert jobs.resume(run).id == run.id
    assert jobs.wait(run, timeout=300) == "completed", run.info.get("error")
    assert trained(run, "objective/scores") == trained(whole, "objective/scores")
    assert [s for s, _ in trained(run, "objective/kl")] == list(range(1, 9))
    assert same_weights(run, whole) < 1e-6


@pytest.mark.parametrize("stage, options", [("kto", {}), ("dpo", {"loss_type": "orpo"})], ids=["kto", "orpo"])
def test_kill_9_then_resume_holds_for_the_later_preference_losses_too(store, nano_sft_run, stage, options):
    """KTO's and ORPO's trainers resume like the first stages': killed part-way, the resumed run's losses and final
    weights are the uninterrupted run's."""
    config = stages.get(stage).Config(parent=nano_sft_run.name, max_steps=12, save_steps=4, batch_size=4, logging_steps=1, kl_every=0,
                                      sample_every=0, world_evals=False, **options)
    whole = jobs.submit(stage, config)
    assert jobs.wait(whole, timeout=300) == "completed", whole.info.get("error")
    run = jobs.submit(stage, config)
    wait_for(lambda: any(r.get("step", 0) >= 6 and "loss" in r for r in run.metrics()[0]), 300, "step 6")
    os.kill(run.info["pid"], signal.SIGKILL)
    wait_for(lambda: run.status == "failed", 30, "the kill to read failed")
    step, _ = run.last_checkpoint()
    assert 4 <= step < 12
    assert jobs.resume(run).id == run.id
    assert jobs.wait(run, timeout=300) == "completed", run.info.get("error")
    assert [s for s, _ in trained(run)] == list(range(1, 13))
    assert trained(run)[step + 1:] == trained(whole)[step + 1:]  # the first row after the resume starts its loss window again
    assert same_weights(run, whole) < 1e-6


def test_a_run_without_a_checkpoint_resumes_as_a_new_run_from_its_saved_model(store, nano_run):
    run = jobs.submit("pretrain", stages.get("pretrain").Config(preset="nano", max_steps=5000, save_steps=0, logging_steps=2, sample_every=0, eval_every=0))
    wait_for(lambda: any("loss" in r for r in run.metrics()[0]), 180, "the first logged step")
    assert jobs.stop(run, wait=True) == "stopped" and run.last_checkpoint() is None
    resumed = jobs.resume(run)
    try:
        assert resumed.id != run.id and resumed.config["init_from"] == run.id
    finally:
        jobs.stop(resumed, wait=True)
    with pytest.raises(Exception, match="completed: there is nothing left to train"):
        jobs.resume(Run(nano_run))


def api_list_runs() -> list[dict]:
    from lab.runs import list_runs, summary

    return [summary(r) for r in list_runs()]


def test_a_model_moved_aside_by_a_killed_save_is_put_back(store):
    """A kill between `atomic_dir`'s two renames: the old model is aside, the new one not yet in place."""
    run = Run.create("pretrain", {"preset": "nano"})
    (run.path / ".model.old").mkdir()
    (run.path / ".model.old" / "config.json").write_text("{}")
    sleeper = subprocess.Popen(["sleep", "30"])
    run.update(status="running", pid=sleeper.pid, pid_start=runs.process_start(sleeper.pid))
    sleeper.kill()
    sleeper.wait()
    assert run.status == "failed"
    assert (run.path / "model" / "config.json").exists() and not (run.path / ".model.old").exists()


def test_metrics_are_strict_json_when_a_value_is_not_finite(store):
    run = Run.create("pretrain", {"preset": "nano"})
    run.update(status="completed")  # a run folder that no job will take: not left queued, where it would hold up the next job
    run.log_metrics({"step": 3, "loss": float("nan"), "grad_norm": torch.tensor(float("inf")), "learning_rate": 1e-3})

    row = read_jsonl(run.path / "metrics.jsonl")[-1]
    assert row["loss"] is None and row["grad_norm"] is None and row["learning_rate"] == 1e-3


def test_a_save_that_runs_out_of_space_fails_the_run_with_no_space_left(store, tmp_path):
    """`ulimit -f`: the job may write its log and metrics, not a model."""
    command = [sys.executable, "-m", "lab", "train", "pretrain", "--preset", "nano", "--max-steps", "2", "--eval-every", "0", "--sample-every", "0",
               "--no-world-evals"]
    proc = subprocess.run(["bash", "-c", 'ulimit -f 256 && exec "$@"', "bash", *command], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    run = Run.open(last_line(proc))
    assert run.status == "failed" and run.info["error"].startswith("no space left to save (") and "File too large" in run.info["error"]
    assert not (run.path / "model").exists() and not list(run.path.glob(".*.partial"))


def test_a_checkpoint_that_runs_out_of_space_fails_the_run_and_keeps_the_one_before(store):
    """A resumed job (spawned by `llm-lab resume`, so it inherits the file-size limit) cannot write its next
    checkpoint: it fails with "no space left", the checkpoint it resumed from stays whole, and it resumes again."""
    run = jobs.submit("pretrain", stages.get("pretrain").Config(preset="nano", max_steps=200, batch_size=8, save_steps=6, logging_steps=1,
                                                                 sample_every=0, eval_every=0, world_evals=False))
    wait_for(lambda: run.last_checkpoint(), 300, "the first checkpoint")
    assert jobs.stop(run, wait=True) == "stopped"
    step, folder = run.last_checkpoint()
    assert step < 194, step  # a checkpoint is still to come
    proc = subprocess.run(["bash", "-c", 'ulimit -f 256 && exec "$@"', "bash", sys.executable, "-m", "lab", "resume", run.id, "--wait"],
                          capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert run.status == "failed" and run.info["error"].startswith("no space left to save ("), run.info["error"]
    assert run.last_checkpoint() == (step, folder) and not [p for p in (run.path / "trainer").iterdir() if p != folder]
    assert jobs.resume(run).id == run.id and jobs.wait(run, timeout=300) == "completed"
    assert [r["step"] for r in read_jsonl(run.path / "metrics.jsonl") if "loss" in r] == list(range(1, 201))


def test_api_arguments_are_checked_like_config_fields(store):
    run = Run.create("pretrain", {"preset": "nano"})
    run.update(status="completed")  # a run folder that no job will take: not left queued, where it would hold up the next job
    run.log_metrics({"step": 1, "loss": 2.0})
    for call, message in [
        (lambda: api.run_metrics(run.id, -5), "offset -5 is out of range: it must be at least 0"),
        (lambda: api.run_metrics(run.id, 3), "offset 3 is not where a row of metrics.jsonl starts"),
        (lambda: api.run_metrics(run.id, 2.5), "offset 2.5 must be a whole number"),
        (lambda: api.run_samples(run.id, -1), "offset -1 is out of range"),
        (lambda: api.run_log(run.id, 0), "lines 0 is out of range: it must be from 1 to 100,000"),
        (lambda: api.run_log(run.id, "many"), "lines 'many' is not a number"),
        (lambda: api.run_status(""), "no run given"),
        (lambda: api.preview_data("sft", "world", -1), "n -1 is out of range"),
        (lambda: api.vote("hi", ["a", "b"], 2), "best 2 is out of range: it must be from 0 to 1"),
    ]:
        with pytest.raises(gr.Error, match=re.escape(message)):
            call()
    assert api.run_metrics(run.id, 0)["rows"][0]["loss"] == 2.0
