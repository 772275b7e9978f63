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
import shutil
from dataclasses import dataclass

from lab import evals, models, telemetry
from lab.configs import option
from lab.errors import UserError
from lab.runs import atomic_dir
from lab.stages import check_parent, parent_run_id, preference_splits, prepare, trainer_arguments, world_of


@dataclass
class Config:
    parent: str = option("", "the model to start from: an SFT run, a local model folder, or a hub id")
    mode: str = option("full", "train every weight, or LoRA adapters on the backbone (the score head is trained fully)", choices=("full", "lora"))
    data: str = option("world", "preference pairs: 'world' (the toy world's gold-rule pairs) or a file/folder of prompt/chosen/rejected records")
    max_steps: int = option(120, "optimizer steps (0: train for `epochs` instead)")
    batch_size: int = option(16, "pairs per step (per device)")
    learning_rate: float = option(2e-4, "peak learning rate")
    center_rewards_coefficient: float = option(0.01, "pull scores towards 0 (keeps PPO's reward scale steady; 0: off)")
    lora_r: int = option(16, "LoRA rank", advanced=True)
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / r)", advanced=True)
    lora_dropout: float = option(0.0, "LoRA dropout", advanced=True)
    max_length: int = option(256, "pairs with a longer chat are dropped", advanced=True)
    heldout_fraction: float = option(0.05, "share of your pairs kept for the held-out accuracy (the toy world has its own split)", advanced=True)
    epochs: float = option(1.0, "passes over the data when max_steps is 0", advanced=True)
    warmup_steps: int = option(10, "linear warm-up steps", advanced=True)
    lr_scheduler: str = option("cosine", "learning-rate schedule after warm-up", choices=("cosine", "linear", "constant_with_warmup"), advanced=True)
    weight_decay: float = option(0.0, "AdamW weight decay", advanced=True)
    logging_steps: int = option(10, "log metrics every N steps", advanced=True)
    max_minutes: float = option(0.0, "stop (and save) after this many minutes of training (0: no limit)", advanced=True)
    seed: int = option(0, "random seed", advanced=True)
    device: str = option("auto", "auto (cuda > mps > cpu), cpu, cuda, mps", advanced=True)
    threads: int = option(0, "CPU threads for torch (0: torch's default)", advanced=True)
    name: str = option("", "a name for the run (default: its id)", advanced=True)


def parent_of(config: Config) -> str | None:
    return parent_run_id(config.parent)


def check(config: Config) -> None:
    if config.max_steps <= 0 and config.epochs <= 0:
        raise UserError("nothing to train: set --max-steps or --epochs above 0")
    models.pick_device(config.device)
    check_parent(config.parent)
    if world_of(config.data) is None:
        preference_splits(config.data, config.heldout_fraction, config.seed)


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


def model_card(config: Config, run, parent_path: str, result: dict) -> str:
    return (
        "---\nlibrary_name: transformers\ntags: [llm-lifecycle-lab, reward-model]\n---\n"
        f"# {run.info['name']}\n\nReward model from the LLM Lifecycle Lab, stage `reward` (mode `{config.mode}`), "
        f"trained from `{config.parent}` on `{config.data}`. `AutoModelForSequenceClassification` with one output: "
        "the score of a chat rendered with the chat template, read at its last token.\n\n"
        f"- run: `{run.id}`\n- parent run: `{run.parent or 'none'}`\n- parent model: `{parent_path}`\n"
        f"- held-out: {json.dumps(result)}\n\nConfig:\n\n```json\n{json.dumps(config.__dict__, indent=2)}\n```\n"
    )


def run(config: Config, run) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    device = prepare(config, run)
    train_pairs, heldout_pairs = preference_splits(config.data, config.heldout_fraction, config.seed)
    model, tokenizer, parent_path = models.load_model(config.parent, AutoModelForSequenceClassification, "full", device, num_labels=1)
    print(f"{len(train_pairs)} pairs ({len(heldout_pairs)} held out); parent {parent_path}; mode {config.mode} on {device}", flush=True)
    peft_config = None
    if config.mode == "lora":
        # the head is new: it must be trained in full, not through a low-rank update
        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules="all-linear", modules_to_save=["score"], task_type="SEQ_CLS")

    scratch = run.path / "trainer"
    args = RewardConfig(
        **trainer_arguments(config, device, scratch),
        max_length=config.max_length,
        center_rewards_coefficient=config.center_rewards_coefficient or None,
    )
    callback = telemetry.LabCallback(run, max_minutes=config.max_minutes)
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in train_pairs]),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[callback],
    )
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    output = trainer.train()
    callback.raise_if_diverged()

    model = trainer.model
    if config.mode == "lora":
        model = model.merge_and_unload()
    heldout = heldout_accuracy(model, tokenizer, heldout_pairs)
    final = {"train_loss": output.training_loss, "steps": trainer.state.global_step, "trainable_parameters": n_trainable,
             "train_runtime": output.metrics.get("train_runtime"), **{f"eval/{k}": v for k, v in heldout.items()}}
    if heldout:
        run.log_metrics({"step": trainer.state.global_step, **{f"eval/{k}": v for k, v in heldout.items()}})

    with atomic_dir(run.path / "model") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(config, run, parent_path, heldout), encoding="utf-8")
    shutil.rmtree(scratch, ignore_errors=True)
    print("saved model/ " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in final.items()), flush=True)
    return final
