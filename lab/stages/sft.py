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
from dataclasses import dataclass

from lab import evals, models
from lab.configs import DATA, MODEL, inherit, option
from lab.errors import UserError, flag
from lab.stages import Stage, check_parent, sampler, world_of
from lab.stages.base import DataArgs, LoraArgs, TrainerArgs, check_training, fit, for_kbit_training, lora_config, prepare, save_model, trainer_arguments

STAGE = Stage(label="SFT", data="chats", produces="chat", resume_from="parent", curves=("loss", "kl", "reward"))


@dataclass
class Config(DataArgs, LoraArgs, TrainerArgs):
    parent: str = option("", "the base model: a pretrain run, a local model folder, or a hub id", order=MODEL, runs=("pretrain",))
    data: str = option("world", "chats: 'world' (the toy world's SFT chats) or a file/folder of messages or prompt/completion records", order=DATA)
    max_steps: int = inherit(TrainerArgs, "max_steps", 150)
    # 8, not 16: fewer passes over the toy world's chats drifted less from the parent and kept more of its facts (bench/RESULTS.md)
    batch_size: int = inherit(TrainerArgs, "batch_size", 8, help="chats per step (per device)")
    learning_rate: float = inherit(TrainerArgs, "learning_rate", 0.0, help="peak learning rate (0: 1e-4 for full fine-tuning, 1e-3 for LoRA, which trains far fewer weights)", within="[0, 1]")
    assistant_only_loss: bool = option(True, "train on the assistant's tokens only (off: on the whole chat)")
    lora_dropout: float = inherit(LoraArgs, "lora_dropout", 0.05)
    packing: bool = option(False, "pack several chats into each sequence", advanced=True)
    max_length: int = option(256, "tokens per sequence (longer chats are truncated)", advanced=True, within="[8, 1048576]")
    kl_every: int = option(25, "measure KL to the parent every N steps (0: never)", advanced=True, within="[0, 10000000]")
    sample_every: int = option(50, "answer the fixed prompts every N steps (0: never)", advanced=True, within="[0, 10000000]")
    # What SFT alone teaches, without what pretraining knew: the skip-pretraining experiment (lab.experiments)
    from_scratch: bool = option(False, "start from random weights in the parent's architecture, with its tokenizer: SFT with no pretraining", advanced=True)


def check(config: Config) -> None:
    if not config.parent:
        raise UserError(f"SFT needs a parent model: set {flag('parent')} to a pretrain run, a local model folder or a hub id")
    check_training(config)
    check_parent(config.parent)
    if config.from_scratch and config.mode != "full":
        raise UserError(f"{flag('from_scratch')} trains every weight from random values: LoRA ({config.mode}) would train adapters on noise; set {flag('mode')} full")
    if world_of(config.data, config.columns) is None:
        load_chats(config)


def load_chats(config: Config) -> list[dict]:
    world = world_of(config.data)
    if world is not None:
        return world.sft_chats()
    from lab import data

    return data.as_messages(data.load(config.data, want=("messages", "prompt_completion"), columns=config.columns))


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
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from lab import telemetry

    device = prepare(config, run)

    chats = load_chats(config)
    model, tokenizer, parent_path = models.load_model(config.parent, AutoModelForCausalLM, config.mode, device)
    model = for_kbit_training(model, config.mode)
    print(f"{len(chats)} chats; parent {parent_path}{' (its architecture, random weights)' if config.from_scratch else ''}; mode {config.mode} on {device}", flush=True)

    reference = None
    if config.mode == "full" and config.kl_every:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    if config.from_scratch:  # the same architecture and tokenizer, none of the knowledge (KL stays to the parent)
        model = AutoModelForCausalLM.from_config(model.config, dtype=model.dtype).to(device)

    # Full fine-tuning at LoRA's rate learnt the taught answers by heart and answered other questions with them
    learning_rate = config.learning_rate or (1e-4 if config.mode == "full" else 1e-3)
    print(f"learning rate {learning_rate:g}", flush=True)
    args = SFTConfig(
        **trainer_arguments(dataclasses.replace(config, learning_rate=learning_rate), device, run.path / "trainer", model=model),
        assistant_only_loss=config.assistant_only_loss,
        packing=config.packing,
        max_length=config.max_length,
        # batches of chats of similar length: the toy world's chats vary several-fold in length, and random
        # batches spent most of every step on padding
        train_sampling_strategy="random" if config.packing else "group_by_length",
    )
    world = world_of(config.data)
    callback = telemetry.LabCallback(run, sample=sampler(tokenizer, fixed_prompts(config, chats), world), sample_every=config.sample_every, max_minutes=config.max_minutes)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(chats),
        processing_class=tokenizer,
        peft_config=lora_config(config, "CAUSAL_LM"),
        callbacks=[callback],
    )
    if config.kl_every:
        trainer.add_callback(telemetry.KLToReference(run, tokenizer, chats, config.kl_every, reference=reference))

    def evaluate(model) -> dict:
        return {f"eval/{k}": v for k, v in evals.chat_eval(model, tokenizer, world).items()} if world is not None and config.world_evals else {}

    final = fit(trainer, callback, run, evaluate)
    save_model(trainer.model, tokenizer, run, config, "Instruct model", final, parent_path)
    return final
