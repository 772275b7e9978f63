"""Jobs: every stage runs in its own process, `python -m lab train <stage> --config <run>/config.json
--run-id <id>` (or the same forked from a server that has imported the stages, for a process that starts many:
`start_from_fork_server`), so a UI (or a terminal) that closes never takes training down with it.

The queue lives in the run store, not in any long-lived process, so it survives restarts: a job is a
`queued` run folder with no process until its turn (`start_waiting` starts the oldest while fewer than
LAB_MAX_JOBS run, default 1: one GPU job at a time; a job that ends starts the next). Its process then
waits until no older queued job waits and takes one of LAB_MAX_JOBS slot locks. The locks are `flock`s,
which the kernel drops when a process dies, so a job killed with -9 never blocks the ones behind it; at
most LAB_MAX_QUEUED jobs wait.

Stop = SIGTERM (the job stops at its next step and saves), then SIGKILL after a grace period. The request is
written in run.json first, and a job installs its handler before its heavy imports (`lab.__main__`), so a stop
sent at any moment after submit ends the run `stopped`, even one whose process died of it before it could say so.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager, nullcontext

from lab import configs, runs
from lab.errors import UserError, flag, hint
from lab.runs import Run

# -- the stop signal of this process (a job's) ------------------------------------------------------------------
_stop = threading.Event()
# A rank of a multi-process job: a signal is only asked for, until the ranks agree to stop at a step's end
# (lab.distributed.agree), so that every rank stops at the same step.
_asked = threading.Event()


class StopRequested(Exception):
    """Raised where a job cannot stop at a step boundary (e.g. while it waits in the queue)."""


def request_stop(*_):
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def stop_asked() -> bool:
    """A stop this process was sent, agreed on by the ranks or not yet."""
    return _stop.is_set() or _asked.is_set()


def install_signal_handlers(agreed: bool = False) -> None:
    """SIGTERM and SIGINT request a stop; `agreed` (a rank of several): they ask for one (`stop_asked`)."""
    handler = (lambda *_: _asked.set()) if agreed else request_stop
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def max_jobs() -> int:
    from lab import demo

    # a public demo trains one job at a time across all its visitors, whatever LAB_MAX_JOBS says
    return 1 if demo.on() else max(1, int(os.environ.get("LAB_MAX_JOBS", "1")))


def thread_share() -> int:
    """torch threads for a job whose config leaves them at 0: torch's default (a thread per core) divided among the
    LAB_MAX_JOBS jobs that may run at once. Each taking the default, two jobs on two cores run four threads, and
    each goes at less than half its speed alone (bench/RESULTS.md, "The test suite's time")."""
    return max(1, _default_threads() // max_jobs())


@functools.cache
def _default_threads() -> int:  # as torch set them at its start: a process that trains twice must not halve them twice
    import torch

    return torch.get_num_threads()


def queue() -> list[Run]:
    """The runs waiting for their turn, oldest first: queued with no process yet (`submit` starts none until a
    slot is free), or with a live one waiting for its slot (a foreground `llm-lab train`, or a job just started)."""
    waiting = []
    for run in runs.list_runs():
        info = run.info
        if info["status"] == "queued" and (not info.get("pid") or run.alive(info)):
            waiting.append((info["created"], run.id, run))
    return [r for *_, r in sorted(waiting, key=lambda t: t[:2])]


def start_waiting() -> list[Run]:
    """Start the processes of the oldest waiting runs while fewer jobs run than LAB_MAX_JOBS, so that a waiting
    job costs no process until its turn. Called when a job is submitted, when one ends (by the job itself), and
    whenever the app or `llm-lab runs` lists the store (which also catches a job killed before it could)."""
    lock_dir = runs.root() / ".slots"
    lock_dir.mkdir(parents=True, exist_ok=True)
    started = []
    with open(lock_dir / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting the same run would run it twice
        idle, busy = [], 0  # waiting with no process; running, or started by the queue and about to take a slot
        for r in runs.list_runs():  # one pass over the store: the app's status polls come through here
            info = r.info
            if info["status"] == "queued" and not info.get("pid"):
                idle.append((info["created"], r.id, r))
            elif info["status"] in runs.ACTIVE and r.alive(info) and (info["status"] == "running" or info.get("started_by_queue")):
                busy += _holds_slot(info)
        for *_, run in sorted(idle, key=lambda t: t[:2]):
            need = slots_of(run.info)
            if busy + need > max_jobs():
                break  # in order: a job of several processes is not overtaken by smaller ones behind it
            started.append(_spawn(run))
            busy += need
    return started


def _holds_slot(info: dict) -> int:
    """How many of LAB_MAX_JOBS's slots a live job counts for: one per process (all of them for a job of as many
    processes or more, which then runs alone); none for a stage that only starts other jobs (the lifecycle) once
    it runs, or its own children would wait for it forever. run.json says so (`create` writes it), so reading the
    queue imports no stage."""
    if info["status"] == "running" and not info.get("holds_slot", True):
        return 0
    return slots_of(info)


def slots_of(info: dict) -> int:
    return min(max(1, int((info.get("config") or {}).get("nproc", 1) or 1)), max_jobs())


def ahead_of(run: Run) -> int:
    """The jobs a waiting run waits for: those queued before it, and those that hold a job slot now."""
    position = queue_position(run)
    if position is None:
        return 0
    running = sum(1 for r in runs.list_runs() if r.id != run.id and (i := r.info)["status"] == "running" and _holds_slot(i) and r.alive(i))
    return position - 1 + running


def queue_position(run: Run) -> int | None:
    """1 for the next job to start; None when the run is not waiting."""
    ids = [r.id for r in queue()]
    return ids.index(run.id) + 1 if run.id in ids else None


@contextmanager
def slot(run: Run, poll: float = 0.25):
    """Wait for our turn and free slots (one per process: `slots_of`); hold them while the block runs."""
    lock_dir = runs.root() / ".slots"
    lock_dir.mkdir(parents=True, exist_ok=True)
    need = slots_of(run.info)
    held: list = []
    while len(held) < need:
        if stop_requested():
            raise StopRequested()
        ahead = [r for r in queue() if r.id != run.id and (r.info["created"], r.id) < (run.info["created"], run.id)]
        if not ahead:
            for k in range(max_jobs()):
                f = open(lock_dir / f"slot-{k}.lock", "w")
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held.append(f)
                    if len(held) == need:
                        break
                except BlockingIOError:
                    f.close()
        if len(held) < need:
            for f in held:  # all or none: two jobs each holding part of what they need would wait forever
                f.close()
            held = []
            time.sleep(poll)
    try:
        yield
    finally:
        for f in held:
            f.close()


def _versions() -> dict:
    import importlib.metadata as md

    from lab import __version__

    out = {"lab": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets", "tokenizers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def execute(run: Run) -> str:
    """Run a created run's stage in this process, from the queue to its final status. Returns the status.

    Whatever happens, the run ends in completed, stopped or failed, never "running"."""
    from lab import distributed, errors, stages

    errors.SURFACE = "job"  # its errors are read on a page and in a terminal
    install_signal_handlers()
    if run.info.get("stop_requested"):  # asked to stop while this process started
        request_stop()
    module = stages.get(run.stage)
    run.update(pid=os.getpid(), pid_start=runs.process_start(os.getpid()), versions=_versions())
    threading.Thread(target=_record_peak_memory, args=(run,), daemon=True).start()
    try:
        config = configs.from_dict(module.Config, run.config, source=f"run {run.id}")
        with slot(run) if module.STAGE.slot else nullcontext():
            run.update(status="running", started=time.time())
            print(f"[lab] run {run.id}: stage {run.stage} started", flush=True)
            final = (distributed.launch if distributed.wanted(config) else module.run)(config, run) or {}
        status = "stopped" if stop_requested() else "completed"
        run.update(status=status, ended=time.time(), final_metrics=final)
    except StopRequested:
        status = "stopped"
        run.update(status=status, ended=time.time(), error=None if run.info.get("started") or run.info.get("resumes") else "stopped before it started")
    except Exception as e:
        status = "failed"
        # log.txt keeps the traceback either way; a user's mistake is shown as its one line, which says what to do
        _log_traceback(run)
        run.clear_leftovers()
        if out_of_space(e):
            e = UserError(f"no space left to save ({getattr(e, 'strerror', None) or e}): free disk space (or raise the file-size limit) and "
                          "train again; what this run had saved before is intact")
        if isinstance(e, UserError):
            print(f"error: {e}", file=sys.stderr, flush=True)
            run.update(status=status, ended=time.time(), error=str(e))
        else:  # a bug of ours
            run.update(status=status, ended=time.time(), error=f"{type(e).__name__}: {e} (see log.txt)")
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():  # what a GPU held at most, for bench/gpu.py
        run.update(cuda_peak_memory_mb=round(torch.cuda.max_memory_allocated() / 2**20))
    print(f"[lab] run {run.id}: {status}", flush=True)
    try:
        start_waiting()  # this job's slot is free: the next waiting job's turn
    except OSError as e:  # the store went away: nothing waits in it
        print(f"[lab] could not start the next waiting job: {e}", flush=True)
    return status


def out_of_space(e: BaseException) -> bool:
    """A write refused for lack of room: a full disk, a quota, a file-size limit (`ulimit -f`), as an OSError or
    as a library's own error around one (safetensors reports "I/O error: File too large (os error 27)")."""
    codes = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    if isinstance(e, OSError) and e.errno in codes:
        return True
    return any(f"(os error {code})" in str(e) for code in codes)


def _record_peak_memory(run: Run, every: float = 2.0) -> None:
    """The job's peak resident memory in run.json as it grows, so that a job the kernel kills for memory (which
    leaves no word) is reported with what it reached."""
    import resource

    recorded = 0.0
    while True:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        if peak > recorded * 1.05:
            try:
                run.update(peak_memory_mb=round(peak))
            except OSError:  # the store went away
                return
            recorded = peak
        time.sleep(every)


def _log_traceback(run: Run) -> None:
    """The exception being handled, into the run's log.txt only: a foreground CLI run echoes stderr to the
    terminal, where a user's mistake should read as one line."""
    sys.stdout.flush()
    sys.stderr.flush()
    with open(run.path / "log.txt", "a", encoding="utf-8") as log:
        traceback.print_exc(file=log)


def create(stage: str, config, name: str | None = None, owner: str | None = None) -> Run:
    """A run folder for a config that passed its stage's checks (and the demo's, in demo mode); `owner` is the
    visitor who started it (demo mode lets only them stop, delete or resume it)."""
    from lab import demo, distributed, stages

    module = stages.get(stage)
    configs.validate(config, source=stage)
    demo.check_config(stage, config)
    distributed.check(stage, config)
    if hasattr(module, "check"):
        module.check(config)  # refuse bad input before a run folder exists for it
    parent = stages.parent_of(stage, config)
    run = Run.create(stage, config, name=name or getattr(config, "name", None) or None, parent=parent)
    (run.path / "config.json").write_text(json.dumps(configs.to_dict(config), indent=2) + "\n")
    run.update(command=configs.cli_command(stage, config), owner=owner, **({} if module.STAGE.slot else {"holds_slot": False}))
    return run


def max_queued() -> int:
    """How many jobs may wait at once (LAB_MAX_QUEUED): a bound on the backlog one caller can pile up."""
    from lab import demo

    return max(1, int(os.environ.get("LAB_MAX_QUEUED", "4" if demo.on() else "16")))


def check_room(owner: str | None) -> None:
    """Refuse a job the queue has no room for: the store-wide cap, and in demo mode one waiting job per visitor."""
    from lab import demo

    waiting = [r for r in queue() if r.info["status"] == "queued"]
    if len(waiting) >= max_queued():
        raise UserError(f"{len(waiting)} jobs are already waiting (the queue holds {max_queued()}, LAB_MAX_QUEUED): "
                        "wait for one to start, or stop one of yours")
    if demo.on() and owner and any(r.info.get("owner") == owner for r in waiting):
        raise UserError("you already have a job waiting in the queue: this demo queues one per visitor; wait for it to start, "
                        "or stop it (run the lab on your own machine, LAB_DEMO_MODE=0, to lift the cap)")


# Jobs this process started: polling their handles reaps them, so a finished job never lingers as a zombie.
_children: dict[str, subprocess.Popen] = {}


def submit(stage: str, config, name: str | None = None, owner: str | None = None) -> Run:
    """Create a run and queue its job; returns at once with the run `queued`. Its process starts now if a slot
    is free, else when one frees (`start_waiting`)."""
    reap()
    check_room(owner)
    run = create(stage, config, name, owner)
    start_waiting()
    return run


def _spawn(run: Run) -> Run:
    argv = ["train", run.stage, "--config", str(run.path / "config.json"), "--run-id", run.id]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LAB_CHECKPOINTS": str(runs.root())}
    proc = None
    if _fork_server is not None:
        try:
            proc = _Forked(_fork_server, argv, env, run.path / "log.txt")
        except Exception as e:  # a server that died or could not start: the job starts the slow way
            print(f"[lab] the fork server could not start run {run.id} ({type(e).__name__}: {e}): starting it as a new process", flush=True)
    if proc is None:
        with open(run.path / "log.txt", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "lab", *argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True,  # the job outlives the app and ignores the app's Ctrl-C
                                    env=env)
    run.update(pid=proc.pid, pid_start=runs.process_start(proc.pid), started_by_queue=True)
    _children[run.id] = proc
    return run


# -- warm starts: jobs forked from a process that has imported the stages once ----------------------------------
# A job's start-up is mostly its imports (torch, transformers, and the peft and bitsandbytes that the Trainer
# imports: bench/RESULTS.md). A process that starts jobs one after another (the lifecycle) starts them from a
# fork server instead: a fresh process that imports the stages and what their training imports (the Trainer's
# callbacks, TRL's trainers) once and forks each job from there, so a job starts in a fraction of a second. Not a
# fork of the caller itself: the caller has threads (its memory probe) and maybe locks held by them at the fork,
# and its stop request would be inherited; the server has neither.
_fork_server = None
PRELOAD = ("lab.cli", "lab.stages.tokenizer", "lab.stages.pretrain", "lab.stages.sft", "lab.stages.reward", "lab.stages.dpo",
           "lab.stages.ppo", "lab.stages.grpo", "lab.telemetry", "trl.trainer.sft_trainer", "trl.trainer.reward_trainer",
           "trl.trainer.dpo_trainer", "trl.trainer.grpo_trainer")


def start_from_fork_server() -> None:
    """From now on the jobs this process starts are forked from a server that has imported the stages (it
    starts now, in the background, so its imports overlap whatever this process does next)."""
    import multiprocessing

    global _fork_server
    if _fork_server is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(PRELOAD))
        from multiprocessing import forkserver

        forkserver.ensure_running()
        _fork_server = ctx


def stop_fork_server() -> None:
    """Jobs start as new processes again, and the server (the memory of its imports) is gone."""
    global _fork_server
    if _fork_server is not None:
        from multiprocessing import forkserver

        forkserver._forkserver._stop()
        _fork_server = None


class _Forked:
    """A job forked from the fork server, polled like a Popen. It is taken out of multiprocessing's own list of
    children, which joins them as this process exits: like a Popen'd job, it outlives the process that started it."""

    def __init__(self, ctx, argv: list[str], env: dict, log):
        import multiprocessing.process

        self._proc = ctx.Process(target=_forked_job, args=(argv, env, str(log)), name=f"lab {' '.join(argv[:2])}")
        self._proc.start()
        multiprocessing.process._children.discard(self._proc)
        self.pid = self._proc.pid

    def poll(self) -> int | None:
        return self._proc.exitcode


def _forked_job(argv: list[str], env: dict, log: str) -> None:
    """A forked job's process: what `python -m lab train ...` would be, in its own session, writing to its log."""
    import faulthandler

    install_signal_handlers()  # first: a stop may come the moment the pid is known
    os.setsid()  # the job outlives the process that started it and ignores its Ctrl-C
    os.environ.clear()
    os.environ.update(env)
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(null)
    sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)
    faulthandler.register(signal.SIGUSR1, all_threads=True, file=sys.stderr)
    # The server handed this process two fds that keep processes alive which hold the starter's stdout and
    # stderr: the server's own (it serves while one is open) and its resource tracker's. Kept for as long as the
    # job runs, they would hold a starter's pipe open (a terminal's `| tee`, a test's capture) long after the
    # starter ended. The job needs neither (it makes its own tracker if it ever needs one).
    from multiprocessing import forkserver, resource_tracker

    tracker = resource_tracker._resource_tracker
    if tracker._fd is not None:
        os.close(tracker._fd)
        tracker._fd = tracker._pid = None
    server = forkserver._forkserver
    if server._forkserver_alive_fd is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    from lab.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


def reap() -> None:
    """Collect the jobs this process started that have ended, so that a long-lived process (the app)
    does not keep one zombie per finished job."""
    for rid, proc in list(_children.items()):
        if proc.poll() is not None:
            _children.pop(rid, None)
    start_waiting()


def resume(run: Run, owner: str | None = None) -> Run:
    """Continue a stopped or failed run. With a checkpoint (every `save_steps`, and at a stop) the same run goes on
    from it, in its own folder: the same step numbering, optimizer, learning-rate schedule, data order and random
    state, as if it had never stopped; its curves lose the rows logged after the checkpoint, which the job logs
    again. Without one (saving turned off, or killed before its first), a new run starts from the run's saved
    model with the steps it had left and a fresh optimizer, schedule and data order; its parent is the old run."""
    from lab import stages

    info = run.info
    module = stages.get(info["stage"]) if info["stage"] in stages.REGISTRY else None
    if hasattr(module, "resume"):
        return module.resume(run, owner)  # a stage that carries on in place (the lifecycle)
    status = run.status
    if status in runs.ACTIVE:
        raise UserError(f"run {run.id} is {status}: there is nothing to resume yet")
    if status == "completed":
        raise UserError(f"run {run.id} completed: there is nothing left to train (start a new run from it instead)")
    if run.last_checkpoint():
        return _resume_in_place(run, owner)
    field = stages.spec(info["stage"]).resume_from
    if not field:
        raise UserError(f"run {run.id} ({status}) has no checkpoint to resume from (saved every {flag('save_steps')}), and a {info['stage']} run "
                        "cannot start from a saved model: start it again with the same config")
    if not (run.path / "model").is_dir():
        saved = f"a LoRA adapter, which cannot be a base yet: export it ({hint(cli='llm-lab export RUN --merge', page='Runs → Export')}) and start from the merged folder" if (run.path / "adapter").is_dir() else "no saved model"
        raise UserError(f"run {run.id} ({status}) has {saved}: start it again with the same config instead")
    values = dict(info["config"])
    done = (info.get("final_metrics") or {}).get("steps") or max((r.get("step", 0) for r in run.metrics()[0]), default=0)
    if values.get("max_steps", 0) > 0:
        left = values["max_steps"] - done
        if left <= 0:
            raise UserError(f"run {run.id} trained all of its {values['max_steps']} steps: there is nothing left to train")
        values["max_steps"] = left
    values[field] = run.id
    return submit(info["stage"], configs.from_dict(module.Config, values, source=f"resume of {run.id}"), owner=owner)


def _resume_in_place(run: Run, owner: str | None) -> Run:
    """Queue a stopped or failed run again, to go on from its last checkpoint (`lab.stages.base.fit` and PPO load
    it). The curves are rewound to the checkpoint first, so the page never shows a step twice."""
    reap()
    check_room(owner)
    step, _ = run.last_checkpoint()
    (runs.root() / ".slots").mkdir(parents=True, exist_ok=True)
    with open(runs.root() / ".slots" / "start.lock", "w") as lock:  # start_waiting must not see it half-reset
        fcntl.flock(lock, fcntl.LOCK_EX)
        run.rewind(step)
        run.queue_again(step, final_metrics={})
    print(f"[lab] run {run.id}: resumes from the checkpoint of step {step}", flush=True)
    start_waiting()
    return run


def stop(run: Run, grace: float = 30.0, wait: bool = False) -> str:
    """Ask a job to stop (SIGTERM: it saves and ends `stopped`); SIGKILL if it is still alive after
    `grace` seconds. With wait=False the escalation happens in a background thread."""
    info = run.info
    pid = info.get("pid")
    if info["status"] == "queued" and not pid:  # waiting with no process yet: it never starts
        (runs.root() / ".slots").mkdir(parents=True, exist_ok=True)
        with open(runs.root() / ".slots" / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not run.info.get("pid"):
                run.update(status="stopped", ended=time.time(), error="stopped before it started")
                return "stopped"
        info = run.info
        pid = info.get("pid")
    if info["status"] not in runs.ACTIVE or not run.alive(info):
        return run.status
    run.update(stop_requested=time.time())  # read by the job as it starts, and by `Run.status` if it dies of the signal
    try:
        _signal(pid, signal.SIGTERM)
    except ProcessLookupError:
        return run.status

    def escalate():
        deadline = time.time() + grace
        while time.time() < deadline:
            if run.id in _children:
                _children[run.id].poll()
            if not run.alive():
                return
            time.sleep(0.2)
        try:
            _signal(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.5)
        if run.info["status"] in runs.ACTIVE:
            run.update(status="stopped", ended=time.time(), error=f"did not stop within {grace:.0f}s; killed")

    if wait:
        escalate()
        return run.status
    import threading

    threading.Thread(target=escalate, daemon=True).start()
    return "stopping"


def _signal(pid: int, sig: int) -> None:
    """A job started by the queue leads its own process group (its session), which holds the ranks of a
    multi-process job too: the signal goes to all of them. A foreground `llm-lab train` shares its terminal's
    group, so it alone is signalled (its ranks follow it: lab.distributed.launch)."""
    if os.getpgid(pid) == pid:
        os.killpg(pid, sig)
    else:
        os.kill(pid, sig)


def wait(run: Run, timeout: float | None = None, poll: float = 0.2) -> str:
    deadline = time.time() + timeout if timeout else None
    while True:
        if run.id in _children:
            _children[run.id].poll()
        status = run.status
        if status not in runs.ACTIVE:
            return status
        if deadline and time.time() > deadline:
            raise TimeoutError(f"run {run.id} still {status} after {timeout}s")
        time.sleep(poll)

