"""Stage 3b, PPO (proximal policy optimisation): the classic RLHF loop of InstructGPT and TRL ≤ 1.12's
PPOTrainer, written out here because TRL no longer ships a PPOTrainer.

    llm-lab train ppo --parent SFT_RUN --reward REWARD_RUN          # policy from SFT, proxy reward model
    llm-lab train ppo --parent SFT_RUN --reward gold                # the toy world's gold judge as reward
    llm-lab train ppo --parent SFT_RUN --reward DIR --mode lora     # LoRA policy; reference = adapter off
    llm-lab train ppo --parent SFT_RUN --reward RUN --mode lora-8bit --kl-target 6   # 8-bit base, adaptive KL
    llm-lab train ppo --parent DIR --reward DIR --data chats.jsonl   # your prompts (chats, prompt/completion or pairs)

Each rollout batch: the policy samples answers to `batch_size` prompts; the reward model scores each
whole answer; the frozen reference gives a per-token KL penalty, so the reward of a token is
`-kl_coef * KL` plus, on the answer's last token, the score; the critic (value model, initialised
from the reward model) gives per-token values; GAE turns rewards and values into advantages, which
are whitened; then `ppo_epochs` passes over mini-batches minimise the clipped policy loss plus
`vf_coef` times the clipped value loss. Metrics keep TRL's names (objective/kl, objective/scores,
objective/rlhf_reward, policy/approxkl_avg, loss/value_avg, ...), plus gold/score on the toy world:
the true preference, next to the proxy the policy optimises.

Saves `model/` (full) or `adapter/` (LoRA). On the toy world it ends with the chat evals and the win
rate against the SFT model, as DPO and GRPO do.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from lab import evals, models, telemetry
from lab.configs import option
from lab.errors import UserError
from lab.stages import check_parent, parent_run_id, prepare, prompt_set, save_policy, world_of
from lab.tokenizers import end_of_turn_id

MODES = ("full", "lora", "lora-8bit")


@dataclass
class Config:
    parent: str = option("", "the policy to start from: an SFT run (model/ or LoRA adapter/), a local model folder, or a hub id")
    reward: str = option("", "a reward run or reward-model folder (…ForSequenceClassification, one output), or 'gold': the toy world's gold judge")
    mode: str = option("full", "train the whole policy and critic, or LoRA adapters on a full or 8-bit base", choices=MODES)
    data: str = option("world", "prompts: 'world' (the toy world's) or a file of prompts, preference pairs or chats")
    max_steps: int = option(50, "rollout batches (each: sample, score, then ppo_epochs passes of updates)")
    batch_size: int = option(16, "prompts per rollout batch")
    mini_batch_size: int = option(4, "rollouts per optimizer step; must divide batch_size")
    ppo_epochs: int = option(4, "passes over each rollout batch")
    learning_rate: float = option(3e-5, "AdamW learning rate for policy and critic, decayed linearly to 0")
    # 0.2, not TRL's 0.05: on the toy world a 3M-parameter reward model has blind spots, and at 0.05-0.1 the policy
    # drifted 6-9 nats from the SFT model into answers it overrates ("Happy to help help."): refusals fell to 39-68%
    # on some seeds; at 0.2 win 75-78%, refusals 92-100% on two seeds (bench/RESULTS.md)
    kl_coef: float = option(0.2, "β: weight of the per-token KL penalty against the reference (initial value when kl_target > 0)")
    kl_target: float = option(0.0, "adaptive KL: steer kl_coef so that KL per answer stays near this (0: fixed kl_coef)")
    response_length: int = option(48, "most tokens sampled per answer")
    temperature: float = option(0.7, "sampling temperature of the rollouts")
    missing_eos_penalty: float = option(1.0, "subtracted from the score of an answer that did not close its turn (0: off)")
    cliprange: float = option(0.2, "policy ratio clip ε", advanced=True)
    cliprange_value: float = option(0.2, "how far a value may move from its rollout value before it is clipped", advanced=True)
    vf_coef: float = option(0.1, "weight of the value loss", advanced=True)
    gamma: float = option(1.0, "discount", advanced=True)
    lam: float = option(0.95, "GAE λ", advanced=True)
    whiten_rewards: bool = option(False, "whiten the per-token rewards of each rollout batch", advanced=True)
    kl_horizon: int = option(10000, "adaptive KL: rollouts over which kl_coef may move by up to a fifth", advanced=True)
    max_grad_norm: float = option(1.0, "clip the gradient norm of each update (0: off)", advanced=True)
    max_prompt_length: int = option(128, "tokens of prompt kept (longer prompts lose their start)", advanced=True)
    forward_batch_size: int = option(16, "rollouts per no-grad pass of the reference and critic (memory against speed)", advanced=True)
    lora_r: int = option(16, "LoRA rank (policy and critic)", advanced=True)
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / r)", advanced=True)
    lora_targets: str = option("all-linear", "modules that get adapters: all-linear, or comma-separated names (q_proj,v_proj)", advanced=True)
    logging_steps: int = option(1, "log metrics every N rollout batches (averaged over them)", advanced=True)
    sample_every: int = option(5, "write a few rollouts to samples.jsonl every N rollout batches (0: never)", advanced=True)
    eval_temperature: float = option(0.7, "sampling temperature of the end-of-run comparison with the SFT model", advanced=True)
    max_minutes: float = option(0.0, "stop (and save) after this many minutes of training (0: no limit)", advanced=True)
    seed: int = option(0, "random seed", advanced=True)
    device: str = option("auto", "auto (cuda > mps > cpu), cpu, cuda, mps", advanced=True)
    threads: int = option(0, "CPU threads for torch (0: torch's default)", advanced=True)
    name: str = option("", "a name for the run (default: its id)", advanced=True)


# ------------------------------------------------------------------------------------------------
# The math, as pure functions on [batch, response tokens] tensors. `mask` is 1 on the answer's tokens
# up to and including its end-of-turn token, 0 on the padding after it.


def response_mask(responses: torch.Tensor, stop_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(responses with everything after the first `stop_id` replaced by `pad_id`, their mask).
    The stop token itself stays: choosing to end the turn is an action the policy is credited for."""
    is_stop = responses == stop_id
    after_stop = (is_stop.long().cumsum(1) - is_stop.long()) > 0  # strictly after the first stop
    mask = (~after_stop).float()
    return responses.masked_fill(after_stop, pad_id), mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Zero mean, unit variance over the masked entries (unbiased variance, as TRL). With
    shift_mean=False the mean is put back: rewards keep their sign, only their scale changes."""
    mean = masked_mean(values, mask)
    n = mask.sum()
    var = masked_mean((values - mean) ** 2, mask) * (n / (n - 1) if n > 1 else 1.0)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


def per_token_rewards(scores, logprobs, ref_logprobs, mask, kl_coef: float):
    """-> (rewards, kl, non_score_reward). KL per token is the k1 estimator log π(a) − log π_ref(a) of
    the sampled token; the penalty −kl_coef·KL lands on every token and the reward model's score on
    the last real token (the end of turn, or the last sampled token when the answer ran out)."""
    kl = (logprobs - ref_logprobs) * mask
    non_score_reward = -kl_coef * kl
    rewards = non_score_reward.clone()
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(rewards)), last] += scores
    return rewards, kl, non_score_reward


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation -> (advantages, returns). Values past the answer's end count
    as 0, so the last real token bootstraps from nothing: its advantage is reward − value."""
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(next_advantage)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = next_advantage
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(logprobs, old_logprobs, advantages, mask, cliprange: float) -> dict:
    """PPO's clipped surrogate: max(−A·r, −A·clip(r, 1−ε, 1+ε)), averaged over real tokens.
    clipfrac: share of tokens where the clipped term won; approxkl: ½·mean((log r)²)."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approxkl = 0.5 * masked_mean(log_ratio**2, mask)
        ratio_mean = masked_mean(ratio, mask)
    return {"loss": masked_mean(torch.max(unclipped, clipped), mask), "clipfrac": clipfrac, "approxkl": approxkl, "ratio": ratio_mean}


def value_loss(values, old_values, returns, mask, cliprange_value: float) -> dict:
    """½·max((V − R)², (V_clipped − R)²) over real tokens, V_clipped kept within cliprange_value of
    the rollout's value, so that one batch cannot drag the critic far. clipfrac as above."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return {"loss": 0.5 * masked_mean(torch.max(unclipped, clipped), mask), "clipfrac": clipfrac}


class KLController:
    """β for the KL penalty. With a target (Ziegler et al. 2019), β moves by a proportional error
    clipped to ±20%, scaled by the rollouts seen over a horizon: KL above target raises β."""

    def __init__(self, kl_coef: float, target: float = 0.0, horizon: int = 10000):
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, kl: float, n_rollouts: int) -> float:
        if self.target > 0:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_rollouts / self.horizon
        return self.value


# ------------------------------------------------------------------------------------------------
# Forward passes. Prompts are left-padded and answers right-padded, so positions come from the mask
# (as generate computes them): every forward sees a token at the position it was sampled at.


def _positions(attention_mask):
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


def token_logprobs(model, input_ids, attention_mask, n_prompt: int, temperature: float, with_entropy: bool = False):
    """Log-probabilities (and entropies) of the answer tokens under `model` at `temperature`, the
    distribution the rollouts were sampled from."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=_positions(attention_mask)).logits
    logits = logits[:, n_prompt - 1 : -1].float() / temperature
    logp = logits.log_softmax(-1)
    picked = logp.gather(-1, input_ids[:, n_prompt:].unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return picked
    return picked, -(logp.exp() * logp).sum(-1)


def token_scores(model, input_ids, attention_mask):
    """The critic's values: a sequence-classification model (a reward model) read at every position,
    backbone hidden states → its score head, instead of at the last token only."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = getattr(inner, "score", None)
    if head is None:
        raise UserError(f"{type(inner).__name__} has no `score` head to read per token: the critic starts from the reward model, "
                         "which must be a decoder …ForSequenceClassification (e.g. LlamaForSequenceClassification)")
    backbone = getattr(inner, inner.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=_positions(attention_mask)).last_hidden_state
    return head(hidden).squeeze(-1).float()


class _StopOnRequest(StoppingCriteria):
    """Ends generation at the next token when a stop is requested, so a long rollout does not hold
    the job past the UI's grace period."""

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), telemetry.stop_requested(), dtype=torch.bool, device=input_ids.device)


def _turns(prompt) -> list[dict]:
    """A prompt is a user message, or a chat (list of turns) ending with the user's."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def _text(prompt) -> str:
    return prompt if isinstance(prompt, str) else next(t["content"] for t in reversed(prompt) if t["role"] == "user")


def encode_prompts(tokenizer, prompts: list, max_length: int, device):
    side, trunc = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"  # keep the generation prompt
    try:
        texts = [tokenizer.apply_chat_template(_turns(p), tokenize=False, add_generation_prompt=True) for p in prompts]
        return tokenizer(texts, padding=True, truncation=True, max_length=max_length, add_special_tokens=False, return_tensors="pt").to(device)
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = side, trunc


# ------------------------------------------------------------------------------------------------
# The loop


def _mean(rows: list[dict]) -> dict:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def train(policy, reference, critic, tokenizer, reward_fn, prompts: list, config: Config, run=None, judge=None) -> dict:
    """PPO on `prompts` (user messages, or chats ending with the user's turn). `reference=None` means
    the policy with its LoRA adapter disabled. `reward_fn(prompts, answers) -> scores`;
    `judge(prompt, answer) -> float` (optional) adds gold/score. Logs to `run` (optional).
    Returns the per-rollout-batch history and how it ended."""
    device = next(policy.parameters()).device
    stop_id = end_of_turn_id(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_id
    params = [p for m in (policy, critic) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / config.max_steps))
    kl_ctl = KLController(config.kl_coef, config.kl_target, config.kl_horizon)
    # Plain sampling at `temperature`. Every warper is set explicitly, because generate fills the fields
    # left unset from the model's own generation_config (a hub model's repetition penalty or top-p would
    # make the rollouts come from another distribution than the one PPO optimises). The scores it
    # returns are then that distribution's logits: the rollout's log-probs, without a forward pass.
    sampling = GenerationConfig(
        max_new_tokens=config.response_length, do_sample=True, temperature=config.temperature, top_k=0, top_p=1.0,
        min_p=0.0, typical_p=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
        eos_token_id=stop_id, pad_token_id=pad_id, output_scores=True, return_dict_in_generate=True,
    )
    # No dropout, one mode: the log-probs of the rollout and of the first update are the same numbers
    # (up to float rounding), so the ratio starts at 1 and measures only what the updates changed.
    for m in (policy, reference, critic):
        if m is not None:
            for module in m.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
            m.eval()

    def reference_logprobs(ids, att, n_prompt):
        if reference is not None:
            return token_logprobs(reference, ids, att, n_prompt, config.temperature)
        with policy.disable_adapter():
            return token_logprobs(policy, ids, att, n_prompt, config.temperature)

    rng = random.Random(config.seed)
    order: list[int] = []
    history: list[dict] = []
    window: list[dict] = []
    stopped = timed_out = False
    t_start = t_window = time.time()
    step = 0

    def flush():
        nonlocal window, t_window
        if not window:
            return
        now = time.time()
        logged = {"step": step, "episode": step * config.batch_size, **_mean(window),
                  "samples_per_second": len(window) * config.batch_size / max(now - t_window, 1e-9), "elapsed": now - t_start}
        if run is not None:
            run.log_metrics(logged)
        print(" ".join(f"{k}={v:.4g}" for k, v in logged.items() if k in ("step", "objective/scores", "objective/kl", "gold/score", "loss/value_avg")), flush=True)
        window, t_window = [], now

    def stop_now(where: str) -> bool:
        nonlocal stopped
        if not stopped and telemetry.stop_requested():
            stopped = True
            print(f"stop requested: rollout batch {step + 1} ends {where}; saving the policy of its last update", flush=True)
        return stopped

    while step < config.max_steps and not stop_now("before it starts"):
        t0 = time.time()
        if len(order) < config.batch_size:
            fresh = list(range(len(prompts)))
            rng.shuffle(fresh)
            order += fresh * max(1, math.ceil(config.batch_size / len(fresh)))
        batch_prompts = [prompts[i] for i in order[: config.batch_size]]
        del order[: config.batch_size]

        # 1. rollout: sample answers with the policy
        enc = encode_prompts(tokenizer, batch_prompts, config.max_prompt_length, device)
        n_prompt = enc["input_ids"].shape[1]
        with torch.no_grad():
            out = policy.generate(**enc, generation_config=sampling, stopping_criteria=StoppingCriteriaList([_StopOnRequest()]))
        if stop_now("after sampling"):
            break
        responses, mask = response_mask(out.sequences[:, n_prompt:], stop_id, pad_id)
        logprobs = torch.stack(out.scores, 1).float().log_softmax(-1).gather(-1, responses.unsqueeze(-1)).squeeze(-1) * mask
        del out
        ended = (responses == stop_id).any(1)
        answers = [tokenizer.decode(r[: int(m.sum())], skip_special_tokens=True).strip() for r, m in zip(responses, mask)]

        # 2. score the whole answers
        scores = torch.tensor(reward_fn(batch_prompts, answers), dtype=torch.float, device=device)
        if not torch.isfinite(scores).all():
            raise telemetry.Diverged(f"the reward function returned {scores.tolist()} at rollout batch {step + 1}: a reward model gone NaN cannot guide PPO; retrain it with a lower learning rate")
        scores = scores - config.missing_eos_penalty * (~ended).float()
        gold = [judge(p, a) for p, a in zip(batch_prompts, answers)] if judge else None
        if stop_now("after scoring"):
            break

        # 3. log-probs of the reference, values of the critic; then rewards and advantages
        ids = torch.cat([enc["input_ids"], responses], 1)
        att = torch.cat([enc["attention_mask"], mask.long()], 1)
        ref_logprobs, values = [], []
        with torch.no_grad():
            for i in range(0, len(ids), config.forward_batch_size):
                sl = slice(i, i + config.forward_batch_size)
                ref_logprobs.append(reference_logprobs(ids[sl], att[sl], n_prompt))
                values.append(token_scores(critic, ids[sl], att[sl])[:, n_prompt - 1 : -1])
            ref_logprobs, values = torch.cat(ref_logprobs) * mask, torch.cat(values) * mask
            rewards, kl, non_score_reward = per_token_rewards(scores, logprobs, ref_logprobs, mask, kl_ctl.value)
            if config.whiten_rewards:
                rewards = whiten(rewards, mask, shift_mean=False)
            advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)
            advantages = whiten(advantages, mask)
        t_rollout = time.time() - t0

        # 4. PPO epochs over shuffled mini-batches
        stats = []
        for _ in range(config.ppo_epochs):
            for idx in torch.randperm(len(ids)).split(config.mini_batch_size):
                if stop_now(f"after {len(stats)} of its {config.ppo_epochs * len(ids) // config.mini_batch_size} updates"):
                    break
                m = mask[idx]
                new_logprobs, entropy = token_logprobs(policy, ids[idx], att[idx], n_prompt, config.temperature, with_entropy=True)
                new_values = token_scores(critic, ids[idx], att[idx])[:, n_prompt - 1 : -1]
                pg = policy_loss(new_logprobs, logprobs[idx], advantages[idx], m, config.cliprange)
                vf = value_loss(new_values, values[idx], returns[idx], m, config.cliprange_value)
                loss = pg["loss"] + config.vf_coef * vf["loss"]
                if not torch.isfinite(loss):
                    raise telemetry.Diverged(
                        f"PPO diverged: loss is {loss.item()} at rollout batch {step + 1}. Lower the learning rate, "
                        "keep max_grad_norm on, or raise kl_coef"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                stats.append({
                    "policy/approxkl_avg": pg["approxkl"].item(), "policy/clipfrac_avg": pg["clipfrac"].item(),
                    "loss/policy_avg": pg["loss"].item(), "loss/value_avg": vf["loss"].item(),
                    "val/clipfrac_avg": vf["clipfrac"].item(), "policy/entropy_avg": masked_mean(entropy, m).item(),
                    "val/ratio": pg["ratio"].item(),
                })
            if stopped:
                break
        if not stats:  # stopped before the first update of this batch: nothing learned from it
            break
        step += 1
        lr = schedule.get_last_lr()[0]
        schedule.step()
        mean_kl = kl.sum(1).mean().item()
        kl_coef = kl_ctl.value
        kl_ctl.update(mean_kl, len(ids))

        row = {
            "objective/kl": mean_kl,
            "objective/entropy": (-logprobs * mask).sum(1).mean().item(),
            "objective/non_score_reward": non_score_reward.sum(1).mean().item(),
            "objective/rlhf_reward": non_score_reward.sum(1).mean().item() + scores.mean().item(),
            "objective/scores": scores.mean().item(),
            **_mean(stats),
            "val/num_eos_tokens": float(ended.sum().item()),
            "lr": lr,
            "time/rollout": t_rollout,
            "time/update": time.time() - t0 - t_rollout,
            **({"gold/score": sum(gold) / len(gold)} if gold else {}),
            **({"kl_coef": kl_coef} if config.kl_target > 0 else {}),
        }
        history.append(row)
        window.append(row)
        if run is not None and config.sample_every and (step % config.sample_every == 0 or step == 1):
            for i in range(min(4, len(answers))):
                run.log_sample({"step": step, "time": time.time(), "prompt": _text(batch_prompts[i]), "response": answers[i], "score": scores[i].item(),
                                **({"gold": gold[i]} if gold else {}), "kl": kl[i].sum().item()})
        if config.max_minutes and time.time() - t_start >= config.max_minutes * 60:
            timed_out = True
        if step % config.logging_steps == 0 or step == config.max_steps or timed_out or stopped:
            flush()
        if timed_out:
            break
    flush()  # a stop ends the loop between logging steps: the last partial window still reaches the curve
    return {"steps": step, "episodes": step * config.batch_size, "history": history, "stopped": stopped, "timed_out": timed_out, "kl_coef": kl_ctl.value}


# ------------------------------------------------------------------------------------------------
# The stage: prompts, policy, reference, reward model and critic from the config



def parent_of(config: Config) -> str | None:
    return parent_run_id(config.parent)


def _reward_folder(config: Config) -> str:
    """The reward model's path, or a ValueError saying what to pass instead."""
    path = check_parent(config.reward, "--reward")
    folder = Path(path)
    if not folder.is_dir():  # a hub id: from_pretrained will tell
        return path
    if not (folder / "config.json").exists():  # check_parent let a LoRA adapter through
        raise UserError(f"--reward {config.reward}: {folder} holds a LoRA adapter: export the reward run with "
                         "`llm-lab export RUN --merge` and pass the merged folder")
    cfg = json.loads((folder / "config.json").read_text())
    archs = cfg.get("architectures") or ["an unknown architecture"]
    labels = len(cfg.get("id2label") or {0: ""})
    if not any(a.endswith("ForSequenceClassification") for a in archs) or labels != 1:
        raise UserError(
            f"--reward {config.reward}: {folder} holds {archs[0]}{f' with {labels} labels' if labels != 1 else ''}, not a reward "
            "model (a …ForSequenceClassification with one output): train one with `llm-lab train reward --parent SFT_RUN`, "
            "or use --reward gold on the toy world"
        )
    return path


def check(config: Config) -> None:
    for name in ("max_steps", "batch_size", "mini_batch_size", "ppo_epochs", "response_length", "logging_steps", "forward_batch_size"):
        if getattr(config, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if config.batch_size % config.mini_batch_size:
        raise UserError(f"--mini-batch-size {config.mini_batch_size} must divide --batch-size {config.batch_size}")
    if config.temperature <= 0:
        raise UserError("--temperature must be above 0: PPO learns from sampled answers")
    device = models.pick_device(config.device)
    check_parent(config.parent)
    if config.reward == "gold":
        if world_of(config.data) is None:
            raise UserError("--reward gold is the toy world's judge: it scores only the toy world's prompts (--data world); "
                             "for your prompts pass a reward model")
    elif not config.reward:
        raise UserError("--reward is required: a reward run (`llm-lab train reward --parent SFT_RUN`), a reward-model folder, or 'gold'")
    else:
        _reward_folder(config)
    if config.mode in models.QUANTIZED:
        models.require_bitsandbytes(config.mode, device)
    if world_of(config.data) is None:
        prompt_set(config.data)


def _lora(model, config: Config, task_type: str):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.mode in models.QUANTIZED:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets = config.lora_targets if config.lora_targets == "all-linear" else [t.strip() for t in config.lora_targets.split(",") if t.strip()]
    # no LoRA dropout: the PPO ratio must compare the same function at rollout and at update
    return get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=targets, task_type=task_type))


def run(config: Config, run) -> dict:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    device = prepare(config, run)
    world = world_of(config.data)
    prompts = prompt_set(config.data)
    lora = config.mode != "full"

    def load(ref, auto_cls, mode, **kwargs):  # a quantized model is placed on its device as it loads
        model, tokenizer, path = models.load_model(ref, auto_cls, mode, device, **kwargs)
        return (model if mode in models.QUANTIZED else model.to(device)), tokenizer, path

    # the policy, and the reference it is held to
    policy, tokenizer, parent_path = load(config.parent, AutoModelForCausalLM, config.mode)
    baseline = evals.chat(policy, tokenizer, evals.comparison_prompts(world), max_new_tokens=48, temperature=config.eval_temperature, seed=config.seed) if world else None
    if lora:
        policy, reference = _lora(policy, config, "CAUSAL_LM"), None
    else:
        reference = load(parent_path, AutoModelForCausalLM, "full")[0].requires_grad_(False)
    n_trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)

    # the reward, and the critic that learns to predict it per token
    critic_from = parent_path
    if config.reward == "gold":
        def reward_fn(batch_prompts, answers):
            return [world.judge(p, a).score for p, a in zip(batch_prompts, answers)]
    else:
        reward_model, reward_tokenizer, reward_path = load(_reward_folder(config), AutoModelForSequenceClassification, "full")
        reward_model.eval().requires_grad_(False)

        def reward_fn(batch_prompts, answers):
            chats = [_turns(p) + [{"role": "assistant", "content": a}] for p, a in zip(batch_prompts, answers)]
            return evals.reward_scores(reward_model, reward_tokenizer, chats)

        # the critic reads the policy's tokens: it can start from the reward model only if they share a vocabulary
        if reward_tokenizer.get_vocab() == tokenizer.get_vocab():
            critic_from = reward_path
        else:
            print("the reward model's vocabulary differs from the policy's: the critic starts from the policy's weights", flush=True)
    critic = load(critic_from, AutoModelForSequenceClassification, config.mode, num_labels=1)[0]
    critic = _lora(critic, config, "SEQ_CLS") if lora else critic
    judge = (lambda p, a: world.judge(p, a).score) if world is not None else None
    print(f"{len(prompts)} prompts; policy {parent_path} ({config.mode}, {n_trainable:,} trainable); reward {config.reward}; "
          f"critic from {critic_from}; on {device}", flush=True)

    result = train(policy, reference, critic, tokenizer, reward_fn, prompts, config, run=run, judge=judge)
    last = result["history"][-1] if result["history"] else {}
    final = {"steps": result["steps"], "episodes": result["episodes"], "trainable_parameters": n_trainable,
             **{k: last[k] for k in ("objective/scores", "objective/kl", "objective/rlhf_reward", "gold/score") if k in last}}
    if world is not None and not result["stopped"]:  # a stopped run saves at once
        final.update(evals.alignment_eval(policy, tokenizer, world, baseline, config.eval_temperature, config.seed))
        run.log_metrics({"step": result["steps"], **{k: v for k, v in final.items() if k.startswith("eval/")}})
    save_policy(policy, tokenizer, run, config, parent_path, "Aligned model (PPO)", final)
    return final
