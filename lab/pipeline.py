"""Runs made of other runs: the lifecycle (lab.stages.lifecycle) and the experiments (lab.experiments) start
their steps as normal runs of the store, each its own job, and follow them here. The parent run records each
step in run.json `steps` ({step: {run, stage, status, started, ended}}), written only by its own process, so
a stopped one can be continued (`reusable`) without redoing what finished.
"""

from __future__ import annotations

import time

from lab import configs, jobs, runs
from lab.errors import UserError


def steps(run) -> dict:
    return dict(run.info.get("steps") or {})


def set_step(parent, step: str, **fields) -> None:
    done = steps(parent)  # only the parent's own process writes its steps
    done[step] = {**done.get(step, {}), **fields}
    parent.update(steps=done)


def step_seconds(record: dict, now: float | None = None) -> float | None:
    """How long a step's run has run, from the parent's record of it: its run's `runs.seconds` where the record
    holds it (a run resumed in place ran in stretches), else its start to its end or `now`."""
    if record.get("seconds") is not None and record.get("status") not in runs.ACTIVE:
        return record["seconds"]
    if not record.get("started"):
        return None
    return round((record.get("ended") or now or time.time()) - record["started"], 1)


def reusable(run, step: str, label: str):
    """The run `run` made for `step` before (a continue), if it completed or is still going, or if it
    stopped or failed with a checkpoint, from which it goes on (`jobs.resume`)."""
    rid = steps(run).get(step, {}).get("run")
    if not rid:
        return None
    try:
        child = runs.Run.open(rid)
    except LookupError:  # deleted since: make it again
        return None
    if child.status in ("stopped", "failed") and child.last_checkpoint():
        print(f"[{label}] {step}: run {child.id} goes on from its checkpoint of step {child.last_checkpoint()[0]}", flush=True)
        return jobs.resume(child, owner=run.info.get("owner"))
    return child if child.status in ("completed", *runs.ACTIVE) else None


def config_of(stage: str, values: dict, source: str):
    """A stage's config from a step's fields, those it does not have dropped (a tokenizer has no seed or device)."""
    from lab import stages

    module = stages.get(stage)
    known = {f.name for f in configs.fields(module.Config)}
    return configs.from_dict(module.Config, {k: v for k, v in values.items() if k in known}, source=source)


def same_run(stage: str, config):
    """The newest completed run of the store that trained exactly `config` (its name aside): what an experiment
    would train again from the same seed. Experiments share such runs (one nano base for all of them)."""
    def plain(c) -> dict:
        return {k: v for k, v in configs.to_dict(c).items() if k != "name"}

    want = plain(config)
    for r in reversed(runs.list_runs()):
        info = r.info
        if info.get("stage") == stage and info.get("status") == "completed" and r.model_dir is not None:
            try:  # through the config class: a field added since an older run was made counts at its default
                theirs = plain(configs.from_dict(type(config), info.get("config") or {}, source=f"run {r.id}"))
            except UserError:  # a config this lab no longer accepts
                continue
            if theirs == want:
                return r
    return None


def submit(run, step: str, stage: str, config, name: str, label: str):
    """Queue a step's run as its own job and record it in `run`."""
    child = jobs.submit(stage, config, name=name, owner=run.info.get("owner"))
    set_step(run, step, run=child.id, stage=stage, status="queued", started=None, ended=None)
    ahead = jobs.ahead_of(child)
    print(f"[{label}] {step}: run {child.id}" + (f", waiting in the queue behind {ahead} job(s)" if ahead else ""), flush=True)
    return child


def follow(run, step: str, child, label: str, poll: float = 0.5) -> str:
    """Wait for a step's run to end, recording its status in `run`; a stop asked of `run` stops it."""
    seen = None
    while True:
        jobs.reap()  # this process started the job (jobs.submit): collect it when it ends, no zombie left
        status = child.status
        if status != seen:
            info = child.info
            set_step(run, step, run=child.id, status=status, started=info.get("started"), ended=info.get("ended"), seconds=runs.seconds(info))
            run.log_metrics({"step": len(run.metrics()[0]), f"{label}_step": step, "status": status})
            seen = status
        if status not in runs.ACTIVE:
            return status
        if jobs.stop_requested():
            print(f"[{label}] stop asked: stopping the {step} step ({child.id})", flush=True)
            jobs.stop(child, wait=True)
            set_step(run, step, status=child.status, ended=child.info.get("ended"), seconds=runs.seconds(child.info))
            return "stopped"
        time.sleep(poll)


def requeue(run, owner: str | None, what: str, start_new: str) -> None:
    """Queue a stopped or failed parent run (a `what`: lifecycle, experiment) again, in place: it carries on
    from its first unfinished step. Refused while it is active, and once it completed (`start_new` says how)."""
    status = run.status
    if status in runs.ACTIVE:
        raise UserError(f"{what} {run.id} is {status}: it carries on by itself")
    if status == "completed":
        raise UserError(f"{what} {run.id} completed: start a new one ({start_new})")
    jobs.check_room(owner)
    run.queue_again()
    jobs.start_waiting()
