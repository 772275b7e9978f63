"""Stage 3d, GRPO (group relative policy optimisation): online RL without a value model. For each prompt
the policy samples a group of answers, the reward model scores them, and each answer's advantage is its
score relative to its group's; a KL penalty (β) keeps the policy near the SFT model. TRL's GRPOTrainer,
or its RLOOTrainer (REINFORCE leave-one-out) with `--algorithm rloo`.

    llm-lab train grpo --parent SFT_RUN --reward REWARD_RUN     # the toy world's prompts
    llm-lab train grpo --parent SFT_RUN --reward gold           # the world's gold judge as the reward: true reward
    llm-lab train grpo --parent SFT_RUN --reward RUN --algorithm rloo --mode lora

TRL logs reward, reward_std, kl (β > 0), entropy, clip ratios and completion lengths; the lab adds the gold
judge's score of the same rollouts (`rewards/gold_judge/mean`, with weight 0 in the objective when the
reward is a reward model) and `gold/score` of the answers to fixed prompts, so proxy reward and true reward
can be plotted together. On the toy world it ends with the chat evals and the win rate against the SFT model.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab import evals, models
from lab.configs import DATA, MODEL, TRAINING, inherit, option
from lab.errors import UserError, flag
from lab.stages import Stage, alignment_prompts, check_parent, prompt_set, sampler, world_of
from lab.stages.base import DataArgs, LoraArgs, TrainerArgs, check_training, fit, for_kbit_training, lora_config, prepare, save_model, trainer_arguments
from lab.stages.reward import GOLD, check_usable

STAGE = Stage(label="GRPO", page="Align", data="prompts", produces="chat", curves=("reward", "kl", "loss"))


@dataclass
class Config(DataArgs, LoraArgs, TrainerArgs):
    parent: str = option("", "the SFT model: an SFT run, a local model folder, or a hub id", order=MODEL, runs=("sft",))
    reward: str = option("", "the reward: a reward run or a reward-model folder, or 'gold' (the toy world's gold judge)", order=MODEL, runs=("reward",), offers=GOLD)
    algorithm: str = option("grpo", "grpo (group-relative advantages) or rloo (REINFORCE leave-one-out)", choices=("grpo", "rloo"), order=MODEL)
    data: str = option("world", "prompts: 'world' (the toy world's) or a file of prompts, preference pairs or chats", order=DATA)
    beta: float = option(0.04, "β: the KL penalty against the SFT model (0 turns it off and loads no reference)", within="[0, 100]")
    num_generations: int = option(4, "answers sampled per prompt (the group)", within="[2, 1024]")
    max_steps: int = inherit(TrainerArgs, "max_steps", 60)
    batch_size: int = inherit(TrainerArgs, "batch_size", 16, help="answers per step (per device); a multiple of num_generations")
    learning_rate: float = inherit(TrainerArgs, "learning_rate", 2e-5)
    max_completion_length: int = option(48, "longest answer sampled, in tokens", order=TRAINING, within="[1, 65536]")
    temperature: float = option(1.0, "sampling temperature of the rollouts", order=TRAINING, within="(0, 10]")
    loss_type: str = option("dapo", "GRPO's loss aggregation (TRL's): dapo, grpo, dr_grpo, bnpo", choices=("dapo", "grpo", "dr_grpo", "bnpo"), advanced=True)
    num_iterations: int = option(1, "updates per batch of rollouts (μ); above 1 the clipping matters", advanced=True, within="[1, 100]")
    epsilon: float = option(0.2, "clip range of the policy ratio", advanced=True, within="(0, 10]")
    warmup_steps: int = inherit(TrainerArgs, "warmup_steps", 0)
    lr_scheduler: str = inherit(TrainerArgs, "lr_scheduler", "constant_with_warmup")
    logging_steps: int = inherit(TrainerArgs, "logging_steps", 2)
    save_steps: int = inherit(TrainerArgs, "save_steps", 20)
    sample_every: int = option(20, "answer the fixed prompts every N steps (0: never)", advanced=True, within="[0, 10000000]")
    eval_temperature: float = option(0.7, "sampling temperature of the end-of-run comparison with the SFT model", advanced=True, within="(0, 10]")


def check(config: Config) -> None:
    check_training(config)
    if config.batch_size % config.num_generations:
        raise UserError(f"{flag('batch_size')} {config.batch_size} must be a multiple of {flag('num_generations')} {config.num_generations} "
                        f"(e.g. {config.num_generations * max(1, config.batch_size // config.num_generations)})")
    check_parent(config.parent)
    check_usable(config.reward, config.data)
    if world_of(config.data, config.columns) is None:
        prompt_set(config.data, columns=config.columns)


def gold_reward(world):
    """The toy world's gold judge as a TRL reward function."""
    def gold_judge(prompts, completions, **_):
        return [world.judge(p, c[-1]["content"] if isinstance(c, list) else c).score for p, c in zip(prompts, completions)]
    return gold_judge


def run(config: Config, run) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from lab import telemetry

    device = prepare(config, run)
    world = world_of(config.data)
    prompts = prompt_set(config.data, columns=config.columns, rollouts=True)
    model, tokenizer, parent_path = models.load_model(config.parent, AutoModelForCausalLM, config.mode, device)
    print(f"{len(prompts)} prompts; parent {parent_path}; reward {config.reward}; {config.algorithm}, mode {config.mode}, beta {config.beta} on {device}", flush=True)
    baseline = evals.chat(model, tokenizer, evals.comparison_prompts(world), max_new_tokens=48, temperature=config.eval_temperature, seed=config.seed) if world and config.world_evals else None

    if config.reward == "gold":
        reward_funcs, reward_tokenizers, weights = [gold_reward(world)], [None], None
    else:
        reward_model, reward_tokenizer, _ = models.load_model(config.reward, AutoModelForSequenceClassification, "full", device)
        reward_model.eval().requires_grad_(False)
        reward_funcs, reward_tokenizers, weights = [reward_model], [reward_tokenizer], None
        if world is not None:  # the true reward of the same rollouts, logged beside the proxy, never optimised
            reward_funcs.append(gold_reward(world))
            reward_tokenizers.append(None)
            weights = [1.0, 0.0]

    model = for_kbit_training(model, config.mode)
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if config.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    extra = {"loss_type": config.loss_type} if config.algorithm == "grpo" else {}
    args = config_cls(
        **trainer_arguments(config, device, run.path / "trainer", model=model),
        beta=config.beta,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        top_k=0,
        num_iterations=config.num_iterations,
        epsilon=config.epsilon,
        reward_weights=weights,
        **extra,
    )
    callback = telemetry.LabCallback(run, sample=sampler(tokenizer, alignment_prompts(config.data, [{"prompt": p} for p in prompts]), world),
                                     sample_every=config.sample_every, max_minutes=config.max_minutes, cross_entropy=False)
    trainer = trainer_cls(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=tokenizer,
        reward_processing_classes=reward_tokenizers,
        peft_config=lora_config(config, "CAUSAL_LM"),
        callbacks=[callback],
    )
    telemetry.stoppable_generation(trainer.model)

    def evaluate(model) -> dict:
        return evals.alignment_eval(model, tokenizer, world, baseline, config.eval_temperature, config.seed) if baseline is not None else {}

    final = fit(trainer, callback, run, evaluate)
    save_model(trainer.model, tokenizer, run, config, f"Aligned model ({config.algorithm.upper()})", final, parent_path)
    return final
