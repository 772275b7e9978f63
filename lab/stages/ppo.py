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

import math
import random
import threading
import time
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from lab import distributed, evals, jobs, models, runs
from lab.configs import DATA, MODEL, TRAINING, inherit, option
from lab.errors import Diverged, UserError, flag
from lab.stages import Stage, check_parent, prompt_set, world_of
from lab.stages.base import DataArgs, LoraArgs, TrainArgs, check_training, for_kbit_training, lora_config, prepare, save_model
from lab.stages.reward import GOLD, check_usable
from lab.tokenizers import end_of_turn_id

STAGE = Stage(label="PPO", page="Align", data="prompts", produces="chat", curves=("reward", "kl", "loss"))


@dataclass
class Config(DataArgs, LoraArgs, TrainArgs):
    parent: str = option("", "the policy to start from: an SFT run (model/ or LoRA adapter/), a local model folder, or a hub id", order=MODEL, runs=("sft",))
    reward: str = option("", "a reward run or reward-model folder (…ForSequenceClassification, one output), or 'gold': the toy world's gold judge", order=MODEL, runs=("reward",), offers=GOLD)
    mode: str = inherit(LoraArgs, "mode", "full", choices=("full", "lora", "lora-8bit"), help="train the whole policy and critic, or LoRA adapters on a full or 8-bit base")
    data: str = option("world", "prompts: 'world' (the toy world's) or a file of prompts, preference pairs or chats", order=DATA)
    max_steps: int = inherit(TrainArgs, "max_steps", 50, help="rollout batches (each: sample, score, then ppo_epochs passes of updates)", within="[1, 10000000]")
    batch_size: int = inherit(TrainArgs, "batch_size", 16, help="prompts per rollout batch")
    mini_batch_size: int = option(4, "rollouts per optimizer step; must divide batch_size", order=TRAINING, within="[1, 65536]")
    ppo_epochs: int = option(4, "passes over each rollout batch", order=TRAINING, within="[1, 100]")
    learning_rate: float = inherit(TrainArgs, "learning_rate", 3e-5, help="AdamW learning rate for policy and critic, decayed linearly to 0")
    # 0.2, not TRL's 0.05: a small reward model has blind spots, and with less the policy drifted into answers it
    # overrates (bench/RESULTS.md, "Alignment quality with default settings")
    kl_coef: float = option(0.2, "β: weight of the per-token KL penalty against the reference (initial value when kl_target > 0)", within="[0, 100]")
    kl_target: float = option(0.0, "adaptive KL: steer kl_coef so that KL per answer stays near this (0: fixed kl_coef)", within="[0, 1000]")
    response_length: int = option(48, "most tokens sampled per answer", within="[1, 65536]")
    temperature: float = option(0.7, "sampling temperature of the rollouts", within="(0, 10]")
    missing_eos_penalty: float = option(1.0, "subtracted from the score of an answer that did not close its turn (0: off)", within="[0, 100]")
    cliprange: float = option(0.2, "policy ratio clip ε", advanced=True, within="(0, 10]")
    cliprange_value: float = option(0.2, "how far a value may move from its rollout value before it is clipped", advanced=True, within="(0, 1000]")
    vf_coef: float = option(0.1, "weight of the value loss", advanced=True, within="[0, 100]")
    gamma: float = option(1.0, "discount", advanced=True, within="[0, 1]")
    lam: float = option(0.95, "GAE λ", advanced=True, within="[0, 1]")
    whiten_rewards: bool = option(False, "whiten the per-token rewards of each rollout batch", advanced=True)
    kl_horizon: int = option(10000, "adaptive KL: rollouts over which kl_coef may move by up to a fifth", advanced=True, within="[1, 1000000000]")
    max_grad_norm: float = option(1.0, "clip the gradient norm of each update (0: off)", advanced=True, within="[0, 1000000]")
    max_prompt_length: int = option(128, "tokens of prompt kept (longer prompts lose their start)", advanced=True, within="[1, 1048576]")
    forward_batch_size: int = option(16, "rollouts per no-grad pass of the reference and critic (memory against speed)", advanced=True, within="[1, 65536]")
    logging_steps: int = inherit(TrainArgs, "logging_steps", 1, help="log metrics every N rollout batches (averaged over them)")
    save_steps: int = inherit(TrainArgs, "save_steps", 10, help="save a resumable checkpoint every N rollout batches (0: none); a stop saves one too")
    sample_every: int = option(5, "write a few rollouts to samples.jsonl every N rollout batches (0: never)", advanced=True, within="[0, 10000000]")
    eval_temperature: float = option(0.7, "sampling temperature of the end-of-run comparison with the SFT model", advanced=True, within="(0, 10]")


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
    # Only the answer's logits: the LM head's product at the prompt's positions would be thrown away, and in
    # the updates differentiated too.
    keep = input_ids.shape[1] - n_prompt + 1
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=_positions(attention_mask), **models.only_last_logits(model, keep)).logits
    logits = logits[:, -keep:-1].float() / temperature
    # the picked token's logit less the log-normaliser: the full [batch, tokens, vocabulary] log-softmax is
    # never kept for the backward pass
    picked = logits.gather(-1, input_ids[:, n_prompt:].unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    if not with_entropy:
        return picked
    with torch.no_grad():  # a statistic, never a loss term
        logp = logits.log_softmax(-1)
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
        return torch.full((input_ids.shape[0],), jobs.stop_requested(), dtype=torch.bool, device=input_ids.device)


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


@dataclass
class Rollout:
    """One batch of experience: the prompts, the answers sampled for them, and what the updates read of them
    ([batch, answer tokens] tensors unless said otherwise)."""

    prompts: list
    answers: list[str]
    ids: torch.Tensor  # [batch, prompt + answer tokens]
    att: torch.Tensor
    n_prompt: int
    mask: torch.Tensor
    ended: torch.Tensor  # [batch]: the answer closed its turn
    logprobs: torch.Tensor  # the policy's, at sampling time
    scores: torch.Tensor | None = None  # [batch]: the reward model's, less the missing-eos penalty
    gold: list[float] | None = None
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    non_score_reward: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    def mini_batch(self, idx: torch.Tensor) -> Rollout:
        """Its rows `idx`, less the columns that are padding in every one of them (the prompts' left, the answers'
        right): the same tokens at the same positions, so the same log-probs and values, on a smaller tensor.
        A rollout pads its answers to its longest, and a mini-batch's longest is often much shorter."""
        att = self.att[idx]
        start = int(att[:, : self.n_prompt].argmax(1).min())  # the first real prompt token of any row
        end = self.n_prompt + max(1, int(self.mask[idx].sum(1).max()))
        per_token = {name: getattr(self, name)[idx, : end - self.n_prompt] for name in
                     ("mask", "logprobs", "ref_logprobs", "values", "rewards", "kl", "non_score_reward", "advantages", "returns")
                     if getattr(self, name) is not None}
        rows = idx.tolist()
        return Rollout(prompts=[self.prompts[i] for i in rows], answers=[self.answers[i] for i in rows], ids=self.ids[idx, start:end],
                       att=att[:, start:end], n_prompt=self.n_prompt - start, ended=self.ended[idx],
                       scores=None if self.scores is None else self.scores[idx], gold=None if self.gold is None else [self.gold[i] for i in rows],
                       **per_token)


class PPO:
    """The policy, its reference and the critic, with the optimizer and the KL controller: `rollout`
    samples a batch, `score` and `advantages` turn it into experience, `update` runs the PPO epochs on it.
    `reference=None` means the policy with its LoRA adapter disabled."""

    def __init__(self, policy, reference, critic, tokenizer, config: Config):
        self.policy, self.reference, self.critic, self.tokenizer, self.config = policy, reference, critic, tokenizer, config
        self.device = next(policy.parameters()).device
        self.stop_id = end_of_turn_id(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_id
        self.params = [p for m in (policy, critic) for p in m.parameters() if p.requires_grad]
        # fused where torch has the kernel (CPU and CUDA): one kernel per tensor instead of a dozen ops, which at
        # these sizes is most of a step's time; the same update as the unfused AdamW, up to float rounding
        fused = {"fused": True} if {p.device.type for p in self.params} <= {"cpu", "cuda"} else {}
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, weight_decay=0.0, **fused)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: max(0.0, 1.0 - step / config.max_steps))
        self.kl_ctl = KLController(config.kl_coef, config.kl_target, config.kl_horizon)
        self.stopped = False
        # Plain sampling at `temperature`. Every warper is set explicitly, because generate fills the fields
        # left unset from the model's own generation_config (a hub model's repetition penalty or top-p would
        # make the rollouts come from another distribution than the one PPO optimises). The scores it
        # returns are then that distribution's logits: the rollout's log-probs, without a forward pass.
        self.sampling = GenerationConfig(
            max_new_tokens=config.response_length, do_sample=True, temperature=config.temperature, top_k=0, top_p=1.0,
            min_p=0.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0, repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
            eos_token_id=self.stop_id, pad_token_id=self.pad_id, output_scores=True, return_dict_in_generate=True,
        )
        # No dropout, one mode: the log-probs of the rollout and of the first update are the same numbers
        # (up to float rounding), so the ratio starts at 1 and measures only what the updates changed.
        for m in (policy, reference, critic):
            if m is not None:
                for module in m.modules():
                    if isinstance(module, torch.nn.Dropout):
                        module.p = 0.0
                m.eval()
        # Several processes (lab.distributed): each samples and scores its own share of the prompts, and the
        # updates average the gradients of all, so the weights stay the same everywhere. The critic's value head
        # starts random in each process: rank 0's goes to all.
        self.ranks = distributed.ranks()
        distributed.broadcast(self.params)
        if self.ranks > 1:  # each process samples its own answers
            torch.manual_seed(config.seed * 1000 + distributed.rank_index())

    def trainable(self) -> dict:
        """What the updates change, by name: the policy's and the critic's trainable weights (all of them, or
        their LoRA adapters)."""
        return {f"{who}.{name}": p for who, model in (("policy", self.policy), ("critic", self.critic))
                for name, p in model.named_parameters() if p.requires_grad}

    def save(self, run, step: int, last: dict, rng: dict) -> None:
        """A checkpoint after rollout batch `step`: the trainable weights, the optimizer, the schedule, the KL
        controller and `rng` (`random_state()` as that batch left it), written aside and renamed whole."""
        state = {"step": step, "weights": {k: p.detach().cpu() for k, p in self.trainable().items()},
                 "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(), "kl_coef": self.kl_ctl.value,
                 **rng, "last": last}
        if not run.writes:  # rank 0 writes it; the weights, optimizer and controller are the same in every process
            return
        t0 = time.time()
        folder = run.path / "trainer" / f"checkpoint-{step}"
        with runs.atomic_dir(folder) as tmp:
            torch.save(state, tmp / "ppo.pt")
            (tmp / runs.COMPLETE).write_text(f"{step}\n")
        run.keep_checkpoints(self.config.save_total_limit)
        run.record_checkpoint(folder, time.time() - t0)

    def load(self, folder) -> tuple[int, dict]:
        """Back to a checkpoint `save` wrote: returns (its step, the last batch's metrics)."""
        state = torch.load(folder / "ppo.pt", map_location="cpu", weights_only=False)
        weights = self.trainable()
        with torch.no_grad():
            for name, value in state["weights"].items():
                weights[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.kl_ctl.value = state["kl_coef"]
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return state["step"], state["last"]

    def stop_now(self, step: int, where: str) -> bool:
        # every process asks at the same points, and they agree (one process: the stop as it was asked)
        if not self.stopped and distributed.agree(jobs.stop_asked())[0]:
            jobs.request_stop()
            self.stopped = True
            print(f"stop requested: rollout batch {step + 1} ends {where}; saving the policy of its last update", flush=True)
        return self.stopped

    @torch.no_grad()
    def rollout(self, prompts: list) -> Rollout:
        """Sample an answer to each prompt with the policy."""
        enc = encode_prompts(self.tokenizer, prompts, self.config.max_prompt_length, self.device)
        n_prompt = enc["input_ids"].shape[1]
        out = self.policy.generate(**enc, generation_config=self.sampling, stopping_criteria=StoppingCriteriaList([_StopOnRequest()]))
        responses, mask = response_mask(out.sequences[:, n_prompt:], self.stop_id, self.pad_id)
        # a token's step at a time: the [batch, tokens, vocabulary] stack of all steps' scores is never made
        logprobs = torch.stack([step.float().log_softmax(-1).gather(-1, responses[:, t, None]).squeeze(-1) for t, step in enumerate(out.scores)], 1) * mask
        answers = [self.tokenizer.decode(r[: int(m.sum())], skip_special_tokens=True).strip() for r, m in zip(responses, mask)]
        return Rollout(prompts=prompts, answers=answers, ids=torch.cat([enc["input_ids"], responses], 1),
                       att=torch.cat([enc["attention_mask"], mask.long()], 1), n_prompt=n_prompt, mask=mask,
                       ended=(responses == self.stop_id).any(1), logprobs=logprobs)

    def score(self, rollout: Rollout, reward_fn, judge, step: int) -> None:
        """The reward model's score of each whole answer (and the gold judge's, when there is one)."""
        scores = torch.tensor(reward_fn(rollout.prompts, rollout.answers), dtype=torch.float, device=self.device)
        if not torch.isfinite(scores).all():
            raise Diverged(f"the reward function returned {scores.tolist()} at rollout batch {step + 1}: a reward model gone NaN cannot guide PPO; retrain it with a lower learning rate")
        rollout.scores = scores - self.config.missing_eos_penalty * (~rollout.ended).float()
        rollout.gold = [judge(p, a) for p, a in zip(rollout.prompts, rollout.answers)] if judge else None

    def _reference_logprobs(self, ids, att, n_prompt):
        if self.reference is not None:
            return token_logprobs(self.reference, ids, att, n_prompt, self.config.temperature)
        with self.policy.disable_adapter():
            return token_logprobs(self.policy, ids, att, n_prompt, self.config.temperature)

    @torch.no_grad()
    def advantages(self, r: Rollout) -> None:
        """The reference's log-probs and the critic's values, then per-token rewards, GAE and whitened advantages."""
        c = self.config
        ref_logprobs, values = [], []
        for i in range(0, len(r.ids), c.forward_batch_size):
            sl = slice(i, i + c.forward_batch_size)
            ref_logprobs.append(self._reference_logprobs(r.ids[sl], r.att[sl], r.n_prompt))
            values.append(token_scores(self.critic, r.ids[sl], r.att[sl])[:, r.n_prompt - 1 : -1])
        r.ref_logprobs, r.values = torch.cat(ref_logprobs) * r.mask, torch.cat(values) * r.mask
        rewards, r.kl, r.non_score_reward = per_token_rewards(r.scores, r.logprobs, r.ref_logprobs, r.mask, self.kl_ctl.value)
        r.rewards = whiten(rewards, r.mask, shift_mean=False) if c.whiten_rewards else rewards
        advantages, r.returns = gae(r.rewards, r.values, r.mask, c.gamma, c.lam)
        r.advantages = whiten(advantages, r.mask)

    def update(self, r: Rollout, step: int) -> list[dict]:
        """`ppo_epochs` passes over shuffled mini-batches of the rollout: the clipped policy loss plus `vf_coef`
        times the clipped value loss. Returns each update's statistics (fewer when a stop came between them)."""
        c = self.config
        stats = []
        n_updates = c.ppo_epochs * len(r.ids) // c.mini_batch_size
        for _ in range(c.ppo_epochs):
            for idx in torch.randperm(len(r.ids)).split(c.mini_batch_size):
                if self.stop_now(step, f"after {len(stats)} of its {n_updates} updates"):
                    return stats
                mb = r.mini_batch(idx)
                m = mb.mask

                def policy_side():
                    new_logprobs, entropy = token_logprobs(self.policy, mb.ids, mb.att, mb.n_prompt, c.temperature, with_entropy=True)
                    pg = policy_loss(new_logprobs, mb.logprobs, mb.advantages, m, c.cliprange)
                    _backward_if_finite(pg["loss"])
                    return pg, entropy

                def critic_side():
                    vf = value_loss(token_scores(self.critic, mb.ids, mb.att)[:, mb.n_prompt - 1 : -1], mb.values, mb.returns, m, c.cliprange_value)
                    _backward_if_finite(c.vf_coef * vf["loss"])
                    return vf

                # The two losses share no weight, so each side's backward gives exactly its part of the gradient of
                # their sum: on the CPU they run side by side (`side_by_side`).
                self.optimizer.zero_grad(set_to_none=True)
                (pg, entropy), vf = side_by_side(self.device, policy_side, critic_side)
                loss = pg["loss"] + c.vf_coef * vf["loss"]
                if not torch.isfinite(loss):
                    raise Diverged(f"PPO diverged: loss is {loss.item()} at rollout batch {step + 1}. Lower the learning rate, "
                                             "keep max_grad_norm on, or raise kl_coef")
                distributed.average_gradients(self.params)
                if c.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.params, c.max_grad_norm)
                self.optimizer.step()
                stats.append({
                    "policy/approxkl_avg": pg["approxkl"].item(), "policy/clipfrac_avg": pg["clipfrac"].item(),
                    "loss/policy_avg": pg["loss"].item(), "loss/value_avg": vf["loss"].item(),
                    "val/clipfrac_avg": vf["clipfrac"].item(), "policy/entropy_avg": masked_mean(entropy, m).item(),
                    "val/ratio": pg["ratio"].item(),
                })
        return stats

    def end_batch(self, r: Rollout, stats: list[dict]) -> dict:
        """Step the schedule and the KL controller; the batch's metrics under TRL's names (the means over all
        processes' rollouts)."""
        lr = self.schedule.get_last_lr()[0]
        self.schedule.step()
        kl_coef = self.kl_ctl.value
        non_score = r.non_score_reward.sum(1).mean().item()
        row = distributed.mean({
            "objective/kl": r.kl.sum(1).mean().item(),
            "objective/entropy": (-r.logprobs * r.mask).sum(1).mean().item(),
            "objective/non_score_reward": non_score,
            "objective/rlhf_reward": non_score + r.scores.mean().item(),
            "objective/scores": r.scores.mean().item(),
            **_mean(stats),
            "val/num_eos_tokens": float(r.ended.sum().item()),
            "lr": lr,
            **({"gold/score": sum(r.gold) / len(r.gold)} if r.gold else {}),
        })
        row["val/num_eos_tokens"] *= self.ranks  # a count, over all processes' rollouts
        self.kl_ctl.update(row["objective/kl"], len(r.ids) * self.ranks)
        return {**row, **({"kl_coef": kl_coef} if self.config.kl_target > 0 else {})}


def _backward_if_finite(loss: torch.Tensor) -> None:
    if torch.isfinite(loss):  # a diverged loss is reported by the caller, before any optimizer step
        loss.backward()


def side_by_side(device: torch.device, *parts):
    """Call `parts` (each a forward and backward of its own model) and return their results. On a CPU with two
    threads or more they run at once, in threads of their own, each with its share of torch's threads: at the
    lab's CPU sizes two models on one thread each are faster than one after the other on two (a small model's
    matrices are too small for two threads to share well; torch releases Python's lock in its ops; bench/RESULTS.md,
    "PPO faster than TRL 1.12"). Elsewhere (a GPU runs one kernel after the other anyway) one after the other."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2:
        return [part() for part in parts]
    results, errors = [None] * len(parts), []

    def call(i: int) -> None:
        try:
            results[i] = parts[i]()
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)

    torch.set_num_threads(max(1, threads // len(parts)))  # a thread takes the count in force at its first op
    try:
        workers = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(1, len(parts))]
        for worker in workers:
            worker.start()
        call(0)
        for worker in workers:
            worker.join()
    finally:
        torch.set_num_threads(threads)
    if errors:
        raise errors[0]
    return results


def random_state() -> dict:
    """torch's random state (the sampling of rollouts and the shuffling of updates draw from it), as `PPO.save`
    stores it and `PPO.load` puts it back."""
    return {"rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def prompt_batches(prompts: list, batch_size: int, seed: int):
    """Batches of prompts for ever, each pass over them in a fresh random order."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            fresh = list(range(len(prompts)))
            rng.shuffle(fresh)
            order += fresh * max(1, math.ceil(batch_size / len(fresh)))
        yield [prompts[i] for i in order[:batch_size]]
        del order[:batch_size]


class Log:
    """Rows averaged over `logging_steps` rollout batches into metrics.jsonl, and a few rollouts into samples.jsonl."""

    def __init__(self, run, config: Config):
        self.run, self.config = run, config
        self.window: list[dict] = []
        self.t_start = self.t_window = time.time()

    def sample(self, step: int, r: Rollout) -> None:
        if self.run is None or not self.config.sample_every or not (step % self.config.sample_every == 0 or step == 1):
            return
        for i in range(min(4, len(r.answers))):
            self.run.log_sample({"step": step, "time": time.time(), "prompt": _text(r.prompts[i]), "response": r.answers[i], "score": r.scores[i].item(),
                                 **({"gold": r.gold[i]} if r.gold else {}), "kl": r.kl[i].sum().item()})

    def flush(self, step: int) -> None:
        if not self.window:
            return
        now = time.time()
        batch = self.config.batch_size * distributed.ranks()  # every process's rollouts
        logged = {"step": step, "episode": step * batch, **_mean(self.window),
                  "samples_per_second": len(self.window) * batch / max(now - self.t_window, 1e-9), "elapsed": now - self.t_start}
        if self.run is not None:
            self.run.log_metrics(logged)
        if self.run is None or self.run.writes:
            print(" ".join(f"{k}={v:.4g}" for k, v in logged.items() if k in ("step", "objective/scores", "objective/kl", "gold/score", "loss/value_avg")), flush=True)
        self.window, self.t_window = [], now


def train(policy, reference, critic, tokenizer, reward_fn, prompts: list, config: Config, run=None, judge=None) -> dict:
    """PPO on `prompts` (user messages, or chats ending with the user's turn): rollout → score → advantages →
    PPO epochs → log, for `max_steps` rollout batches. `reference=None` means the policy with its LoRA adapter
    disabled. `reward_fn(prompts, answers) -> scores`; `judge(prompt, answer) -> float` (optional) adds
    gold/score. Logs to `run` (optional). Returns the per-rollout-batch history and how it ended."""
    ppo, log = PPO(policy, reference, critic, tokenizer, config), Log(run, config)
    # one order of the prompts for all processes, each taking its share of every batch
    batches = (b[distributed.rank_index() :: ppo.ranks] for b in prompt_batches(prompts, config.batch_size * ppo.ranks, config.seed))
    history: list[dict] = []
    step, timed_out = 0, False
    # A checkpoint holds the state a whole batch left: a stop that comes in the middle of the next one has used
    # random numbers since (its sampling), and one in the middle of its updates has changed the weights too.
    whole, rng = True, random_state()
    resumed = run.last_checkpoint() if run is not None else None
    if resumed:
        step, last = ppo.load(resumed[1])
        history.append(last)
        for _ in range(step):  # the prompt order of an uninterrupted run: the batches already trained on go by
            next(batches)
        log.t_start -= run.last_metrics().get("elapsed") or 0.0
        print(f"resuming from the checkpoint of rollout batch {step}", flush=True)
    saving = run is not None and config.save_steps > 0
    while step < config.max_steps and not ppo.stop_now(step, "before it starts"):
        t0 = time.time()
        rollout = ppo.rollout(next(batches))
        if ppo.stop_now(step, "after sampling"):
            break
        ppo.score(rollout, reward_fn, judge, step)
        if ppo.stop_now(step, "after scoring"):
            break
        ppo.advantages(rollout)
        t_rollout = time.time() - t0
        stats = ppo.update(rollout, step)
        if not stats:  # stopped before the first update of this batch: nothing learned from it
            break
        step += 1
        whole = len(stats) == config.ppo_epochs * len(rollout.ids) // config.mini_batch_size
        rng = random_state() if whole else rng
        row = {**ppo.end_batch(rollout, stats), "time/rollout": t_rollout, "time/update": time.time() - t0 - t_rollout}
        history.append(row)
        log.window.append(row)
        log.sample(step, rollout)
        timed_out = distributed.agree(bool(config.max_minutes) and time.time() - log.t_start >= config.max_minutes * 60)[0]
        if step % config.logging_steps == 0 or step == config.max_steps or timed_out or ppo.stopped:
            log.flush(step)
        if saving and whole and step < config.max_steps and step % config.save_steps == 0:
            ppo.save(run, step, row, rng)
        if timed_out or ppo.stopped:
            break
    log.flush(step)  # a stop ends the loop between logging steps: the last partial window still reaches the curve
    distributed.check_same(ppo.params, "policy and critic weights")
    if saving and ppo.stopped and whole and 0 < step < config.max_steps and (run.last_checkpoint() or (0,))[0] != step:
        ppo.save(run, step, history[-1], rng)  # resume goes on from exactly where the stop came
    return {"steps": step, "episodes": step * config.batch_size * ppo.ranks, "history": history, "stopped": ppo.stopped, "timed_out": timed_out, "kl_coef": ppo.kl_ctl.value}


# ------------------------------------------------------------------------------------------------
# The stage: prompts, policy, reference, reward model and critic from the config


def check(config: Config) -> None:
    if config.batch_size % config.mini_batch_size:
        raise UserError(f"{flag('mini_batch_size')} {config.mini_batch_size} must divide {flag('batch_size')} {config.batch_size}")
    if config.lora_dropout:
        raise UserError(f"{flag('lora_dropout')} {config.lora_dropout}: PPO trains without dropout (its ratio must compare the same function at "
                        "rollout and at update); leave it at 0")
    check_training(config)
    check_parent(config.parent)
    check_usable(config.reward, config.data)
    if world_of(config.data, config.columns) is None:
        prompt_set(config.data, columns=config.columns)


def _lora(model, config: Config, task_type: str):
    from peft import get_peft_model

    return get_peft_model(for_kbit_training(model, config.mode), lora_config(config, task_type))


def run(config: Config, run) -> dict:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    device = prepare(config, run)
    world = world_of(config.data)
    prompts = prompt_set(config.data, columns=config.columns, rollouts=True)
    lora = config.mode != "full"

    def load(ref, auto_cls, mode, **kwargs):  # a quantized model is placed on its device as it loads
        model, tokenizer, path = models.load_model(ref, auto_cls, mode, device, **kwargs)
        return (model if mode in models.QUANTIZED else model.to(device)), tokenizer, path

    # the policy, and the reference it is held to
    policy, tokenizer, parent_path = load(config.parent, AutoModelForCausalLM, config.mode)
    baseline = evals.chat(policy, tokenizer, evals.comparison_prompts(world), max_new_tokens=48, temperature=config.eval_temperature, seed=config.seed) if world and config.world_evals else None
    if lora:
        policy, reference = _lora(policy, config, "CAUSAL_LM"), None
    else:
        reference = load(parent_path, AutoModelForCausalLM, "full")[0].requires_grad_(False)
    n_trainable = models.count_parameters(policy, trainable=True)

    # the reward, and the critic that learns to predict it per token
    critic_from = parent_path
    if config.reward == "gold":
        def reward_fn(batch_prompts, answers):
            return [world.judge(p, a).score for p, a in zip(batch_prompts, answers)]
    else:
        reward_model, reward_tokenizer, reward_path = load(check_usable(config.reward, config.data), AutoModelForSequenceClassification, "full")
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
    if baseline is not None and not result["stopped"]:  # a stopped run saves at once
        final.update(evals.alignment_eval(policy, tokenizer, world, baseline, config.eval_temperature, config.seed))
        run.log_metrics({"step": result["steps"], **{k: v for k, v in final.items() if k.startswith("eval/")}})
    save_model(policy, tokenizer, run, config, "Aligned model (PPO)", final, parent_path)
    return final
