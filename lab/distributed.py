"""Several processes, and several machines, for one run: `llm-lab train STAGE ... --nproc N` launches the stage
through `accelerate launch` (DDP by default; FSDP or DeepSpeed through `--accelerate-config FILE`).

The job process is the launcher: it holds the run (its queue turn and the job slots of its N processes, its
status), starts `accelerate launch ... -m lab.distributed` in its own process group, and waits. The ranks learn
the run's id from rank 0 (a broadcast, so that the ranks of another machine, which only know the address of
machine 0, learn it too), read its config from run.json, and train it: rank 0 writes run.json's fields, the
metrics, samples, checkpoints and the model; the others hold a `runs.ReadOnlyRun` that writes nothing. A stop
reaches every rank (the job's process group); the ranks agree on it at a step's end (`agree`), so that they all
stop at the same step instead of waiting on each other forever. A rank that fails writes its one-line message
in `ranks/`, and the launcher fails the run with it.

Machine ranks above 0 run `llm-lab train STAGE (the same flags) --machine-rank R`: no run of their own, no job
slot; they join machine 0's run, which they must see in the same run store (shared storage).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from lab import configs
from lab.errors import UserError, flag

# What a config file's `distributed_type` means for the lab, and what it cannot do.
SHARDED = ("FSDP", "DEEPSPEED")


def wanted(config) -> bool:
    """Whether a config trains with more than one process."""
    return getattr(config, "nproc", 1) > 1 or getattr(config, "num_machines", 1) > 1


def world_size(config) -> int:
    return getattr(config, "nproc", 1) * getattr(config, "num_machines", 1)


def strategy(config) -> str:
    """DDP, or what the accelerate config file asks for (FSDP, DEEPSPEED, ...)."""
    if not getattr(config, "accelerate_config", ""):
        return "DDP"
    path = Path(config.accelerate_config).expanduser()
    text = path.read_text(encoding="utf-8")
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        values = yaml.safe_load(text) or {}
    kind = str(values.get("distributed_type", "MULTI_GPU")).upper()
    return "DDP" if kind in ("MULTI_GPU", "MULTI_CPU", "NO") else kind


def check(stage: str, config) -> None:
    """What a multi-process run refuses before a run exists, with the reason."""
    if not wanted(config):
        return
    from lab import demo, models

    if demo.on():
        raise UserError(f"{flag('nproc')} {config.nproc}: this demo trains with one process; run the lab on your own machine "
                        "(LAB_DEMO_MODE=0) to train with several")
    if config.accelerate_config:
        path = Path(config.accelerate_config).expanduser()
        if not path.is_file():
            raise UserError(f"{flag('accelerate_config')} {config.accelerate_config}: no such file. Write one with `accelerate config`, "
                            "or leave it empty for DDP")
        try:
            kind = strategy(config)
        except Exception as e:
            raise UserError(f"{flag('accelerate_config')} {config.accelerate_config}: not a YAML or JSON accelerate config ({e})") from None
        if kind in SHARDED and getattr(config, "mode", "full") in models.QUANTIZED:
            raise UserError(f"{flag('mode')} {config.mode} with {kind} ({config.accelerate_config}): an 8-bit or 4-bit base cannot be "
                            "sharded; use DDP (no accelerate config), or mode full or lora")
    if config.num_machines > 1 and not config.main_process_ip:
        raise UserError(f"{flag('num_machines')} {config.num_machines}: set {flag('main_process_ip')} to the address of machine rank 0, "
                        f"and {flag('main_process_port')} to a port it can open, on every machine")
    device = models.pick_device(config.device)
    if device == "cpu" and config.accelerate_config and strategy(config) in SHARDED:
        raise UserError(f"{flag('accelerate_config')} {config.accelerate_config} asks for {strategy(config)}, which accelerate applies on GPUs only "
                        "(on the CPU it would train unsharded under that name): on the CPU, leave it empty for DDP")
    if device.startswith("cuda"):
        import torch

        if torch.cuda.device_count() < config.nproc:
            raise UserError(f"{flag('nproc')} {config.nproc}: one process per GPU, and this machine has {torch.cuda.device_count()}")
    elif device != "cpu":
        raise UserError(f"{flag('nproc')} {config.nproc} on {device}: several processes train on CUDA GPUs or on the CPU (gloo)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(config, machine_rank: int = 0, port: int | None = None) -> list[str]:
    """The `accelerate launch` command line that runs the ranks of one machine."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config.accelerate_config:
        cmd += ["--config_file", str(Path(config.accelerate_config).expanduser().absolute())]
    else:
        cmd += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]  # DDP (torchrun), on GPUs or CPU cores
    cmd += ["--num_processes", str(world_size(config)), "--num_machines", str(config.num_machines), "--machine_rank", str(machine_rank)]
    if port or config.main_process_port:
        cmd += ["--main_process_port", str(port or config.main_process_port)]
    if config.main_process_ip:
        cmd += ["--main_process_ip", config.main_process_ip]
    return [*cmd, "-m", "lab.distributed"]


def explained(config) -> str:
    """Comment lines for a command box: the accelerate launch a multi-process config runs, and what each other
    machine runs. Empty for one process."""
    if not wanted(config):
        return ""
    # The config file is not read here: the command box follows every keystroke, a public demo's too.
    kind = f"as {Path(config.accelerate_config).name} says" if config.accelerate_config else "DDP"
    lines = [f"# launches {world_size(config)} processes ({kind}): accelerate launch {' '.join(launch_command(config)[3:])}"]
    lines += [f"# on machine {r} (the same run store): the same command with --machine-rank {r}" for r in range(1, config.num_machines)]
    return "\n" + "\n".join(lines)


def _rank_errors(run) -> list[str]:
    folder = run.path / "ranks"
    found = []
    for p in sorted(folder.glob("*.error.json")) if folder.is_dir() else []:
        err = json.loads(p.read_text())
        found.append((err["time"], f"rank {err['rank']}: {err['message']}"))
    return [m for _, m in sorted(found)]


def launch(config, run) -> dict:
    """Machine 0's launcher, in the job process: the ranks of this machine, until they end; their final metrics."""
    from lab import jobs, runs

    port = config.main_process_port or free_port()  # one machine: any free port, so that two jobs never collide
    cmd = launch_command(config, 0, port)
    ranks = run.path / "ranks"
    if ranks.is_dir():  # a resumed run: the errors of its last attempt are not this one's
        for p in ranks.glob("*"):
            p.unlink()
    kind = strategy(config)
    run.update(world_size=world_size(config), launch_command=" ".join(cmd), strategy=kind)
    print(f"[lab] launching {world_size(config)} processes ({kind}): {' '.join(cmd)}", flush=True)
    env = {**os.environ, **_rank_env(config), "LAB_RUN_ID": run.id, "LAB_CHECKPOINTS": str(runs.root())}
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    forwarded = False
    while proc.poll() is None:
        if jobs.stop_requested() and not forwarded:  # a stop sent to this process alone (a terminal's kill)
            _signal_ranks(proc.pid)
            forwarded = True
        time.sleep(0.2)
    final_path = ranks / "final.json"
    if final_path.is_file():
        final = json.loads(final_path.read_text())
        shutil.rmtree(ranks, ignore_errors=True)
        return final
    if jobs.stop_requested():
        return {}
    errors = _rank_errors(run)
    if errors:
        raise UserError(errors[0])
    raise RuntimeError(f"the {world_size(config)} processes ended with exit code {proc.returncode} and no message (see log.txt)")


def die_with_parent() -> None:
    """This process gets SIGKILL when the one that started it dies (Linux): a job killed with -9 takes its
    launcher, and the launcher's death its ranks, instead of leaving them to train a run nobody holds."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a killed job's ranks end at their next failed collective
        pass


def _signal_ranks(launcher_pid: int) -> None:
    # accelerate launch (torchrun) passes a SIGTERM on to its workers, which then agree to stop at a step's end
    try:
        os.kill(launcher_pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def join(stage: str, config, machine_rank: int) -> int:
    """Another machine's ranks, in the foreground: they learn the run's id from machine 0 and write nothing."""
    if config.num_machines < 2 or not 0 < machine_rank < config.num_machines:
        raise UserError(f"{flag('machine_rank')} {machine_rank}: with {flag('num_machines')} {config.num_machines}, machine ranks "
                        f"above 0 go up to {config.num_machines - 1} (machine 0 runs the command without it)")
    if not config.main_process_ip or not config.main_process_port:
        raise UserError(f"{flag('machine_rank')} {machine_rank}: set {flag('main_process_ip')} and {flag('main_process_port')} "
                        "to those of machine rank 0")
    cmd = launch_command(config, machine_rank)
    print(f"[lab] machine {machine_rank} of {config.num_machines}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    return subprocess.call(cmd, env={**os.environ, **_rank_env(config)}, preexec_fn=die_with_parent)


def _rank_env(config) -> dict:
    from lab import models

    return {"PYTHONUNBUFFERED": "1", "LAB_DEVICE_CPU": "1" if models.pick_device(config.device) == "cpu" else "0"}


# -- the ranks ------------------------------------------------------------------------------------------------


def ranks() -> int:
    """The processes training this run (1: this one alone)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def active() -> bool:
    """Whether this process is one rank of several."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def agree(*local: bool) -> tuple[bool, ...]:
    """Each flag true on every rank if it is true on any (a stop, a time limit): where ranks must take the same
    branch. One process: the flags as they are."""
    if not active():
        return local
    import torch
    import torch.distributed as dist

    flags = torch.tensor([1.0 if f else 0.0 for f in local], device=_device())
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return tuple(bool(f) for f in flags.tolist())


def rank_index() -> int:
    """This process's rank (0: the one that writes)."""
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def broadcast(tensors) -> None:
    """Rank 0's values of `tensors` in every process (weights that start random in each)."""
    if not active():
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)


def average_gradients(params) -> None:
    """Each gradient averaged over the processes, so that every optimizer step is the same everywhere (what DDP
    does for the Trainer's stages, for a loop of the lab's own: PPO)."""
    if not active():
        return
    import torch
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective per update, not one per tensor
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def check_same(params, what: str) -> None:
    """Raise if the processes' copies of `params` have drifted apart (a collective that went missing)."""
    if not active():
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        total = torch.stack([p.detach().double().sum() for p in params]).sum().reshape(1)
    low, high = total.clone(), total.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.allclose(low, high, rtol=1e-6, atol=1e-6):
        raise RuntimeError(f"the processes' {what} differ ({low.item()} against {high.item()}): their updates went apart")


def full_state_dict(model) -> dict | None:
    """The whole weights of a model sharded over the ranks (FSDP2's DTensors), gathered in every process: a
    collective, so every rank calls it before rank 0 saves. None for a model that is not sharded."""
    if not active():
        return None
    from torch.distributed.tensor import DTensor

    state = model.state_dict()
    if not any(isinstance(v, DTensor) for v in state.values()):
        return None
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu() for k, v in state.items()}


def mean(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (the same keys on every rank)."""
    if not active() or not values:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(values[k]) for k in values], device=_device(), dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(values, (t / dist.get_world_size()).tolist()))


def _device():
    import torch
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def main() -> int:
    """One rank (`accelerate launch ... -m lab.distributed`)."""
    from lab import errors, jobs

    jobs.install_signal_handlers(agreed=True)  # first, as in lab.__main__: a stop may come at any moment
    die_with_parent()
    errors.SURFACE = "job"
    from accelerate import PartialState

    from lab import runs, stages

    state = PartialState(cpu=os.environ.get("LAB_DEVICE_CPU") == "1")  # the launcher read the config's device
    import torch.distributed as dist

    box = [os.environ.get("LAB_RUN_ID")]
    dist.broadcast_object_list(box, src=0)  # machines above 0 learn the run from machine 0
    try:
        run = runs.Run.open(box[0])
    except LookupError:
        print(f"error: rank {state.process_index}: run {box[0]} is not in this machine's run store ({runs.root()}): every machine "
              "must see the same run store (shared storage, LAB_CHECKPOINTS)", file=sys.stderr, flush=True)
        return 1
    if not state.is_main_process:
        run = runs.ReadOnlyRun(run.path)
    module = stages.get(run.stage)
    try:
        config = configs.from_dict(module.Config, run.config, source=f"run {run.id}")
        final = module.run(config, run) or {}
        if state.is_main_process:
            (run.path / "ranks").mkdir(exist_ok=True)
            runs.atomic_write_text(run.path / "ranks" / "final.json", json.dumps(final, default=str) + "\n")
        code = 0
    except jobs.StopRequested:
        code = 0
    except Exception as e:
        import traceback

        traceback.print_exc()
        message = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e} (see log.txt)"
        print(f"error: rank {state.process_index}: {message}", file=sys.stderr, flush=True)
        (run.path / "ranks").mkdir(exist_ok=True)
        runs.atomic_write_text(run.path / "ranks" / f"{state.process_index}.error.json",
                               json.dumps({"rank": state.process_index, "message": message, "time": time.time()}) + "\n")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    if code:  # the other ranks may wait in a collective for this one: exiting at once lets torchrun end them all
        os._exit(code)
    if dist.is_initialized():
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
