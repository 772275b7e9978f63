"""Stage 3c, DPO (direct preference optimisation): the policy learns from preference pairs directly, with
no reward model and no sampling, with TRL's DPOTrainer. Its loss, −log σ(β·[(log π/π_ref)(chosen) −
(log π/π_ref)(rejected)]), holds an implicit KL penalty of strength β against the reference model. By
default a second term, the chosen answers' negative log-likelihood (`--sft-weight 1`, as in RPO), keeps the
chosen answers likely: DPO alone can lower both answers of a pair while it widens their gap, and on the toy
world it then forgot facts (bench/RESULTS.md, "Rerun, 2026-11-30: DPO with an SFT term").

    llm-lab train dpo --parent SFT_RUN                          # the toy world's gold-rule pairs
    llm-lab train dpo --parent SFT_RUN --beta 0.3 --loss-type ipo
    llm-lab train dpo --parent SFT_RUN --sft-weight 0            # plain DPO
    llm-lab train dpo --parent SFT_RUN --mode lora-8bit         # LoRA on an 8-bit base; reference = adapter off
    llm-lab train dpo --parent SFT_RUN --data prefs.jsonl       # your pairs (or the Feedback page's)
    llm-lab train dpo --parent SFT_RUN --loss-type orpo         # reference-free: ORPO, or simpo (SimPO)

`--loss-type orpo` and `simpo` train with TRL's ORPOTrainer and CPOTrainer, with no reference model in the loss:
ORPO adds an odds-ratio term of weight β to the chosen answers' NLL (SFT and alignment in one loss); SimPO
widens the length-normalised log-likelihood margin, scaled by β, past `simpo_gamma`, plus `--sft-weight` times
the chosen answers' NLL (CPO-SimPO; 0: plain SimPO). The `kl` curve still measures the policy against the SFT
model it started from.

The reference is the SFT model itself: a frozen copy for full training, or the same weights with the
adapter switched off for LoRA (a LoRA SFT run is merged into its base first). TRL logs rewards/chosen,
rewards/rejected, rewards/margins and rewards/accuracies; the lab adds `kl`, KL(policy ‖ reference) per
answer token on fixed chats every `kl_every` steps, and `gold/score`, the toy world's judge of the
policy's answers to fixed prompts. On the toy world it ends with the chat evals and the win rate against
the SFT model's answers, both judged by the gold judge.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from lab import evals, models
from lab.configs import DATA, MODEL, inherit, option
from lab.errors import UserError, flag
from lab.stages import Stage, alignment_prompts, check_parent, preference_splits, sampler, world_of
from lab.stages.base import BY_LENGTH, DataArgs, LoraArgs, TrainerArgs, check_training, fit, for_kbit_training, lora_config, pairs_dataset, prepare, save_model, trainer_arguments

STAGE = Stage(label="DPO", page="Align", data="preference", produces="chat", curves=("loss", "margin", "accuracy", "kl"))

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "nca_pair", "exo_pair", "apo_zero", "apo_down",
              "aot", "aot_unpaired", "discopop", "sigmoid_norm", "orpo", "simpo")
REFERENCE_FREE = ("orpo", "simpo")  # their own TRL trainers, with no reference model in the loss


@dataclass
class Config(DataArgs, LoraArgs, TrainerArgs):
    parent: str = option("", "the SFT model: an SFT run, a local model folder, or a hub id", order=MODEL, runs=("sft",))
    data: str = option("world", "preference pairs: 'world' (the toy world's gold-rule pairs) or a file/folder of prompt/chosen/rejected records", order=DATA)
    beta: float = option(0.1, "β: the strength of the implicit KL penalty (higher stays closer to the reference)", within="(0, 100]")
    loss_type: str = option("sigmoid", "DPO's loss: sigmoid (the paper's), ipo, hinge, robust, ... (TRL's loss types); orpo or simpo: reference-free (ORPO, SimPO)", choices=LOSS_TYPES)
    batch_size: int = inherit(TrainerArgs, "batch_size", 16, help="pairs per step (per device)")
    # 1e-4, not TRL's 5e-7 or the usual 5e-5: a higher win rate against the SFT model on the toy world (bench/RESULTS.md)
    learning_rate: float = inherit(TrainerArgs, "learning_rate", 1e-4)
    sft_weight: float = option(1.0, "weight of a negative log-likelihood term on the chosen answers (RPO): keeps what SFT taught likely (0: plain DPO)", within="[0, 100]")
    label_smoothing: float = option(0.0, "conservative DPO: the share of pairs assumed mislabelled", advanced=True, within="[0, 0.5)")
    max_length: int = option(256, "tokens per chat (prompt + answer); longer ones are truncated", advanced=True, within="[8, 1048576]")
    heldout_fraction: float = option(0.05, "share of your pairs held out (the toy world has its own split)", advanced=True, within="[0, 0.5]")
    # what a budget of human labels buys: the preference-budget experiment (lab.experiments)
    max_pairs: int = option(0, "train on at most this many pairs, drawn at random from the training pairs (0: all of them)", advanced=True, within="[0, 100000000]")
    logging_steps: int = inherit(TrainerArgs, "logging_steps", 5)
    kl_every: int = option(10, "measure KL(policy ‖ reference) every N steps (0: never)", advanced=True, within="[0, 10000000]")
    sample_every: int = option(25, "answer the fixed prompts every N steps (0: never)", advanced=True, within="[0, 10000000]")
    eval_temperature: float = option(0.7, "sampling temperature of the end-of-run comparison with the SFT model", advanced=True, within="(0, 10]")
    simpo_gamma: float = option(0.5, "SimPO's target margin γ (loss type simpo)", advanced=True, within="[0, 100]")


def check(config: Config) -> None:
    if config.loss_type == "orpo" and config.sft_weight != 1.0:
        raise UserError(f"{flag('sft_weight')} {config.sft_weight} with {flag('loss_type')} orpo: ORPO's loss holds its own NLL term of "
                        f"weight 1 (β weighs the odds ratio); leave {flag('sft_weight')} at 1")
    if config.loss_type in REFERENCE_FREE and config.label_smoothing:
        raise UserError(f"{flag('label_smoothing')} {config.label_smoothing}: conservative DPO's smoothing is not part of ORPO's or SimPO's loss; leave it at 0")
    check_training(config)
    check_parent(config.parent)
    if world_of(config.data, config.columns) is None:
        preference_splits(config.data, config.heldout_fraction, config.seed, config.columns, config.max_pairs)


def run(config: Config, run) -> dict:
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from lab import telemetry

    device = prepare(config, run)
    train_pairs, heldout_pairs = preference_splits(config.data, config.heldout_fraction, config.seed, config.columns, config.max_pairs)
    world = world_of(config.data)
    judged = world if config.world_evals else None  # the world whose evals end the run
    model, tokenizer, parent_path = models.load_model(config.parent, AutoModelForCausalLM, config.mode, device)
    print(f"{len(train_pairs)} pairs; parent {parent_path}; mode {config.mode}, beta {config.beta}, loss {config.loss_type} on {device}", flush=True)
    # the SFT model's own answers, before any update: what the aligned model is compared with at the end
    baseline = evals.chat(model, tokenizer, evals.comparison_prompts(world), max_new_tokens=48, temperature=config.eval_temperature, seed=config.seed) if judged else None

    model = for_kbit_training(model, config.mode)
    reference = copy.deepcopy(model).eval().requires_grad_(False) if config.mode == "full" else None

    callback = telemetry.LabCallback(run, sample=sampler(tokenizer, alignment_prompts(config.data, train_pairs), world),
                                     sample_every=config.sample_every, max_minutes=config.max_minutes, cross_entropy=False)
    common = dict(model=model, train_dataset=pairs_dataset(train_pairs), eval_dataset=pairs_dataset(heldout_pairs) if heldout_pairs else None,
                  processing_class=tokenizer, peft_config=lora_config(config, "CAUSAL_LM"), callbacks=[callback])
    if config.loss_type in REFERENCE_FREE:
        trainer = reference_free_trainer(config, trainer_arguments(config, device, run.path / "trainer", model=model), common)
    else:
        args = DPOConfig(
            **trainer_arguments(config, device, run.path / "trainer", model=model),
            **BY_LENGTH,
            beta=config.beta,
            # DPO alone only widens the gap between chosen and rejected, and can lower both; the "sft" term
            # keeps the chosen answers (the correct, polite ones) likely in absolute terms.
            loss_type=[config.loss_type] + (["sft"] if config.sft_weight else []),
            loss_weights=[1.0, config.sft_weight] if config.sft_weight else None,
            label_smoothing=config.label_smoothing,
            max_length=config.max_length,
        )
        trainer = DPOTrainer(ref_model=reference, args=args, **common)
    if config.kl_every:
        chats = [{"messages": p["prompt"] + p["chosen"]} for p in train_pairs[:8]]
        trainer.add_callback(telemetry.KLToReference(run, tokenizer, chats, config.kl_every, reference=reference))

    def evaluate(model) -> dict:
        out = {}
        if heldout_pairs:  # held-out preference accuracy of the implicit reward
            out = {f"eval/{k.removeprefix('eval_')}": v for k, v in trainer.evaluate().items() if k.startswith("eval_rewards/")}
        if judged is not None:
            out.update(evals.alignment_eval(model, tokenizer, world, baseline, config.eval_temperature, config.seed))
        return out

    final = fit(trainer, callback, run, evaluate)
    what = {"orpo": "ORPO", "simpo": "SimPO"}.get(config.loss_type, "DPO")
    save_model(trainer.model, tokenizer, run, config, f"Aligned model ({what})", final, parent_path)
    return final


def reference_free_trainer(config: Config, arguments: dict, common: dict):
    """ORPO (TRL's ORPOTrainer) or SimPO (its CPOTrainer with the simpo loss): no reference model in the loss.
    They still live in trl.experimental, so they are imported only here."""
    if config.loss_type == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer(args=ORPOConfig(**arguments, beta=config.beta, max_length=config.max_length, remove_unused_columns=False), **common)
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    args = CPOConfig(**arguments, loss_type="simpo", beta=config.beta, simpo_gamma=config.simpo_gamma, cpo_alpha=config.sft_weight,
                     max_length=config.max_length, remove_unused_columns=False)
    return CPOTrainer(args=args, **common)
