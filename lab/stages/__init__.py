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


def prepare(config, run) -> str:
    """Threads, seed and device for a training stage; records the device in run.json."""
    import torch
    from transformers import set_seed

    from lab import models

    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    device = models.pick_device(config.device)
    run.update(device=models.describe_device(device))
    return device


def trainer_arguments(config, device: str, output_dir) -> dict:
    """The keyword arguments every stage passes to its TrainingArguments / TRL config, so that the
    lab's policy holds everywhere: the lab saves once, atomically, at the end (no Trainer checkpoints);
    NaN losses reach the callback instead of being averaged away; bf16 only where the GPU has it (TRL
    configs default to bf16); no activation checkpointing (TRL's default trades speed for memory the
    lab's defaults never need); tokens counted for tokens/s."""
    from lab import models

    return dict(
        output_dir=str(output_dir),
        max_steps=config.max_steps if config.max_steps > 0 else -1,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_scheduler,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=config.seed,
        use_cpu=device == "cpu",
        bf16=models.use_bf16(device),
        activation_checkpointing=False,
        include_num_input_tokens_seen="all",
        dataloader_pin_memory=device.startswith("cuda"),
    )
