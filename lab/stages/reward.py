"""Stage 3a, the reward model: a scalar score per answer, learnt from rankings (prompt, chosen, rejected)
with TRL's RewardTrainer (Bradley-Terry loss: −log σ(r_chosen − r_rejected)). PPO and GRPO then
maximise it; it is a proxy of human preference, which the toy world's gold judge lets you check.

    llm-lab train reward --parent SFT_RUN                       # the toy world's gold-rule pairs
    llm-lab train reward --parent SFT_RUN --mode lora           # LoRA on the backbone, the score head trained fully
    llm-lab train reward --parent SFT_RUN --data prefs.jsonl    # your pairs (prompt/chosen/rejected, or conversational)

Starts from the SFT model with a fresh one-output head (AutoModelForSequenceClassification) and saves a
full `model/` (a LoRA adapter is merged in), so PPO, GRPO and the Compare page load it with plain
transformers. The score of a chat is the head's output at its last token, the chat rendered with the
model's chat template. Ends with held-out accuracy and margin (on the toy world also per criterion:
correct, polite, refuses_harmful, concise).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lab import evals, models
from lab.configs import DATA, MODEL, inherit, option
from lab.errors import UserError, flag, hint
from lab.stages import Stage, check_parent, preference_splits, world_of
from lab.stages.base import DataArgs, LoraArgs, TrainerArgs, check_training, fit, lora_config, prepare, save_model, trainer_arguments

STAGE = Stage(label="Reward model", page="Align", data="preference", produces="reward", curves=("loss", "accuracy", "margin"))


@dataclass
class Config(DataArgs, LoraArgs, TrainerArgs):
    parent: str = option("", "the model to start from: an SFT run, a local model folder, or a hub id", order=MODEL, runs=("sft", "pretrain"))
    mode: str = inherit(LoraArgs, "mode", "full", choices=("full", "lora"), help="train every weight, or LoRA adapters on the backbone (the score head is trained fully)")
    data: str = option("world", "preference pairs: 'world' (the toy world's gold-rule pairs) or a file/folder of prompt/chosen/rejected records", order=DATA)
    max_steps: int = inherit(TrainerArgs, "max_steps", 120)
    batch_size: int = inherit(TrainerArgs, "batch_size", 16, help="pairs per step (per device)")
    learning_rate: float = inherit(TrainerArgs, "learning_rate", 2e-4)
    center_rewards_coefficient: float = option(0.01, "pull scores towards 0 (keeps PPO's reward scale steady; 0: off)", within="[0, 100]")
    max_length: int = option(256, "pairs with a longer chat are dropped", advanced=True, within="[8, 1048576]")
    heldout_fraction: float = option(0.05, "share of your pairs kept for the held-out accuracy (the toy world has its own split)", advanced=True, within="[0, 0.5]")
    # what a budget of human labels buys: the preference-budget experiment (lab.experiments)
    max_pairs: int = option(0, "train on at most this many pairs, drawn at random from the training pairs (0: all of them)", advanced=True, within="[0, 100000000]")


def check(config: Config) -> None:
    check_training(config)
    check_parent(config.parent)
    if world_of(config.data, config.columns) is None:
        preference_splits(config.data, config.heldout_fraction, config.seed, config.columns, config.max_pairs)


# What online RL takes as a reward besides a reward model: the toy world's judge, offered by the pages' pickers.
GOLD = (("gold", "gold · the toy world's judge (true reward, no model)"),)


def check_usable(reward: str, data: str) -> str:
    """What online RL (PPO, GRPO) takes as its reward: a reward model's folder (returned), or 'gold' on the toy
    world. Anything else is refused with what to pass instead."""
    if reward == "gold":
        if world_of(data) is None:
            raise UserError(f"{flag('reward')} gold is the toy world's judge: it scores only the toy world's prompts ({flag('data')} world); "
                            "for your prompts pass a reward model")
        return reward
    if not reward:
        raise UserError(f"{flag('reward')} is required: a reward run ({hint(cli='llm-lab train reward --parent SFT_RUN', page='Align → Reward model')}), a reward-model folder, or 'gold'")
    path = check_parent(reward, "reward")
    folder = Path(path)
    if not folder.is_dir():  # a hub id: from_pretrained will tell
        return path
    if not (folder / "config.json").exists():  # a LoRA adapter
        raise UserError(f"{flag('reward')} {reward}: {folder} holds a LoRA adapter: export the reward run with "
                        f"{hint(cli='llm-lab export RUN --merge', page='Runs → Export')} and pass the merged folder")
    cfg = json.loads((folder / "config.json").read_text())
    archs = cfg.get("architectures") or ["an unknown architecture"]
    labels = len(cfg.get("id2label") or {0: ""})
    if not any(a.endswith("ForSequenceClassification") for a in archs) or labels != 1:
        raise UserError(
            f"{flag('reward')} {reward}: {folder} holds {archs[0]}{f' with {labels} labels' if labels != 1 else ''}, not a reward "
            f"model (a …ForSequenceClassification with one output): train one ({hint(cli='llm-lab train reward --parent SFT_RUN', page='Align → Reward model')}), "
            f"or use {flag('reward')} gold on the toy world"
        )
    return path


def heldout_accuracy(model, tokenizer, pairs: list[dict]) -> dict:
    """Share of held-out pairs where the chosen answer scores higher, the mean margin, and the same
    accuracy per criterion when the pairs carry one (the toy world's do)."""
    if not pairs:
        return {}
    chosen = evals.reward_scores(model, tokenizer, [p["prompt"] + p["chosen"] for p in pairs])
    rejected = evals.reward_scores(model, tokenizer, [p["prompt"] + p["rejected"] for p in pairs])
    wins = [c > r for c, r in zip(chosen, rejected)]
    out = {"accuracy": sum(wins) / len(wins), "margin": sum(c - r for c, r in zip(chosen, rejected)) / len(wins)}
    for criterion in sorted({p["criterion"] for p in pairs if p.get("criterion")}):
        part = [w for w, p in zip(wins, pairs) if p.get("criterion") == criterion]
        out[f"accuracy_{criterion}"] = sum(part) / len(part)
    return out


def run(config: Config, run) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from lab import telemetry

    device = prepare(config, run)
    train_pairs, heldout_pairs = preference_splits(config.data, config.heldout_fraction, config.seed, config.columns, config.max_pairs)
    model, tokenizer, parent_path = models.load_model(config.parent, AutoModelForSequenceClassification, "full", device, num_labels=1)
    print(f"{len(train_pairs)} pairs ({len(heldout_pairs)} held out); parent {parent_path}; mode {config.mode} on {device}", flush=True)
    # the head is new: it must be trained in full, not through a low-rank update
    peft_config = lora_config(config, "SEQ_CLS", modules_to_save=["score"])
    args = RewardConfig(
        **trainer_arguments(config, device, run.path / "trainer", model=model),
        # no BY_LENGTH: a reward model trained on length-grouped batches had half the margin, and PPO on it
        # refused 84% of harmful requests against 98.7% (bench/RESULTS.md, 2026-12-02)
        max_length=config.max_length,
        center_rewards_coefficient=config.center_rewards_coefficient or None,
    )
    callback = telemetry.LabCallback(run, max_minutes=config.max_minutes, cross_entropy=False)  # a pairwise loss: exp(loss) is no perplexity
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in train_pairs]),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[callback],
    )
    final = fit(trainer, callback, run, lambda model: {f"eval/{k}": v for k, v in heldout_accuracy(model, tokenizer, heldout_pairs).items()})
    # one full model/, so PPO, GRPO and the Compare page load it with plain transformers
    model = trainer.model.merge_and_unload() if peft_config else trainer.model
    what = ("Reward model (`AutoModelForSequenceClassification` with one output: the score of a chat rendered with the chat "
            "template, read at its last token)")
    save_model(model, tokenizer, run, config, what, final, parent_path)
    return final
