"""Stage 3c, DPO (direct preference optimisation): the policy learns from preference pairs directly, with
no reward model and no sampling, with TRL's DPOTrainer. Its loss, −log σ(β·[(log π/π_ref)(chosen) −
(log π/π_ref)(rejected)]), holds an implicit KL penalty of strength β against the reference model. By
default a second term, the chosen answers' negative log-likelihood (`--sft-weight 1`, as in RPO), keeps the
chosen answers likely: DPO alone can lower both answers of a pair while it widens their gap, and on the toy
world it then forgot most facts (fact QA −33 points; +4 to +7 with the term, bench/RESULTS.md).

    llm-lab train dpo --parent SFT_RUN                          # the toy world's gold-rule pairs
    llm-lab train dpo --parent SFT_RUN --beta 0.3 --loss-type ipo
    llm-lab train dpo --parent SFT_RUN --sft-weight 0            # plain DPO
    llm-lab train dpo --parent SFT_RUN --mode lora-8bit         # LoRA on an 8-bit base; reference = adapter off
    llm-lab train dpo --parent SFT_RUN --data prefs.jsonl       # your pairs (or the Feedback page's)

The reference is the SFT model itself: a frozen copy for full training, or the same weights with the
adapter switched off for LoRA (a LoRA SFT run is merged into its base first). TRL logs rewards/chosen,
rewards/rejected, rewards/margins and rewards/accuracies; the lab adds `kl`, KL(policy ‖ reference) per
answer token on fixed chats every `kl_every` steps, and `gold/score`, the toy world's judge of the
policy's answers to fixed prompts. On the toy world it ends with the chat evals and the win rate against
the SFT model's answers, both judged by the gold judge.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass

from lab import evals, models, telemetry
from lab.configs import option
from lab.errors import UserError
from lab.stages import alignment_prompts, check_parent, parent_run_id, preference_splits, prepare, sampler, save_policy, trainer_arguments, world_of

MODES = ("full", "lora", "lora-8bit", "lora-4bit")
LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "nca_pair", "exo_pair", "apo_zero", "apo_down",
              "aot", "aot_unpaired", "discopop", "sigmoid_norm")


@dataclass
class Config:
    parent: str = option("", "the SFT model: an SFT run, a local model folder, or a hub id")
    mode: str = option("full", "full fine-tuning, or a LoRA adapter on a full, 8-bit or 4-bit base", choices=MODES)
    data: str = option("world", "preference pairs: 'world' (the toy world's gold-rule pairs) or a file/folder of prompt/chosen/rejected records")
    beta: float = option(0.1, "β: the strength of the implicit KL penalty (higher stays closer to the reference)")
    loss_type: str = option("sigmoid", "DPO's loss: sigmoid (the paper's), ipo, hinge, robust, ... (TRL's loss types)", choices=LOSS_TYPES)
    max_steps: int = option(100, "optimizer steps (0: train for `epochs` instead)")
    batch_size: int = option(16, "pairs per step (per device)")
    # 1e-4, not 5e-5: on the toy world win rate 69% -> 79% against the SFT model, refusals 99% -> 100%, fact QA
    # +4.8 points either way (bench/RESULTS.md)
    learning_rate: float = option(1e-4, "peak learning rate")
    lora_r: int = option(16, "LoRA rank", advanced=True)
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / r)", advanced=True)
    lora_dropout: float = option(0.0, "LoRA dropout", advanced=True)
    sft_weight: float = option(1.0, "weight of a negative log-likelihood term on the chosen answers (RPO): keeps what SFT taught likely (0: plain DPO)")
    label_smoothing: float = option(0.0, "conservative DPO: the share of pairs assumed mislabelled", advanced=True)
    max_length: int = option(256, "tokens per chat (prompt + answer); longer ones are truncated", advanced=True)
    heldout_fraction: float = option(0.05, "share of your pairs held out (the toy world has its own split)", advanced=True)
    epochs: float = option(1.0, "passes over the data when max_steps is 0", advanced=True)
    warmup_steps: int = option(10, "linear warm-up steps", advanced=True)
    lr_scheduler: str = option("cosine", "learning-rate schedule after warm-up", choices=("cosine", "linear", "constant_with_warmup"), advanced=True)
    weight_decay: float = option(0.0, "AdamW weight decay", advanced=True)
    logging_steps: int = option(5, "log metrics every N steps", advanced=True)
    kl_every: int = option(10, "measure KL(policy ‖ reference) every N steps (0: never)", advanced=True)
    sample_every: int = option(25, "answer the fixed prompts every N steps (0: never)", advanced=True)
    eval_temperature: float = option(0.7, "sampling temperature of the end-of-run comparison with the SFT model", advanced=True)
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
    if config.sft_weight < 0:
        raise UserError(f"--sft-weight {config.sft_weight}: the weight of the chosen answers' log-likelihood must be 0 (off) or above")
    if config.beta <= 0:
        raise UserError(f"--beta {config.beta}: β must be above 0 (it scales the implicit reward; 0.1 is the usual start)")
    device = models.pick_device(config.device)
    check_parent(config.parent)
    if config.mode in models.QUANTIZED:
        models.require_bitsandbytes(config.mode, device)
    if world_of(config.data) is None:
        preference_splits(config.data, config.heldout_fraction, config.seed)


def run(config: Config, run) -> dict:
    from datasets import Dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    device = prepare(config, run)
    train_pairs, heldout_pairs = preference_splits(config.data, config.heldout_fraction, config.seed)
    world = world_of(config.data)
    model, tokenizer, parent_path = models.load_model(config.parent, AutoModelForCausalLM, config.mode, device)
    print(f"{len(train_pairs)} pairs; parent {parent_path}; mode {config.mode}, beta {config.beta}, loss {config.loss_type} on {device}", flush=True)
    # the SFT model's own answers, before any update: what the aligned model is compared with at the end
    baseline = evals.chat(model, tokenizer, evals.comparison_prompts(world), max_new_tokens=48, temperature=config.eval_temperature, seed=config.seed) if world else None

    peft_config, reference = None, None
    if config.mode in models.QUANTIZED:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if config.mode != "full":
        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules="all-linear", task_type="CAUSAL_LM")
    else:
        reference = copy.deepcopy(model).eval().requires_grad_(False)

    scratch = run.path / "trainer"
    args = DPOConfig(
        **trainer_arguments(config, device, scratch),
        beta=config.beta,
        # DPO alone only widens the gap between chosen and rejected, and can lower both; the "sft" term
        # keeps the chosen answers (the correct, polite ones) likely in absolute terms.
        loss_type=[config.loss_type] + (["sft"] if config.sft_weight else []),
        loss_weights=[1.0, config.sft_weight] if config.sft_weight else None,
        label_smoothing=config.label_smoothing,
        max_length=config.max_length,
    )
    callback = telemetry.LabCallback(run, sample=sampler(tokenizer, alignment_prompts(config.data, train_pairs), world),
                                     sample_every=config.sample_every, max_minutes=config.max_minutes, cross_entropy=False)
    fields = ("prompt", "chosen", "rejected")
    trainer = DPOTrainer(
        model=model,
        ref_model=reference,
        args=args,
        train_dataset=Dataset.from_list([{k: p[k] for k in fields} for p in train_pairs]),
        eval_dataset=Dataset.from_list([{k: p[k] for k in fields} for p in heldout_pairs]) if heldout_pairs else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[callback],
    )
    if config.kl_every:
        chats = [{"messages": p["prompt"] + p["chosen"]} for p in train_pairs[:8]]
        trainer.add_callback(telemetry.KLToReference(run, tokenizer, chats, config.kl_every, reference=reference))
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    output = trainer.train()
    callback.raise_if_diverged()

    final = {"train_loss": output.training_loss, "steps": trainer.state.global_step, "trainable_parameters": n_trainable,
             "train_runtime": output.metrics.get("train_runtime")}
    if heldout_pairs:  # held-out preference accuracy of the implicit reward
        held = trainer.evaluate()
        final.update({f"eval/{k.removeprefix('eval_')}": v for k, v in held.items() if k.startswith("eval_rewards/")})
    model = trainer.model
    if world is not None and not telemetry.stop_requested():  # a stopped run saves at once
        final.update(evals.alignment_eval(model, tokenizer, world, baseline, config.eval_temperature, config.seed))
    evaluated = {k: v for k, v in final.items() if k.startswith("eval/")}
    if evaluated:
        run.log_metrics({"step": trainer.state.global_step, **evaluated})
    save_policy(model, tokenizer, run, config, parent_path, "Aligned model (DPO)", final)
    shutil.rmtree(scratch, ignore_errors=True)
    return final
