"""The whole lifecycle as one run: tokenizer → pretrain → SFT → reward model → DPO and PPO (and GRPO with
`--with grpo`) → evaluations → report card, on the toy world.

    llm-lab quickstart                          # the default scale: the CPU default models, steps fitted to the toy world
    llm-lab quickstart --scale nano             # a few minutes on 2 CPU cores: tests and demos
    llm-lab quickstart --continue RUN           # carry on from the first unfinished step, reusing the others
    llm-lab train lifecycle --scale nano --detach   # the same as a background job (what Home's button starts)

Each step is a normal run of the store, with its parent links, started as its own job, so every page shows
it. This run records them (run.json `steps`), follows each to its end and then writes an eval.json into
every model's run and the report card (report.json, report.md, report.html) into its own folder. It waits
its turn in the queue like any job but holds no job slot while its children train (they need it); it takes
one only for the evaluations, which it computes in its own process. Stop stops the step that runs and then
this run; `--continue` (or Resume) queues the same run again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from lab import configs, jobs, pipeline, runs
from lab.configs import DATA, MODEL, RUN, option
from lab.errors import UserError, flag, hint
from lab.stages import Stage
from lab.stages.base import RunArgs

STAGE = Stage(label="Lifecycle", page="Home", data="", produces="report", lineage=(), slot=False, curves=())

# (step, stage, config fields): "{sft}" is the id of the run the sft step made. A step is named after what
# it makes where two steps share a stage.
PLAN = (
    ("tokenizer", "tokenizer", {}),
    ("pretrain", "pretrain", {"tokenizer": "{tokenizer}"}),
    ("sft", "sft", {"parent": "{pretrain}"}),
    ("reward", "reward", {"parent": "{sft}"}),
    ("dpo", "dpo", {"parent": "{sft}"}),
    ("ppo", "ppo", {"parent": "{sft}", "reward": "{reward}"}),
    ("grpo", "grpo", {"parent": "{sft}", "reward": "{reward}"}),
)
OPTIONAL = ("grpo",)
WHAT = {  # what each step is for, in one sentence (Home shows these)
    "tokenizer": "Learns how to cut text into tokens: the vocabulary every model of the lifecycle reads and writes.",
    "pretrain": "Learns the world from raw text by predicting the next token: the base model, which continues text.",
    "sft": "Fine-tunes the base on chats so that it answers questions: the instruct model.",
    "reward": "Learns to score answers from ranked pairs: the proxy of human preference that PPO and GRPO maximise.",
    "dpo": "Aligns the instruct model on the ranked pairs directly, with no reward model.",
    "ppo": "Aligns the instruct model by sampling answers and maximising the reward model's score, kept near the reference by a KL penalty.",
    "grpo": "Aligns with groups of sampled answers per prompt, each scored against its group's mean: no value head.",
}
# Each scale's fields per step, over the stages' own defaults. Nano fits a 2-core CPU in a few minutes: small
# models, few steps, no samples or KL probes during training (the evaluations at the end measure it).
SCALES = {
    "nano": {
        "pretrain": {"preset": "nano", "max_steps": 300, "sample_every": 0, "eval_every": 0},
        "sft": {"max_steps": 60, "sample_every": 0, "kl_every": 0},
        "reward": {"max_steps": 30},
        "dpo": {"max_steps": 20, "sample_every": 0, "kl_every": 0},
        "ppo": {"max_steps": 6, "batch_size": 8, "mini_batch_size": 4, "ppo_epochs": 2, "sample_every": 0, "response_length": 32},
        "grpo": {"max_steps": 6, "batch_size": 8, "sample_every": 0, "max_completion_length": 32},
    },
    # Each stage's defaults, cut where its curves are flat on the toy world (bench/RESULTS.md, "The one-click
    # lifecycle"): pretraining in batches of 8 with three quarters of the tokens, fewer reward, DPO and PPO steps.
    "default": {
        "pretrain": {"batch_size": 8, "max_steps": 660, "learning_rate": 2e-3},
        "reward": {"max_steps": 80, "learning_rate": 3e-4},
        "dpo": {"max_steps": 60, "kl_every": 20, "sample_every": 30},
        "ppo": {"max_steps": 30},
    },
}
# Seconds per step alone on the reference machine (2 CPU cores, bench/lifecycle.py; bench/RESULTS.md, 2026-12-02): what
# the ETA assumes for a step until this store has finished a lifecycle of that scale, whose own times it then uses.
# The tokenizer's includes the fork server's start (the other steps start from it in under a second).
REFERENCE_SECONDS = {
    "nano": {"tokenizer": 12, "pretrain": 52, "sft": 8, "reward": 18, "dpo": 16, "ppo": 3, "grpo": 20, "evals": 26},
    "default": {"tokenizer": 12, "pretrain": 238, "sft": 43, "reward": 175, "dpo": 78, "ppo": 131, "grpo": 120, "evals": 67},
}


@dataclass
class Config(RunArgs):
    scale: str = option("default", "nano: a lifecycle in a few minutes (tests, demos); default: the CPU default models, trained for what the toy world needs", choices=tuple(SCALES), order=MODEL)
    with_stages: str = option("", "optional steps to add, comma-separated: grpo", order=MODEL)
    data: str = option("world", "the toy world ('world', or 'world:SEED' for another seed): its data, evals and gold judge", order=DATA)
    seed: int = option(0, "random seed of every step", advanced=True, order=RUN, within="[0, 4294967295]")
    device: str = option("auto", "auto (cuda > mps > cpu), cpu, cuda, mps: for every step", advanced=True, order=RUN)
    threads: int = option(0, "CPU threads for torch in every step (0: torch's default)", advanced=True, order=RUN, within="[0, 1024]")


def check(config: Config) -> None:
    from lab import models
    from lab.stages import world_of

    steps(config)
    models.pick_device(config.device)  # every step would refuse it: say so before the first one starts
    if world_of(config.data) is None:
        raise UserError(f"data '{config.data}': the lifecycle runs on the toy world ('world' or 'world:SEED'), whose gold judge "
                        "measures it; train your own data stage by stage (`llm-lab train STAGE --data FILE`)")


def steps(config: Config) -> list[tuple[str, str, dict]]:
    """The plan for a config: (step, stage, config fields), in order."""
    extra = [s.strip() for s in config.with_stages.split(",") if s.strip()]
    unknown = [s for s in extra if s not in OPTIONAL]
    if unknown:
        raise UserError(f"unknown optional step {', '.join(repr(u) for u in unknown)} ({flag('with')}, with_stages): the optional steps are {', '.join(OPTIONAL)}")
    # no end-of-run evals in the steps: the evals step measures every model once, with more (evals.evaluate)
    shared = {"seed": config.seed, "device": config.device, "threads": config.threads, "data": config.data, "world_evals": False}
    out = []
    for step, stage, links in PLAN:
        if step in OPTIONAL and step not in extra:
            continue
        out.append((step, stage, {**shared, **SCALES[config.scale].get(step, {}), **links}))
    return out


def run(config: Config, run) -> dict:
    plan = steps(config)
    jobs.start_from_fork_server()  # the steps' jobs start in a fraction of a second, not after their imports
    made: dict[str, str] = {}
    for step, stage, values in plan:
        child = pipeline.reusable(run, step, "lifecycle")
        if child is None:
            fields = {k: v.format(**made) if isinstance(v, str) else v for k, v in values.items()}
            config = pipeline.config_of(stage, fields, source=f"the lifecycle's {step} step")
            base = run.info.get("name") if run.info.get("name") not in (None, run.id) else "lifecycle"
            child = pipeline.submit(run, step, stage, config, name=f"{base} {step}", label="lifecycle")
        made[step] = child.id
        status = pipeline.follow(run, step, child, "lifecycle")
        if status == "stopped":  # asked of this run, or of the step's own run: this run ends stopped too
            jobs.request_stop()
            return {"stopped_at": step}
        if status != "completed":
            raise UserError(f"the {step} step failed: {child.info.get('error') or 'see its log.txt'} (run {child.id}); "
                            f"fix what it says, then carry on ({hint(cli=f'llm-lab quickstart --continue {run.id}', page='Continue on Home')})")
    jobs.stop_fork_server()  # the evaluations run here: the server's memory is better spent on them
    pipeline.set_step(run, "evals", status="queued")
    from lab import evals

    try:
        with jobs.slot(run):  # the evaluations run models in this process: they take a job slot like any training
            run.update(holds_slot=True)  # so the queue counts it
            pipeline.set_step(run, "evals", status="running", started=time.time())
            card = evals.lifecycle_report(run, on_model=lambda step: _evaluating(run, step))
    except jobs.StopRequested:
        pipeline.set_step(run, "evals", status="stopped", ended=time.time())
        raise
    finally:
        run.update(holds_slot=False)
    pipeline.set_step(run, "evals", status="completed", ended=time.time())
    return card["summary"]


def _evaluating(run, step: str) -> None:
    if jobs.stop_requested():  # between two models: what was measured stays in their eval.json
        raise jobs.StopRequested()
    pipeline.set_step(run, "evals", evaluating=step)


def resume(run, owner: str | None = None):
    """`--continue`: queue this lifecycle again; it reuses every step that completed and starts the others."""
    pipeline.requeue(run, owner, "lifecycle", hint(cli="llm-lab quickstart", page="Run the whole lifecycle on Home"))
    return run


def progress(run) -> dict:
    """Where a lifecycle stands: each step's run, status and seconds, the step that runs with its own progress
    (step of total), elapsed, and an ETA for the rest from this store's last finished lifecycle of the same
    scale (else the reference machine's times)."""
    config = run.config
    plan = [s for s, *_ in steps(configs.from_dict(Config, config, source=f"run {run.id}"))] + ["evals"]
    done, now = pipeline.steps(run), time.time()
    expected = expected_seconds(config.get("scale", "default"))
    rows, eta, current = [], 0.0, None
    active = run.status in runs.ACTIVE
    for step in plan:
        info = done.get(step, {})
        status = info.get("status") or ("waiting" if active else "not started")
        row = {"step": step, "run": info.get("run"), "status": status, "seconds": pipeline.step_seconds(info, now), "of": None}
        if status in runs.ACTIVE and active:
            current = current or step
            if info.get("run") and status == "running":
                try:
                    child = runs.Run.open(info["run"])
                    p = runs.progress(child.info, child.status, child.metrics()[0])
                    row["of"] = (p["step"], p["max_steps"]) if p["max_steps"] else None
                    row["seconds"] = runs.seconds(child.info, now)
                    eta += p["eta"] if p["eta"] is not None else max(0.0, expected[step] - (row["seconds"] or 0))
                except LookupError:
                    pass
            elif step == "evals":
                eta += max(0.0, expected[step] - (row["seconds"] or 0))
            else:
                eta += expected[step]
        elif status in ("waiting", "not started") and active:
            eta += expected[step]
        rows.append(row)
    return {"id": run.id, "status": run.status, "scale": config.get("scale"), "steps": rows, "current": current,
            "elapsed": runs.seconds(run.info, now),
            "eta": eta if active else None, "error": run.info.get("error")}


def expected_seconds(scale: str) -> dict[str, float]:
    """Seconds per step of a lifecycle of `scale` on this machine, each with its share of the jobs' start-up
    (key "total": all of it, GRPO aside): the latest one this store completed, where there is one, else the
    reference machine's."""
    out = dict(REFERENCE_SECONDS.get(scale, REFERENCE_SECONDS["default"]))
    out["total"] = sum(v for k, v in out.items() if k not in OPTIONAL)
    info = last_completed(scale)
    if info:
        for step, s in (info.get("steps") or {}).items():
            if s.get("ended") and pipeline.step_seconds(s):
                out[step] = pipeline.step_seconds(s)
        out["total"] = runs.seconds(info)
    return out


def last_completed(scale: str) -> dict | None:
    """run.json of the newest lifecycle of `scale` this store completed."""
    for r in reversed(runs.list_runs()):  # ids start with their time: newest first
        info = r.info
        if info.get("stage") == "lifecycle" and info.get("status") == "completed" and info["config"].get("scale") == scale:
            return info
    return None
