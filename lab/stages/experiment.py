"""An experiment as one run: the runs it trains (lab.experiments: a module per experiment), then its
measurements, written into its folder as result.json (`name`, `question`, `measured`: every number the plot
shows, `conclusion`) and plot.html (self-contained: it opens with no network).

    llm-lab experiment kl-zero --scale nano     # follows it here; the last line printed is its run id
    llm-lab experiment dpo-vs-ppo --seeds 3     # three seeds per compared run, and their spread
    llm-lab experiment --continue RUN           # carry on a stopped experiment, reusing its finished runs
    llm-lab train experiment --experiment kl-zero --detach   # a background job (what the Experiments page starts)

Its runs are its children (run.json `steps`), each a normal job of the store. A run that the same config made
before, for another experiment or a lifecycle, is reused rather than trained again: the same seed makes the
same model. Like the lifecycle it holds no job slot while its children train, and takes one to measure.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from lab import configs, experiments, jobs, pipeline, runs
from lab.configs import MODEL, RUN, option
from lab.errors import UserError, hint
from lab.stages import Stage
from lab.stages.base import RunArgs

STAGE = Stage(label="Experiment", page="Experiments", data="", produces="report", lineage=(), slot=False, curves=())

# Seconds of each experiment alone on the reference machine (2 CPU cores, an empty store: its base trained too;
# bench/RESULTS.md, "Experiments"): the expected time until this store has finished one, whose time it then uses.
REFERENCE_SECONDS = {
    "nano": {"skip-pretraining": 45, "kl-zero": 60, "hallucination": 45, "dpo-vs-ppo": 85, "preference-budget": 95, "sft-data-quality": 50, "tokenizers": 50,
             "objectives": 75, "ai-vs-human-feedback": 105},
    "default": {"skip-pretraining": 190, "kl-zero": 350, "hallucination": 170, "dpo-vs-ppo": 470, "preference-budget": 980, "sft-data-quality": 180,
                "tokenizers": 350, "objectives": 305, "ai-vs-human-feedback": 900},
}


@dataclass
class Config(RunArgs):
    experiment: str = option("kl-zero", "which experiment (`llm-lab experiment --list`)", choices=experiments.names(), order=MODEL)
    scale: str = option("default", "nano: minutes on 2 CPU cores (tests, demos); default: the lifecycle's default models and steps", choices=("nano", "default"), order=MODEL)
    seeds: int = option(0, "seeds per compared run (0: the experiment's own number); more seeds, a spread to judge differences by", order=MODEL, within="[0, 10]")
    seed: int = option(0, "the first seed; seeds go up from it", advanced=True, order=RUN, within="[0, 4294967295]")
    device: str = option("auto", "auto (cuda > mps > cpu), cpu, cuda, mps: for every run", advanced=True, order=RUN)
    threads: int = option(0, "CPU threads for torch in every run (0: torch's default)", advanced=True, order=RUN, within="[0, 1024]")


def check(config: Config) -> None:
    from lab import demo, models

    experiments.get(config.experiment)
    models.pick_device(config.device)
    if demo.on() and (config.scale != "nano" or config.seeds > 3):
        raise UserError(f"this demo runs experiments at nano scale with up to 3 seeds (asked: {config.scale}, seeds {config.seeds or 'default'}); {demo.LIFT}")


def plan(config: Config) -> list[tuple[str, str, dict]]:
    module = experiments.get(config.experiment)
    base = experiments.base_steps(config.scale, config.seed, config.device, config.threads)
    seeds = [config.seed + i for i in range(config.seeds or module.SEEDS)]
    return module.plan(base, seeds, config.scale)


def run(config: Config, run) -> dict:
    module = experiments.get(config.experiment)
    jobs.start_from_fork_server()
    made: dict[str, str] = {}
    files = write_data(module, config)
    for step, stage, values in plan(config):
        if stage == experiments.DATA:
            files.update(data_from_runs(module, config, run, step, made))
            continue
        fields = {k: v.format(**made, **files) if isinstance(v, str) else v for k, v in values.items()}
        child = pipeline.reusable(run, step, "experiment")
        if child is None:
            child_config = pipeline.config_of(stage, fields, source=f"the experiment's {step} run")
            child = pipeline.same_run(stage, child_config)
            if child is not None:
                print(f"[experiment] {step}: run {child.id}, made before with the same config", flush=True)
                info = child.info
                pipeline.set_step(run, step, run=child.id, stage=stage, status="completed", started=info.get("started"), ended=info.get("ended"),
                                  seconds=runs.seconds(info), shared=True)
            else:
                child = pipeline.submit(run, step, stage, child_config, name=f"{config.experiment} {step}", label="experiment")
        made[step] = child.id
        status = pipeline.follow(run, step, child, "experiment")
        if status == "stopped":
            jobs.request_stop()
            return {"stopped_at": step}
        if status != "completed":
            raise UserError(f"the {step} run failed: {child.info.get('error') or 'see its log.txt'} (run {child.id}); "
                            f"fix what it says, then carry on ({hint(cli=f'llm-lab experiment --continue {run.id}', page='Continue on the Experiments page')})")
    jobs.stop_fork_server()
    from lab.models import pick_device

    measured = in_a_slot(run, "measure", lambda: module.measure({**made, **files}, pick_device(config.device)))
    result = {"name": config.experiment, "question": module.QUESTION, "scale": config.scale, "seeds": config.seeds or module.SEEDS,
              "runs": made, "measured": measured, "conclusion": module.conclude(measured), "time": time.time()}
    runs.atomic_write_text(run.path / "result.json", json.dumps(result, indent=2, default=float) + "\n")
    runs.atomic_write_text(run.path / "plot.html", module.figure(measured).to_html(include_plotlyjs=True, full_html=True))
    pipeline.set_step(run, "measure", status="completed", ended=time.time())
    print(result["conclusion"], flush=True)
    return {"conclusion": result["conclusion"]}


def in_a_slot(run, step: str, work):
    """Do an experiment's own `work` (it runs models in this process) under a job slot, like any training, with
    the step's status in run.json; it ends stopped or failed with the run (a continue does it again)."""
    pipeline.set_step(run, step, status="queued")
    try:
        with jobs.slot(run):
            run.update(holds_slot=True)
            pipeline.set_step(run, step, status="running", started=time.time())
            return work()
    except BaseException as e:
        pipeline.set_step(run, step, status="stopped" if isinstance(e, jobs.StopRequested) else "failed", ended=time.time())
        raise
    finally:
        run.update(holds_slot=False)


def data_from_runs(module, config: Config, run, step: str, made: dict[str, str]) -> dict[str, str]:
    """A plan's data step: files computed from the runs made so far (the module's `data_from_runs`), such as
    labels a model wrote, written as `write_data` writes its files. A continue reuses them once written."""
    from lab.models import pick_device

    done = pipeline.steps(run).get(step, {})
    if done.get("status") == "completed" and done.get("files") and all(Path(p).is_file() for p in done["files"].values()):
        return done["files"]
    records = in_a_slot(run, step, lambda: module.data_from_runs(made, config.scale, pick_device(config.device)))
    files = write_files(config, records)
    pipeline.set_step(run, step, status="completed", ended=time.time(), files=files)
    return files


def write_data(module, config: Config) -> dict[str, str]:
    """The data files an experiment trains on (its `data(world, scale)`: name -> records), as jsonl among the
    store's uploads, where a public demo lets a run read them; named by their content, so the same data makes
    the same config and its runs are shared."""
    if not hasattr(module, "data"):
        return {}
    from lab.stages import world_of

    return write_files(config, module.data(world_of("world"), config.scale))


def write_files(config: Config, files: dict[str, list[dict]]) -> dict[str, str]:
    """Records as jsonl files (name -> path), each named by the experiment and its content."""
    import hashlib

    folder = runs.root() / "uploads" / "experiments"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, records in files.items():
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        path = folder / f"{config.experiment}-{name.replace(' ', '-')}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.jsonl"
        if not path.is_file():
            runs.atomic_write_text(path, text)
        out[name] = str(path)
    return out


def result(run) -> dict | None:
    """An experiment run's result.json, or None before it has one."""
    path = run.path / "result.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def resume(run, owner: str | None = None):
    """`--continue`: queue this experiment again; it reuses every run that completed and starts the others."""
    pipeline.requeue(run, owner, "experiment", hint(cli="llm-lab experiment NAME", page="Run on the Experiments page"))
    return run


def progress(run) -> dict:
    """Where an experiment stands: each of its runs with its status, the one that trains with its step of total,
    the measurement, elapsed seconds."""
    config = run.config
    names = [s for s, *_ in plan(configs.from_dict(Config, config, source=f"run {run.id}"))] + ["measure"]
    done, now = pipeline.steps(run), time.time()
    rows = []
    for step in names:
        info = done.get(step, {})
        row = {"step": step, "run": info.get("run"), "status": info.get("status") or "waiting", "shared": bool(info.get("shared")), "of": None,
               "seconds": pipeline.step_seconds(info, now)}
        if row["status"] == "running" and info.get("run"):
            try:
                child = runs.Run.open(info["run"])
                p = runs.progress(child.info, child.status, child.metrics()[0])
                row["of"] = (p["step"], p["max_steps"]) if p["max_steps"] else None
                row["seconds"] = runs.seconds(child.info, now)
            except LookupError:
                pass
        rows.append(row)
    return {"id": run.id, "experiment": config.get("experiment"), "scale": config.get("scale"), "status": run.status, "steps": rows,
            "elapsed": runs.seconds(run.info, now), "error": run.info.get("error"),
            "expected": expected_seconds(config.get("experiment"), config.get("scale", "default"))}


def expected_seconds(name: str, scale: str) -> float:
    """Seconds an experiment takes here: the newest one of that name and scale this store completed, else the
    reference machine's (which includes training its base)."""
    for r in reversed(runs.list_runs()):
        info = r.info
        if info.get("stage") == "experiment" and info.get("status") == "completed" and info["config"].get("experiment") == name \
                and info["config"].get("scale") == scale and info.get("ended") and runs.seconds(info):
            return runs.seconds(info)
    return REFERENCE_SECONDS.get(scale, REFERENCE_SECONDS["default"]).get(name, 600)
