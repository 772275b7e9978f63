"""What the training stages share: the config fields every trainer has (as TRL's base config and its
LoRA arguments), and the start and the end of a stage's `run`: threads, seed and device; the keyword
arguments of a TrainingArguments; the LoRA config; training to its end (divergence, final metrics,
evaluations, the scratch folder); the saved model with its model card.

A stage's config extends these dataclasses and overrides their defaults with `configs.inherit`:

    @dataclass
    class Config(LoraArgs, TrainerArgs):
        parent: str = option("", "the SFT model", order=MODEL, runs=("sft",))
        max_steps: int = inherit(TrainerArgs, "max_steps", 100)
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from lab import distributed, jobs, models
from lab.configs import DATA, LORA, MODEL, RUN, SCALE, SCHEDULE, TRAINING, option
from lab.errors import UserError, flag

MODES = ("full", "lora", "lora-8bit", "lora-4bit")
SCHEDULES = ("cosine", "linear", "constant_with_warmup")


@dataclass
class RunArgs:
    name: str = option("", "a name for the run (default: its id)", advanced=True, order=RUN)


@dataclass
class DataArgs:
    """The stages that read a user's data file: its columns, when they are not names the lab knows."""

    columns: str = option("", "your file's columns, if the lab does not know their names: LAB_NAME=YOUR_COLUMN, comma-separated, "
                              "e.g. prompt=question,completion=answer or messages=dialog,role=speaker,content=text", order=DATA + 1)


@dataclass
class TrainArgs(RunArgs):
    """Every training stage: how long, how big a step, how fast, and where."""

    max_steps: int = option(100, "optimizer steps (0: train for `epochs` instead)", order=TRAINING, within="[0, 10000000]")
    batch_size: int = option(16, "examples per step (per device)", order=TRAINING, within="[1, 65536]")
    learning_rate: float = option(1e-4, "peak learning rate", order=TRAINING, within="(0, 1]")
    logging_steps: int = option(10, "log metrics every N steps", advanced=True, order=SCHEDULE, within="[1, 1000000]")
    max_minutes: float = option(0.0, "stop (and save) after this many minutes of training (0: no limit)", advanced=True, order=RUN, within="[0, 1000000]")
    seed: int = option(0, "random seed", advanced=True, order=RUN, within="[0, 4294967295]")
    device: str = option("auto", "auto (cuda > mps > cpu), cpu, cuda, mps", advanced=True, order=RUN)
    threads: int = option(0, "CPU threads for torch (0: torch's default, shared among the LAB_MAX_JOBS jobs that may run at once)", advanced=True, order=RUN, within="[0, 1024]")
    save_steps: int = option(50, "save a resumable checkpoint every N steps (0: none); a stop saves one too, and Resume goes on from the last", advanced=True, order=SCHEDULE, within="[0, 10000000]")
    save_total_limit: int = option(1, "resumable checkpoints kept (the newest); all go when the run completes", advanced=True, order=SCHEDULE, within="[1, 1000]")
    # The lifecycle turns them off: it evaluates every model once, afterwards, with more (`llm-lab eval`).
    world_evals: bool = option(True, "on the toy world, end with its evaluations (eval/ keys: fact QA, refusals, win rate, ...)", advanced=True, order=RUN)
    # Several processes (lab.distributed): `batch_size` is per process, so a step takes nproc times the examples.
    nproc: int = option(1, "processes to train with, through accelerate launch (DDP; one per GPU, or CPU processes); each takes a job slot", advanced=True, order=SCALE, within="[1, 1024]")
    accelerate_config: str = option("", "an accelerate config file (`accelerate config` writes one) for FSDP or DeepSpeed; empty: DDP", advanced=True, order=SCALE)
    num_machines: int = option(1, "machines training this run; the others run the same command with --machine-rank R", advanced=True, order=SCALE, within="[1, 1024]")
    main_process_ip: str = option("", "several machines: the address of machine rank 0", advanced=True, order=SCALE)
    main_process_port: int = option(0, "several machines: a port machine rank 0 listens on (0: a free one, on one machine)", advanced=True, order=SCALE, within="[0, 65535]")


@dataclass
class TrainerArgs(TrainArgs):
    """The stages built on transformers' Trainer (and TRL's trainers on top of it)."""

    epochs: float = option(1.0, "passes over the data when max_steps is 0", advanced=True, order=SCHEDULE, within="[0, 10000]")
    warmup_steps: int = option(10, "linear warm-up steps", advanced=True, order=SCHEDULE, within="[0, 10000000]")
    lr_scheduler: str = option("cosine", "learning-rate schedule after warm-up", choices=SCHEDULES, advanced=True, order=SCHEDULE)
    weight_decay: float = option(0.0, "AdamW weight decay", advanced=True, order=SCHEDULE, within="[0, 10]")
    precision: str = option("auto", "bf16 autocast or fp32; auto: bf16 on GPUs that have it, and on CPUs with AMX or AVX512-BF16 for models of 10M parameters or more",
                            choices=("auto", "bf16", "fp32"), advanced=True, order=RUN)


@dataclass
class LoraArgs:
    """Full fine-tuning, or LoRA adapters on a full, 8-bit or 4-bit base (`models.QUANTIZED`)."""

    mode: str = option("full", "full fine-tuning, or a LoRA adapter on a full, 8-bit or 4-bit base", choices=MODES, order=MODEL + 5)  # after what it trains
    lora_r: int = option(16, "LoRA rank", advanced=True, order=LORA, within="[1, 4096]")
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / r)", advanced=True, order=LORA, within="[1, 65536]")
    lora_dropout: float = option(0.0, "LoRA dropout", advanced=True, order=LORA, within="[0, 1)")
    lora_targets: str = option("all-linear", "modules that get adapters: all-linear, or comma-separated names (q_proj,v_proj)", advanced=True, order=LORA)


def check_training(config) -> None:
    """What every Trainer stage refuses before a run exists, beyond each field's bounds: nothing to train, a
    device that is not there, a quantized mode without bitsandbytes."""
    if config.max_steps <= 0 and getattr(config, "epochs", 0) <= 0:
        raise UserError(f"nothing to train: set {flag('max_steps')} or {flag('epochs')} above 0")
    device = models.pick_device(config.device)
    if getattr(config, "mode", "full") in models.QUANTIZED:
        models.require_bitsandbytes(config.mode, device)


def prepare(config, run) -> str:
    """Threads, seed and device for a training stage; records the device in run.json."""
    import random

    import numpy
    import torch

    torch.set_num_threads(config.threads or jobs.thread_share())
    # what transformers' set_seed does (torch.manual_seed seeds every device), without importing its Trainer's
    # utilities, which import peft and bitsandbytes: 150 MiB in a PPO job that uses neither
    random.seed(config.seed)
    numpy.random.seed(config.seed)
    torch.manual_seed(config.seed)
    device = models.pick_device(config.device)
    if device == "cuda" and distributed.active():  # one GPU per rank, as accelerate set it
        device = f"cuda:{torch.cuda.current_device()}"
    run.update(device=models.describe_device(device))
    return device


def trainer_arguments(config, device: str, output_dir, model=None) -> dict:
    """The keyword arguments every stage passes to its TrainingArguments / TRL config, so that the
    lab's policy holds everywhere: the model is saved once, atomically, at the end, and the Trainer's
    checkpoints (every `save_steps`, whole once `telemetry.Checkpoints` marks them) are only for resuming;
    NaN losses reach the callback instead of being averaged away; bf16 only where the GPU has it (TRL
    configs default to bf16); no activation checkpointing (TRL's default trades speed for memory the
    lab's defaults never need); tokens counted for tokens/s. `model`: what it trains, whose size decides bf16 on
    a CPU (models.use_bf16)."""
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
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=None,  # telemetry.Checkpoints keeps the newest, once the new one is whole
        report_to="none",
        disable_tqdm=True,
        seed=config.seed,
        use_cpu=device == "cpu",
        bf16=models.use_bf16(device, getattr(config, "precision", "auto"), models.count_parameters(model) if model is not None else 0),
        activation_checkpointing=False,
        include_num_input_tokens_seen="all",
        dataloader_pin_memory=device.startswith("cuda"),
    )


# Batches of preference pairs of about the same length (the Trainer's length-grouped sampler: shuffled groups of
# 50 batches, sorted within), for the DPO trainer (not the reward model: stages/reward.py). A batch pads every chosen and rejected answer to
# its longest, and the toy world's rambling answers are 5-8 times as long as the rest: drawn at random, nearly
# every batch of 16 holds one and pads to it (bench/RESULTS.md). The length column must reach the sampler.
BY_LENGTH = {"train_sampling_strategy": "group_by_length", "remove_unused_columns": False}


def pairs_dataset(pairs: list[dict]):
    """Preference pairs (prompt, chosen, rejected) as the DPO trainer takes them, each with its length (the
    prompt's characters and its longer answer's) for BY_LENGTH."""
    from datasets import Dataset

    def size(value) -> int:
        return len(value if isinstance(value, str) else json.dumps(value))

    return Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"],
                               "length": size(p["prompt"]) + max(size(p["chosen"]), size(p["rejected"]))} for p in pairs])


def lora_config(config, task_type: str, **extra):
    """The PEFT LoraConfig of a config's LoRA fields, or None in full mode."""
    if config.mode == "full":
        return None
    from peft import LoraConfig

    targets = config.lora_targets if config.lora_targets == "all-linear" else [t.strip() for t in config.lora_targets.split(",") if t.strip()]
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules=targets, task_type=task_type, **extra)


def for_kbit_training(model, mode: str):
    """An 8-bit or 4-bit base made ready for LoRA training (norms in fp32, input grads on); others as they are."""
    if mode not in models.QUANTIZED:
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def fit(trainer, callback, run, evaluate=None) -> dict:
    """`trainer.train()` and the end every Trainer stage shares: from the run's last checkpoint when it has one
    (a resumed run: the same step numbering, optimizer, schedule, data order and random state); a diverged run
    fails (and saves nothing); the final metrics (train loss, steps, trainable parameters, runtime);
    `evaluate(model) -> metrics`, unless a stop was asked for (a stopped run saves at once, before its grace runs
    out), its `eval/` keys also logged as a row of metrics. The checkpoints stay until `save_model` has saved the
    model of a run trained to its end."""
    from lab import telemetry

    trainer.add_callback(telemetry.Checkpoints(run, run.config.get("save_total_limit", 1)))
    last = run.last_checkpoint()
    if last:
        print(f"resuming from the checkpoint of step {last[0]}", flush=True)
    n_trainable = models.count_parameters(trainer.model, trainable=True)
    try:
        output = trainer.train(resume_from_checkpoint=str(last[1]) if last else None)
        final = {"train_loss": output.training_loss, "train_runtime": output.metrics.get("train_runtime")}
    except jobs.StopRequested:  # online RL stopped mid-rollout (telemetry.stoppable_generation)
        print(f"stop requested: rollout abandoned at step {trainer.state.global_step}; saving the policy of that step", flush=True)
        final = {}
    callback.raise_if_diverged()
    final.update(steps=trainer.state.global_step, trainable_parameters=n_trainable)
    # every rank: an evaluation may be a collective (the Trainer's held-out loss), where all ranks take part
    if evaluate is not None and not jobs.stop_requested():
        evaluated = evaluate(trainer.model)
        callback.raise_if_diverged()
        final.update(evaluated)
        logged = {k: v for k, v in evaluated.items() if k.startswith("eval/")}
        if logged:
            run.log_metrics({"step": trainer.state.global_step, **logged})
    return final


def save_model(model, tokenizer, run, config, what: str, final: dict, parent_path: str | None = None) -> None:
    """Save a trained model where plain transformers / PEFT load it: `adapter/` for a LoRA model (its config
    naming the base by absolute path, so it loads from anywhere), else `model/`; with the tokenizer, for a
    model that writes text a generation config that stops at the end of the assistant's turn (and keeps the
    stops the parent named: a hub model may have several), and a model card naming the lineage. Once it is
    saved, the checkpoints of a run that trained to its end go; a kill before then leaves them to resume from."""
    from lab.runs import atomic_dir
    from lab.tokenizers import stop_ids

    full = distributed.full_state_dict(model)  # FSDP: every rank takes part in gathering the weights
    if not run.writes:  # a rank other than 0 of a multi-process job
        return
    # a model that is not a PeftModel was made without importing peft, and importing it here (150 MiB, with
    # bitsandbytes) would put a full PPO job's peak memory at its save
    lora = "peft" in sys.modules and isinstance(model, sys.modules["peft"].PeftModel)
    inner = model.get_base_model() if lora else model
    if inner.can_generate():
        inner.generation_config.eos_token_id = stop_ids(tokenizer, inner.generation_config.eos_token_id)
        if inner.generation_config.pad_token_id is None:
            inner.generation_config.pad_token_id = tokenizer.pad_token_id
    folder = "adapter" if lora else "model"
    with atomic_dir(run.path / folder) as tmp:
        model.save_pretrained(tmp, **({"state_dict": full} if full is not None else {}))
        tokenizer.save_pretrained(tmp)
        if lora:
            cfg = json.loads((tmp / "adapter_config.json").read_text())
            cfg["base_model_name_or_path"] = str(Path(parent_path).resolve()) if Path(parent_path).exists() else parent_path
            (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
        (tmp / "README.md").write_text(model_card(model, run, config, what, final, parent_path, lora), encoding="utf-8")
    print(f"saved {folder}/ " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in final.items()), flush=True)
    if not jobs.stop_requested():  # trained to its end and saved: nothing is left to resume (a stopped run keeps them)
        shutil.rmtree(run.path / "trainer", ignore_errors=True)


def model_card(model, run, config, what: str, final: dict, parent_path: str | None, lora: bool) -> str:
    origin = f"trained from `{parent_path}`" if parent_path else "trained from scratch"
    mode = f" (mode `{config.mode}`)" if hasattr(config, "mode") else ""
    return (
        "---\nlibrary_name: " + ("peft" if lora else "transformers") + f"\ntags: [llm-lifecycle-lab, {run.stage}]\n"
        + (f"base_model: {parent_path}\n" if lora else "") + "---\n"
        f"# {run.info['name']}\n\n{what} from the LLM Lifecycle Lab, stage `{run.stage}`{mode}, {origin} on `{config.data}`.\n\n"
        f"- run: `{run.id}`\n- parent run: `{run.parent or 'none'}`\n"
        f"- parameters: {models.count_parameters(model):,} ({models.count_parameters(model, trainable=True):,} trainable)\n"
        + "".join(f"- {k}: {v:.4g}\n" for k, v in final.items() if k.startswith("eval") and isinstance(v, float))
        + f"\nConfig:\n\n```json\n{json.dumps(asdict(config), indent=2)}\n```\n"
    )
