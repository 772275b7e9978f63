"""Stage 3d, KTO (Kahneman-Tversky optimisation): the policy learns from answers labelled good or bad one by one,
with no pairs, with TRL's KTOTrainer. Each answer's implicit reward β·log(π/π_ref) is pushed above (good) or below
(bad) a reference point, the batch's KL between the policy and the reference, with a loss shaped like prospect
theory's value function; `desirable_weight` and `undesirable_weight` balance a data set with more of one kind.
Labels are cheaper to collect than rankings: a thumbs up or down per answer.

    llm-lab train kto --parent SFT_RUN                          # the toy world's pairs, each as a good and a bad answer
    llm-lab train kto --parent SFT_RUN --data labels.jsonl      # {"prompt": ..., "completion": ..., "label": true|false}
    llm-lab train kto --parent SFT_RUN --mode lora              # LoRA; reference = the adapter switched off

The reference is the SFT model, as for DPO. TRL logs rewards/chosen and rewards/rejected (of the good and the bad
answers), their margin and the KL estimate; the lab adds `kl` on fixed chats every `kl_every` steps and `gold/score`
of the policy's answers to fixed prompts, and on the toy world ends with the chat evals and the win rate against
the SFT model's answers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from lab import evals, models
from lab.configs import DATA, MODEL, inherit, option
from lab.errors import UserError, flag
from lab.stages import Stage, alignment_prompts, check_parent, labelled_splits, sampler, world_of
from lab.stages.base import DataArgs, LoraArgs, TrainerArgs, check_training, fit, for_kbit_training, lora_config, prepare, save_model, trainer_arguments

STAGE = Stage(label="KTO", page="Align", data="labels", produces="chat", curves=("loss", "margin", "kl"))


@dataclass
class Config(DataArgs, LoraArgs, TrainerArgs):
    parent: str = option("", "the SFT model: an SFT run, a local model folder, or a hub id", order=MODEL, runs=("sft",))
    data: str = option("world", "labelled answers: 'world' (the toy world's pairs, each as a good and a bad answer) or a file of "
                                "prompt/completion/label records (or of preference pairs)", order=DATA)
    beta: float = option(0.1, "β: the strength of the implicit KL penalty (higher stays closer to the reference)", within="(0, 100]")
    desirable_weight: float = option(1.0, "weight of the good answers' loss (raise it when good answers are fewer)", within="(0, 100]")
    undesirable_weight: float = option(1.0, "weight of the bad answers' loss", within="(0, 100]")
    batch_size: int = inherit(TrainerArgs, "batch_size", 16, help="labelled answers per step (per device); KTO's KL estimate needs 2 or more")
    learning_rate: float = inherit(TrainerArgs, "learning_rate", 1e-4)
    max_length: int = option(256, "tokens per chat (prompt + answer); longer ones are truncated", advanced=True, within="[8, 1048576]")
    heldout_fraction: float = option(0.05, "share of your answers held out (the toy world has its own split)", advanced=True, within="[0, 0.5]")
    logging_steps: int = inherit(TrainerArgs, "logging_steps", 5)
    kl_every: int = option(10, "measure KL(policy ‖ reference) every N steps (0: never)", advanced=True, within="[0, 10000000]")
    sample_every: int = option(25, "answer the fixed prompts every N steps (0: never)", advanced=True, within="[0, 10000000]")
    eval_temperature: float = option(0.7, "sampling temperature of the end-of-run comparison with the SFT model", advanced=True, within="(0, 10]")


def check(config: Config) -> None:
    if config.batch_size < 2:
        raise UserError(f"{flag('batch_size')} {config.batch_size}: KTO estimates its reference point (the KL) from the other answers of a "
                        "batch; give it 2 or more")
    check_training(config)
    check_parent(config.parent)
    if world_of(config.data, config.columns) is None:
        train, _ = labelled_splits(config.data, config.heldout_fraction, config.seed, config.columns)
        if len({r["label"] for r in train}) < 2:
            raise UserError(f"{config.data}: every answer is labelled {train[0]['label']}; KTO learns from good and bad answers both")


def run(config: Config, run) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import KTOConfig, KTOTrainer

    from lab import telemetry

    device = prepare(config, run)
    train, heldout = labelled_splits(config.data, config.heldout_fraction, config.seed, config.columns)
    world = world_of(config.data)
    judged = world if config.world_evals else None
    model, tokenizer, parent_path = models.load_model(config.parent, AutoModelForCausalLM, config.mode, device)
    good = sum(r["label"] for r in train)
    print(f"{len(train)} labelled answers ({good} good, {len(train) - good} bad); parent {parent_path}; mode {config.mode}, beta {config.beta} on {device}", flush=True)
    baseline = evals.chat(model, tokenizer, evals.comparison_prompts(world), max_new_tokens=48, temperature=config.eval_temperature, seed=config.seed) if judged else None

    model = for_kbit_training(model, config.mode)
    reference = copy.deepcopy(model).eval().requires_grad_(False) if config.mode == "full" else None
    args = KTOConfig(
        **trainer_arguments(config, device, run.path / "trainer", model=model),
        beta=config.beta,
        desirable_weight=config.desirable_weight,
        undesirable_weight=config.undesirable_weight,
        max_length=config.max_length,
        remove_unused_columns=False,
    )

    def rows(records):
        return Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"], "label": r["label"]} for r in records])

    pairs = [{"prompt": r["prompt"]} for r in train]
    callback = telemetry.LabCallback(run, sample=sampler(tokenizer, alignment_prompts(config.data, pairs), world),
                                     sample_every=config.sample_every, max_minutes=config.max_minutes, cross_entropy=False,
                                     # TRL's `kl` is KTO's reference point, the batch's KL estimate; the lab's `kl` is measured on fixed chats
                                     rename={"kl": "kto/reference_point", "eval_kl": "eval_kto/reference_point"})
    trainer = KTOTrainer(model=model, ref_model=reference, args=args, train_dataset=rows(train), eval_dataset=rows(heldout) if heldout else None,
                         processing_class=tokenizer, peft_config=lora_config(config, "CAUSAL_LM"), callbacks=[callback])
    if config.kl_every:
        chats = [{"messages": r["prompt"] + r["completion"]} for r in train if r["label"]][:8]
        trainer.add_callback(telemetry.KLToReference(run, tokenizer, chats, config.kl_every, reference=reference))

    def evaluate(model) -> dict:
        out = {}
        if heldout:
            out = {f"eval/{k.removeprefix('eval_')}": v for k, v in trainer.evaluate().items() if k.startswith("eval_rewards/")}
        if judged is not None:
            out.update(evals.alignment_eval(model, tokenizer, world, baseline, config.eval_temperature, config.seed))
        return out

    final = fit(trainer, callback, run, evaluate)
    save_model(trainer.model, tokenizer, run, config, "Aligned model (KTO)", final, parent_path)
    return final
