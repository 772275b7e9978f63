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

import shutil
from dataclasses import dataclass

from lab import evals, models, telemetry
from lab.configs import option
from lab.errors import UserError
from lab.stages import alignment_prompts, check_parent, parent_run_id, prepare, prompt_set, sampler, save_policy, trainer_arguments, world_of

MODES = ("full", "lora", "lora-8bit", "lora-4bit")


@dataclass
class Config:
    parent: str = option("", "the SFT model: an SFT run, a local model folder, or a hub id")
    reward: str = option("", "the reward: a reward run or a reward-model folder, or 'gold' (the toy world's gold judge)")
    algorithm: str = option("grpo", "grpo (group-relative advantages) or rloo (REINFORCE leave-one-out)", choices=("grpo", "rloo"))
    mode: str = option("full", "full fine-tuning, or a LoRA adapter on a full, 8-bit or 4-bit base", choices=MODES)
    data: str = option("world", "prompts: 'world' (the toy world's) or a file of prompts, preference pairs or chats")
    beta: float = option(0.04, "β: the KL penalty against the SFT model (0 turns it off and loads no reference)")
    num_generations: int = option(4, "answers sampled per prompt (the group)")
    max_steps: int = option(60, "optimizer steps (0: train for `epochs` instead)")
    batch_size: int = option(16, "answers per step (per device); a multiple of num_generations")
    learning_rate: float = option(2e-5, "peak learning rate")
    max_completion_length: int = option(48, "longest answer sampled, in tokens")
    temperature: float = option(1.0, "sampling temperature of the rollouts")
    loss_type: str = option("dapo", "GRPO's loss aggregation (TRL's): dapo, grpo, dr_grpo, bnpo", choices=("dapo", "grpo", "dr_grpo", "bnpo"), advanced=True)
    num_iterations: int = option(1, "updates per batch of rollouts (μ); above 1 the clipping matters", advanced=True)
    epsilon: float = option(0.2, "clip range of the policy ratio", advanced=True)
    lora_r: int = option(16, "LoRA rank", advanced=True)
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / r)", advanced=True)
    lora_dropout: float = option(0.0, "LoRA dropout", advanced=True)
    epochs: float = option(1.0, "passes over the prompts when max_steps is 0", advanced=True)
    warmup_steps: int = option(0, "linear warm-up steps", advanced=True)
    lr_scheduler: str = option("constant_with_warmup", "learning-rate schedule after warm-up", choices=("cosine", "linear", "constant_with_warmup"), advanced=True)
    weight_decay: float = option(0.0, "AdamW weight decay", advanced=True)
    logging_steps: int = option(2, "log metrics every N steps", advanced=True)
    sample_every: int = option(20, "answer the fixed prompts every N steps (0: never)", advanced=True)
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
    if config.num_generations < 2:
        raise UserError(f"--num-generations {config.num_generations}: a group needs at least 2 answers to compare")
    if config.batch_size % config.num_generations:
        raise UserError(f"--batch-size {config.batch_size} must be a multiple of --num-generations {config.num_generations} "
                         f"(e.g. {config.num_generations * max(1, config.batch_size // config.num_generations)})")
    device = models.pick_device(config.device)
    check_parent(config.parent)
    if config.mode in models.QUANTIZED:
        models.require_bitsandbytes(config.mode, device)
    check_reward(config.reward, config.data)
    if world_of(config.data) is None:
        prompt_set(config.data)


def check_reward(reward: str, data: str) -> None:
    if reward == "gold":
        if world_of(data) is None:
            raise UserError("--reward gold is the toy world's judge: it scores only the toy world's prompts (--data world)")
        return
    if not reward:
        raise UserError("--reward is required: a reward run (`llm-lab train reward --parent SFT_RUN`), a reward-model folder, or 'gold'")
    path = check_parent(reward, "--reward")
    import json
    from pathlib import Path

    config = json.loads((Path(path) / "config.json").read_text()) if (Path(path) / "config.json").exists() else {}
    if not any(a.endswith("ForSequenceClassification") for a in config.get("architectures", [])):
        raise UserError(f"--reward {reward}: {path} is not a reward model (its architecture is "
                         f"{', '.join(config.get('architectures', [])) or 'unknown'}); train one with `llm-lab train reward`")


def gold_reward(world):
    """The toy world's gold judge as a TRL reward function."""
    def gold_judge(prompts, completions, **_):
        return [world.judge(p, c[-1]["content"] if isinstance(c, list) else c).score for p, c in zip(prompts, completions)]
    return gold_judge


def run(config: Config, run) -> dict:
    from datasets import Dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    device = prepare(config, run)
    world = world_of(config.data)
    prompts = prompt_set(config.data)
    model, tokenizer, parent_path = models.load_model(config.parent, AutoModelForCausalLM, config.mode, device)
    print(f"{len(prompts)} prompts; parent {parent_path}; reward {config.reward}; {config.algorithm}, mode {config.mode}, beta {config.beta} on {device}", flush=True)
    baseline = evals.chat(model, tokenizer, evals.comparison_prompts(world), max_new_tokens=48, temperature=config.eval_temperature, seed=config.seed) if world else None

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

    if config.mode in models.QUANTIZED:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_config = None
    if config.mode != "full":
        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules="all-linear", task_type="CAUSAL_LM")

    scratch = run.path / "trainer"
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if config.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    extra = {"loss_type": config.loss_type} if config.algorithm == "grpo" else {}
    args = config_cls(
        **trainer_arguments(config, device, scratch),
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
        peft_config=peft_config,
        callbacks=[callback],
    )
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    telemetry.stoppable_generation(trainer.model)
    try:
        output = trainer.train()
        final = {"train_loss": output.training_loss, "train_runtime": output.metrics.get("train_runtime")}
    except telemetry.StopRequested:
        print(f"stop requested: rollout abandoned at step {trainer.state.global_step}; saving the policy of that step", flush=True)
        final = {}
    callback.raise_if_diverged()
    final.update(steps=trainer.state.global_step, trainable_parameters=n_trainable)
    model = trainer.model
    if world is not None and not telemetry.stop_requested():  # a stopped run saves at once
        final.update(evals.alignment_eval(model, tokenizer, world, baseline, config.eval_temperature, config.seed))
        run.log_metrics({"step": trainer.state.global_step, **{k: v for k, v in final.items() if k.startswith("eval/")}})
    save_policy(model, tokenizer, run, config, parent_path, f"Aligned model ({config.algorithm.upper()})", final)
    shutil.rmtree(scratch, ignore_errors=True)
    return final
