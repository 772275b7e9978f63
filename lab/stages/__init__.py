"""The lifecycle's stages. Each module exposes a `Config` dataclass (the single source of the CLI
flags, the UI form and run.json), `run(config, run) -> final metrics`, and `parent_of(config)`, the run
it builds on."""

from __future__ import annotations

import importlib
import random

STAGES = ("tokenizer", "pretrain", "sft")


def get(stage: str):
    if stage not in STAGES:
        raise ValueError(f"unknown stage '{stage}': choose one of {', '.join(STAGES)}")
    return importlib.import_module(f"lab.stages.{stage}")


def world_of(source: str):
    """The toy world a data source names ("world", or "world:SEED"), or None for user data."""
    if source != "world" and not source.startswith("world:"):
        return None
    from lab.world import WorldConfig, build_world

    seed = source.partition(":")[2]
    if seed and not seed.isdigit():
        raise ValueError(f"data '{source}': the toy world takes an integer seed, e.g. world:1")
    return build_world(WorldConfig(seed=int(seed or 0)))


def text_splits(source: str, heldout_fraction: float = 0.05, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, held-out) documents from the toy world ("world", or "world:SEED") or from any file
    `lab.data` reads; user data of any format is flattened to text and split at random."""
    world = world_of(source)
    if world is not None:
        corpus = world.pretrain_corpus()
        return corpus["train"], corpus["heldout"]
    from lab import data

    texts = data.to_text(data.load(source))
    rng = random.Random(seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    n_heldout = max(1, int(len(texts) * heldout_fraction)) if len(texts) > 1 else 0
    heldout = [texts[i] for i in sorted(order[:n_heldout])]
    train = [texts[i] for i in sorted(order[n_heldout:])]
    return train, heldout


def parent_run_id(ref: str) -> str | None:
    """The run id behind a model or tokenizer reference, if it is a run (for lineage)."""
    if not ref:
        return None
    from lab.runs import Run

    try:
        return Run.open(ref).id
    except LookupError:
        return None
