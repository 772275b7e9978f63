"""Several processes for one run (`--nproc`, lab.distributed), for real on the CPU with gloo: accelerate launch
(torchrun) starts the ranks, rank 0 alone writes the run, and the ranks stop together."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import pytest
from conftest import free_port, last_line, llm_lab, read_jsonl, refused, wait_for

from lab.runs import Run

FEW = ("--logging-steps", "1", "--seed", "0")


def trained_steps(run: Run) -> collections.Counter:
    if not (run.path / "metrics.jsonl").exists():
        return collections.Counter()
    return collections.Counter(r["step"] for r in read_jsonl(run.path / "metrics.jsonl") if "loss" in r or "objective/kl" in r)


def new_runs(store, before: set) -> list:
    return sorted(set(p.name for p in store.iterdir() if (p / "run.json").exists()) - before)


def ranks_alive() -> int:
    """The rank processes of this machine (their launcher names lab.distributed too, after accelerate's launch)."""
    lines = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return sum(1 for line in lines if "-m lab.distributed" in line and "accelerate" not in line)


def test_a_two_process_pretrain_is_one_run_with_each_step_logged_once(store):
    before = set(os.listdir(store))
    run = Run.open(last_line(llm_lab("train", "pretrain", "--preset", "nano", "--max-steps", "4", "--sample-every", "2", "--eval-every", "2",
                                     "--nproc", "2", *FEW)))
    assert new_runs(store, before) == [run.id]  # the launcher made the run once; the ranks joined it
    info = run.info
    assert info["status"] == "completed" and info["world_size"] == 2 and info["strategy"] == "DDP"
    assert "accelerate.commands.launch" in info["launch_command"] and "--num_processes 2" in info["launch_command"]
    assert trained_steps(run) == {1: 1, 2: 1, 3: 1, 4: 1}
    assert [r["step"] for r in read_jsonl(run.path / "metrics.jsonl") if "eval_loss" in r] == [2, 4]
    assert {s["step"] for s in read_jsonl(run.path / "samples.jsonl")} == {0, 2, 4}  # one set per step, not one per rank
    assert info["final_metrics"]["eval_loss"] > 0 and (run.path / "model" / "model.safetensors").exists()
    assert not (run.path / "ranks").exists()


def test_a_two_process_lora_sft_completes_and_saves_its_adapter(nano_run, store):
    run = Run.open(last_line(llm_lab("train", "sft", "--parent", nano_run.name, "--mode", "lora", "--max-steps", "3", "--batch-size", "4",
                                     "--kl-every", "1", "--sample-every", "0", "--nproc", "2", *FEW)))
    assert run.info["status"] == "completed" and run.info["world_size"] == 2
    assert trained_steps(run) == {1: 1, 2: 1, 3: 1}
    assert [r["step"] for r in read_jsonl(run.path / "metrics.jsonl") if "kl" in r] == [0, 1, 2, 3]
    from peft import AutoPeftModelForCausalLM

    AutoPeftModelForCausalLM.from_pretrained(run.path / "adapter")


def test_a_two_process_ppo_completes_with_the_rollouts_of_both(nano_sft_run, store):
    run = Run.open(last_line(llm_lab("train", "ppo", "--parent", nano_sft_run.name, "--reward", "gold", "--max-steps", "2", "--batch-size", "4",
                                     "--mini-batch-size", "2", "--sample-every", "1", "--nproc", "2", *FEW)))
    info = run.info
    assert info["status"] == "completed" and info["world_size"] == 2
    rows = [r for r in read_jsonl(run.path / "metrics.jsonl") if "episode" in r]
    assert [(r["step"], r["episode"]) for r in rows] == [(1, 8), (2, 16)]  # 4 rollouts per process and batch
    assert info["final_metrics"]["episodes"] == 16 and (run.path / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("stage, flags", [
    ("reward", ()),
    ("dpo", ("--kl-every", "0", "--sample-every", "0")),
    ("grpo", ("--reward", "gold", "--num-generations", "2", "--sample-every", "0")),
])
def test_the_other_trainer_stages_take_two_processes(nano_sft_run, store, stage, flags):
    run = Run.open(last_line(llm_lab("train", stage, "--parent", nano_sft_run.name, "--max-steps", "2", "--batch-size", "4", "--no-world-evals",
                                     "--nproc", "2", *flags, *FEW)))
    assert run.info["status"] == "completed" and run.info["world_size"] == 2
    assert trained_steps(run) == {1: 1, 2: 1}
    assert run.model_dir is not None


def test_stop_ends_every_rank_and_the_run_reads_stopped(nano_sft_run, store):
    run = Run.open(last_line(llm_lab("train", "ppo", "--parent", nano_sft_run.name, "--reward", "gold", "--max-steps", "5000", "--batch-size", "4",
                                     "--mini-batch-size", "2", "--sample-every", "0", "--save-steps", "0", "--no-world-evals",
                                     "--nproc", "2", "--detach", *FEW)))
    try:
        wait_for(lambda: len(trained_steps(run)) >= 2, 180, "two PPO steps")
        assert ranks_alive() == 2
    finally:  # a job left running would hold the job slot the other tests wait for
        llm_lab("stop", run.id)
    wait_for(lambda: run.status == "stopped", 60, "the stop", shown=lambda: run.info)
    wait_for(lambda: ranks_alive() == 0, 30, "every rank to end")
    assert run.info["error"] is None and (run.path / "model" / "model.safetensors").exists()


def test_two_machines_on_one_host_train_one_run(store):
    port = str(free_port())
    flags = ("pretrain", "--preset", "nano", "--max-steps", "3", "--sample-every", "0", "--eval-every", "0", "--num-machines", "2",
             "--main-process-ip", "127.0.0.1", "--main-process-port", port, *FEW)
    before = set(os.listdir(store))
    run = Run.open(last_line(llm_lab("train", *flags, "--detach")))
    machine_1 = subprocess.run([sys.executable, "-m", "lab", "train", *flags, "--machine-rank", "1"], capture_output=True, text=True,
                               timeout=300, env=os.environ.copy())
    assert machine_1.returncode == 0, machine_1.stderr[-3000:]
    wait_for(lambda: run.status == "completed", 120, "machine 0's run", shown=lambda: run.info)
    assert new_runs(store, before) == [run.id] and run.info["world_size"] == 2
    assert trained_steps(run) == {1: 1, 2: 1, 3: 1}


def test_a_rank_that_fails_fails_the_run_with_its_message(nano_run, store):
    proc = llm_lab("train", "sft", "--parent", nano_run.name, "--mode", "lora", "--lora-targets", "no_such_proj", "--max-steps", "2",
                   "--nproc", "2", check=False)
    assert proc.returncode != 0
    run = Run.open(proc.stdout.strip().splitlines()[-1])
    assert run.status == "failed" and run.info["error"].startswith("rank ") and "no_such_proj" in run.info["error"]


@pytest.mark.parametrize("flags, message", [
    (("--nproc", "2", "--num-machines", "2"), "set --main-process-ip"),
    (("--nproc", "2", "--accelerate-config", "/no/such.yaml"), "no such file"),
    (("--nproc", "2", "--mode", "lora-8bit", "--accelerate-config", "FSDP"), "cannot be sharded"),
    (("--nproc", "2", "--accelerate-config", "FSDP"), "accelerate applies on GPUs only"),
    (("--nproc", "2", "--device", "cuda"), "--device 'cuda'"),
    (("--nproc", "0",), "--nproc 0 is out of range"),
])
def test_an_impossible_combination_is_refused_before_a_run_exists(nano_run, store, tmp_path, flags, message):
    fsdp = tmp_path / "fsdp.yaml"
    fsdp.write_text("distributed_type: FSDP\nnum_processes: 2\n")
    flags = tuple(str(fsdp) if f == "FSDP" else f for f in flags)
    assert message in refused("train", "sft", "--parent", nano_run.name, *flags)


def test_a_job_of_n_processes_takes_n_job_slots(monkeypatch):
    from lab import jobs

    monkeypatch.setenv("LAB_MAX_JOBS", "4")
    assert [jobs.slots_of({"config": {"nproc": n}}) for n in (1, 2, 8)] == [1, 2, 4]  # at most all of them
    monkeypatch.setenv("LAB_MAX_JOBS", "1")
    assert jobs.slots_of({"config": {"nproc": 2}}) == 1


def test_the_command_box_shows_the_launch(store):
    from pages import api

    shown = api.cli_command("pretrain", json.dumps({"nproc": 2, "num_machines": 2, "main_process_ip": "10.0.0.1", "main_process_port": 29500}))
    first, launch, other = shown.splitlines()
    assert first.startswith("llm-lab train pretrain") and "--nproc 2" in first
    assert launch.startswith("# launches 4 processes (DDP): accelerate launch") and "--main_process_ip 10.0.0.1" in launch
    assert "--machine-rank 1" in other


GATHER = """
import torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from lab import distributed

dist.init_process_group("gloo")
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Linear(6, 4))
whole = {k: v.clone() for k, v in model.state_dict().items()}
assert distributed.full_state_dict(model) is None  # not sharded: nothing to gather
mesh = init_device_mesh("cpu", (dist.get_world_size(),))
for layer in model:
    fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)
gathered = distributed.full_state_dict(model)
assert gathered.keys() == whole.keys() and all(torch.equal(gathered[k], whole[k]) for k in whole), "not the whole weights"
# both ranks done before either tears gloo down: under load one rank once aborted in the teardown
# ("terminate called without an active exception") while the other was still in the gather
dist.barrier()
dist.destroy_process_group()
print("whole", dist.is_initialized())
"""


def test_a_sharded_model_is_gathered_whole_before_rank_0_saves_it(tmp_path):
    """FSDP shards the weights over the ranks (on GPUs; torch shards on the CPU too): save_model gathers them first."""
    script = tmp_path / "gather.py"
    script.write_text(GATHER)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), str(script)],
                          capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("whole") == 2  # both ranks got there (their lines may interleave)
