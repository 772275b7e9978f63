"""One-click experiments: each measures one of the lifecycle's classic claims on the toy world, as a run of the
store whose children are the runs it trains (lab.stages.experiment starts and follows them, then measures).

    llm-lab experiment kl-zero --scale nano      # the last line it prints is the experiment's run id
    llm-lab experiment dpo-vs-ppo --seeds 3

An experiment is one module of this package, and it declares itself there:

    QUESTION = "..."                    # the claim, as the question the experiment answers
    RUNS = "..."                        # what it trains and measures, in one sentence
    SEEDS = 1                           # seeds per compared run when --seeds is not given
    def plan(base, seeds) -> steps      # its runs: (step, stage, config fields), "{step}" naming an earlier step's run
    def measure(made, device) -> dict   # every number its plot shows, from the runs it made (step -> run id;
                                        # and its data files, name -> path)
    def conclude(measured) -> str       # the conclusion, written from those numbers: it quotes them, and says
                                        # plainly when the expected effect is absent or within the seeds' spread
    def figure(measured)                # a plotly figure of them
    def data(world, scale) -> dict      # optional: files it trains on (name -> records); "{name}" in a plan's
                                        # fields is the file's path (lab.stages.experiment.write_data)
    def data_from_runs(made, scale, device) -> dict   # optional: files computed from runs it made, at the plan's
                                        # (step, "data", {}) entry, in the experiment's process under a job slot

REGISTRY lists the modules; adding an experiment is its module and one line there. The runs an experiment
shares with another (the base, the instruct model, the reward model) are the lifecycle's own steps at the same
scale, so one nano base serves every experiment, and a quickstart's runs serve them too (`pipeline.same_run`).
"""

from __future__ import annotations

import importlib
import math
import statistics

from lab.errors import UserError

# The stage of a plan entry whose files the experiment computes from the runs before it (`data_from_runs`).
DATA = "data"

REGISTRY = {
    "skip-pretraining": "lab.experiments.skip_pretraining",
    "kl-zero": "lab.experiments.kl_zero",
    "hallucination": "lab.experiments.hallucination",
    "dpo-vs-ppo": "lab.experiments.dpo_vs_ppo",
    "preference-budget": "lab.experiments.preference_budget",
    "sft-data-quality": "lab.experiments.sft_data_quality",
    "tokenizers": "lab.experiments.tokenizers",
    "objectives": "lab.experiments.objectives",
    "ai-vs-human-feedback": "lab.experiments.ai_vs_human_feedback",
}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str):
    if name not in REGISTRY:
        raise UserError(f"unknown experiment '{name}': choose one of {', '.join(REGISTRY)} (`llm-lab experiment --list` says what each answers)")
    return importlib.import_module(REGISTRY[name])


def catalogue() -> list[dict]:
    """Every experiment: its name, question, what it runs, its default seeds and expected seconds per scale here."""
    from lab.stages import experiment

    out = []
    for name in REGISTRY:
        module = get(name)
        out.append({"name": name, "question": module.QUESTION, "runs": module.RUNS, "seeds": module.SEEDS,
                    "expected_seconds": {scale: experiment.expected_seconds(name, scale) for scale in ("nano", "default")}})
    return out


def base_steps(scale: str, seed: int = 0, device: str = "auto", threads: int = 0) -> dict[str, tuple[str, dict]]:
    """The lifecycle's steps at `scale` (step -> (stage, config fields)): an experiment builds on these, and
    changes only what it measures, so its runs are the lifecycle's where they are the same run."""
    from lab.stages import lifecycle

    config = lifecycle.Config(scale=scale, with_stages="grpo", seed=seed, device=device, threads=threads)
    return {step: (stage, fields) for step, stage, fields in lifecycle.steps(config)}


def chain(base: dict, *steps: str) -> list[tuple[str, str, dict]]:
    """The named steps of `base_steps`, in its order, as plan entries."""
    return [(step, *base[step]) for step in base if step in steps]


def varied(base: dict, step: str, name: str, **fields) -> tuple[str, str, dict]:
    """A plan entry: the lifecycle's `step` with some fields changed, named `name`."""
    stage, values = base[step]
    return (name, stage, {**values, **fields})


def enough_steps(base: dict, step: str, pairs: int, epochs: int) -> dict:
    """`max_steps` for the lifecycle's `step` where its own steps would not pass over `pairs` examples `epochs`
    times, else nothing: with no field changed the run stays the lifecycle's own, which the store may hold."""
    from lab import stages

    stage, fields = base[step]
    batch = fields.get("batch_size") or stages.get(stage).Config().batch_size
    steps = math.ceil(epochs * pairs / batch)
    return {"max_steps": steps} if steps > fields["max_steps"] else {}


# ------------------------------------------------------------------------------------------------ numbers

def spread(values: list[float]) -> dict:
    """Mean, lowest, highest and standard deviation (0 for one value) of a list of numbers."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "min": None, "max": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def apart(a: dict, b: dict) -> bool:
    """Whether two spreads do not overlap: with one seed each, any difference counts (and the conclusion says
    there was one seed)."""
    return a["n"] and b["n"] and (a["min"] > b["max"] or b["min"] > a["max"])


def pct(v) -> str:
    return "–" if v is None else f"{v:.0%}"


def num(v, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def curve(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of a metric over a run's training, from its metrics.jsonl."""
    from lab.runs import Run

    return [(r["step"], r[key]) for r in Run.open(run_id).metrics()[0] if r.get(key) is not None and "step" in r]


def seconds(run_id: str) -> float | None:
    """How long a run trained (started to ended, with every segment before a resume), from its run.json."""
    from lab import runs
    from lab.runs import Run

    info = Run.open(run_id).info
    return runs.seconds(info) if info.get("ended") else None


# ------------------------------------------------------------------------------------------------ models

def world_of(run_id: str):
    """The toy world a run's model learnt (the experiments train on it only)."""
    from lab import stages
    from lab.runs import Run

    return stages.world_of_lineage(Run.open(run_id))


def answers(run_id: str, prompts: list, device: str, temperature: float = 0.7, seed: int = 0) -> list[str]:
    """A chat model's answers to `prompts`, sampled at `temperature` from `seed` (0: greedy), as the evaluations draw them."""
    from lab import evals, inference

    loaded = inference.load(run_id, "causal", device)
    return evals.chat(loaded.model, loaded.tokenizer, prompts, max_new_tokens=48, temperature=temperature, seed=seed)


def reward_scores(reward_id: str, prompts: list, replies: list[str], device: str) -> list[float]:
    """A reward model's score of each answer to its prompt."""
    from lab import evals, inference

    scorer = inference.load(reward_id, "reward", device)
    return evals.reward_scores(scorer.model, scorer.tokenizer, [evals._turns(p) + [{"role": "assistant", "content": a}] for p, a in zip(prompts, replies)])
