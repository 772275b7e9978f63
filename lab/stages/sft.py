"""Stage 2, supervised fine-tuning: a base model learns the assistant's format from chats, with TRL's
SFTTrainer and cross-entropy on the assistant's tokens only.

    llm-lab train sft --parent PRETRAIN_RUN                      # full fine-tuning on the toy world's chats
    llm-lab train sft --parent RUN --mode lora                   # LoRA adapter (all linear layers)
    llm-lab train sft --parent RUN --mode lora-8bit              # base loaded in 8-bit (bitsandbytes), LoRA on top
    llm-lab train sft --parent DIR|owner/name --data chats.jsonl # your model, your chats (messages, prompt/completion,
                                                                 # Alpaca, ShareGPT)

Saves `model/` (full) or `adapter/` (LoRA; its adapter_config names the parent model), with the chat
template. Logs TRL's metrics plus `kl`: KL(SFT model ‖ parent) per answer token on fixed chats, every
`kl_every` steps, so the drift from the base has a curve. On the toy world it ends with the chat evals:
how often the model answers in the chat format and stops, and how many fact questions it gets right,
split into facts SFT taught and facts only pretraining saw.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from dataclasses import dataclass

from lab import evals, models, telemetry
from lab.configs import option
from lab.errors import UserError
from lab.stages import check_parent, parent_run_id, prepare, sampler, save_policy, trainer_arguments, world_of

MODES = ("full", "lora", "lora-8bit", "lora-4bit")


@dataclass
class Config:
    parent: str = option("", "the base model: a pretrain run, a local model folder, or a hub id")
    mode: str = option("full", "full fine-tuning, or a LoRA adapter on a full, 8-bit or 4-bit base", choices=MODES)
    data: str = option("world", "chats: 'world' (the toy world's SFT chats) or a file/folder of messages or prompt/completion records")
    max_steps: int = option(150, "optimizer steps (0: train for `epochs` instead)")
    # 8: five passes over the toy world's 241 chats in 150 steps. At 16 (ten passes) the model drifted further
    # from its parent (KL 3.4-3.7 nats a token against 3.1-3.4) and answered 70-77% of pretraining-only facts,
    # at 8 77% on both pretrain seeds tried (bench/RESULTS.md).
    batch_size: int = option(8, "chats per step (per device)")
    learning_rate: float = option(0.0, "peak learning rate (0: 1e-4 for full fine-tuning, 1e-3 for LoRA, which trains far fewer weights)")
    assistant_only_loss: bool = option(True, "train on the assistant's tokens only (off: on the whole chat)")
    lora_r: int = option(16, "LoRA rank", advanced=True)
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / r)", advanced=True)
    lora_dropout: float = option(0.05, "LoRA dropout", advanced=True)
    lora_targets: str = option("all-linear", "modules that get adapters: all-linear, or comma-separated names (q_proj,v_proj)", advanced=True)
    packing: bool = option(False, "pack several chats into each sequence", advanced=True)
    max_length: int = option(256, "tokens per sequence (longer chats are truncated)", advanced=True)
    epochs: float = option(1.0, "passes over the data when max_steps is 0", advanced=True)
    warmup_steps: int = option(10, "linear warm-up steps", advanced=True)
    lr_scheduler: str = option("cosine", "learning-rate schedule after warm-up", choices=("cosine", "linear", "constant_with_warmup"), advanced=True)
    weight_decay: float = option(0.0, "AdamW weight decay", advanced=True)
    logging_steps: int = option(10, "log metrics every N steps", advanced=True)
    kl_every: int = option(25, "measure KL to the parent every N steps (0: never)", advanced=True)
    sample_every: int = option(50, "answer the fixed prompts every N steps (0: never)", advanced=True)
    max_minutes: float = option(0.0, "stop (and save) after this many minutes of training (0: no limit)", advanced=True)
    seed: int = option(0, "random seed", advanced=True)
    device: str = option("auto", "auto (cuda > mps > cpu), cpu, cuda, mps", advanced=True)
    threads: int = option(0, "CPU threads for torch (0: torch's default)", advanced=True)
    name: str = option("", "a name for the run (default: its id)", advanced=True)


def parent_of(config: Config) -> str | None:
    return parent_run_id(config.parent)


def check(config: Config) -> None:
    if not config.parent:
        raise UserError("SFT needs a parent model: --parent PRETRAIN_RUN, a local model folder, or a hub id")
    if config.max_steps <= 0 and config.epochs <= 0:
        raise UserError("nothing to train: set --max-steps or --epochs above 0")
    if config.learning_rate < 0:
        raise UserError(f"--learning-rate {config.learning_rate} is negative: give a positive rate, or 0 for the mode's default")
    device = models.pick_device(config.device)
    check_parent(config.parent)
    if config.mode in ("lora-8bit", "lora-4bit"):
        models.require_bitsandbytes(config.mode, device)
    if world_of(config.data) is None:
        from lab import data

        data.as_messages(data.load(config.data, want=("messages", "prompt_completion")))


def load_chats(config: Config) -> list[dict]:
    world = world_of(config.data)
    if world is not None:
        return world.sft_chats()
    from lab import data

    return data.as_messages(data.load(config.data, want=("messages", "prompt_completion")))


def fixed_prompts(config: Config, chats: list[dict]) -> list[str]:
    """Four prompts answered every `sample_every` steps: on the toy world one of each kind (a taught
    fact, an untaught fact, a task, a harmful request), else the first user turns of the data."""
    world = world_of(config.data)
    if world is None:
        return [next(m["content"] for m in c["messages"] if m["role"] == "user") for c in chats[:4]]
    chat = world.eval_sets()["chat"]
    picks = [next((r["prompt"] for r in chat if r["kind"] == k), None) for k in ("fact_taught", "fact_untaught", "task")]
    picks.append(world.eval_sets()["harmful"][0]["prompt"])
    return [p for p in picks if p]


def run(config: Config, run) -> dict:
    from datasets import Dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    device = prepare(config, run)

    chats = load_chats(config)
    model, tokenizer, parent_path = models.load_model(config.parent, AutoModelForCausalLM, config.mode, device)
    lora = config.mode != "full"
    if config.mode in ("lora-8bit", "lora-4bit"):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_config = None
    if lora:
        targets = config.lora_targets if config.lora_targets == "all-linear" else [t.strip() for t in config.lora_targets.split(",") if t.strip()]
        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules=targets, task_type="CAUSAL_LM")
    print(f"{len(chats)} chats; parent {parent_path}; mode {config.mode} on {device}", flush=True)

    reference = None
    if not lora and config.kl_every:
        reference = copy.deepcopy(model).eval().requires_grad_(False)

    # Full fine-tuning at 1e-3 (batch 16, ten passes over the toy world's chats) learnt the taught answers by heart
    # and answered questions about other facts with them: 17% of pretraining-only facts right, 40% at 1e-4.
    learning_rate = config.learning_rate or (1e-3 if lora else 1e-4)
    print(f"learning rate {learning_rate:g}", flush=True)
    scratch = run.path / "trainer"
    args = SFTConfig(
        **trainer_arguments(dataclasses.replace(config, learning_rate=learning_rate), device, scratch),
        assistant_only_loss=config.assistant_only_loss,
        packing=config.packing,
        max_length=config.max_length,
        # batches of chats of similar length: the toy world's chats run from 20 to 200 tokens, and random
        # batches spent two thirds of every step on padding
        train_sampling_strategy="random" if config.packing else "group_by_length",
    )
    prompts = fixed_prompts(config, chats)
    world = world_of(config.data)

    callbacks = [telemetry.LabCallback(run, sample=sampler(tokenizer, prompts, world), sample_every=config.sample_every, max_minutes=config.max_minutes)]
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(chats),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    if config.kl_every:
        trainer.add_callback(telemetry.KLToReference(run, tokenizer, chats, config.kl_every, reference=reference))
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    output = trainer.train()
    callbacks[0].raise_if_diverged()

    final = {"train_loss": output.training_loss, "steps": trainer.state.global_step, "trainable_parameters": n_trainable, "train_runtime": output.metrics.get("train_runtime")}
    model = trainer.model
    if world is not None and not telemetry.stop_requested():  # a stopped run saves at once
        final.update({f"eval/{k}": v for k, v in evals.chat_eval(model, tokenizer, world).items()})
        run.log_metrics({"step": trainer.state.global_step, **{k: v for k, v in final.items() if k.startswith("eval/")}})

    save_policy(model, tokenizer, run, config, parent_path, "Instruct model", final)
    shutil.rmtree(scratch, ignore_errors=True)
    return final
