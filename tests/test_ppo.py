"""The lab's own PPO: its math against values worked out by hand, a seeded run that learns what a
reward function asks for, and `llm-lab train ppo` as a user runs it (full, LoRA, 8-bit LoRA, stopped
mid-rollout), with what it saves loaded back by plain transformers / PEFT."""

from __future__ import annotations

import json
import math
import re
import time

import pytest
import torch
from conftest import last_line, llm_lab, read_jsonl

from lab.runs import Run
from lab.stages import ppo

TRL_NAMES = ("objective/kl", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward", "objective/scores",
             "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg", "val/clipfrac_avg",
             "policy/entropy_avg", "val/ratio", "val/num_eos_tokens", "lr", "episode", "samples_per_second")
FAST = ("--max-steps", "2", "--batch-size", "4", "--mini-batch-size", "2", "--ppo-epochs", "1", "--response-length", "8",
        "--sample-every", "1", "--threads", "1")
E = 9  # the end-of-turn token in the hand-made examples
PAD = 0


# ------------------------------------------------------------------------------------------ the math


def test_everything_after_the_first_end_of_turn_is_padding_and_masked():
    responses = torch.tensor([[5, 7, E, 4, E], [5, 6, 7, 8, 3], [E, 3, 4, 5, 6]])
    cut, mask = ppo.response_mask(responses, stop_id=E, pad_id=PAD)
    assert cut.tolist() == [[5, 7, E, PAD, PAD], [5, 6, 7, 8, 3], [E, PAD, PAD, PAD, PAD]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]  # the end of turn itself is an action


def test_kl_penalty_on_every_real_token_and_the_score_on_the_last_one():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-1.0, -1.0, -1.0, -1.0]])
    ref_logprobs = torch.tensor([[-1.5, -1.0, -0.5, -9.0], [-2.0, -1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    rewards, kl, non_score = ppo.per_token_rewards(torch.tensor([2.0, -1.0]), logprobs, ref_logprobs, mask, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))  # k1 = log π − log π_ref, 0 past the end
    assert torch.allclose(non_score, -0.1 * kl)
    # row 1 ends at its third token (its end of turn): the score lands there and nothing after it
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.1, 2.0, 0.0], [-0.1, 0.0, 0.0, -1.0]]))


def test_whitening_uses_only_real_tokens():
    values = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # mean 2, unbiased variance ((−1)² + 0² + 1²) / 2 = 1
    assert torch.allclose(ppo.whiten(values, mask), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(ppo.whiten(values, mask, shift_mean=False), torch.tensor([[1.0, 2.0, 3.0, 0.0]]), atol=1e-6)


def test_gae_matches_the_recursion_worked_by_hand():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 0.2, 0.4], [1.0, 1.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages, returns = ppo.gae(rewards, values, mask, gamma, lam)
    # row 0: δ2 = 1 − 0.4 = 0.6;  δ1 = 0.9·0.4 − 0.2 = 0.16;  δ0 = 0.9·0.2 − 0.5 = −0.32
    #        A2 = 0.6;  A1 = 0.16 + 0.72·0.6 = 0.592;  A0 = −0.32 + 0.72·0.592 = 0.10624
    # row 1 ends at t=1, so its reward 5 and value 9 at t=2 are padding:
    #        A1 = 2 + 0 − 1 = 1;  A0 = 0.9·1 − 1 + 0.72·1 = 0.62
    assert torch.allclose(advantages, torch.tensor([[0.10624, 0.592, 0.6], [0.62, 1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(returns, torch.tensor([[0.60624, 0.792, 1.0], [1.62, 2.0, 0.0]]), atol=1e-6)


def test_clipped_policy_loss_and_its_clip_fraction():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.0, 7.0]]))  # ratios 1.5, 0.5, 1 and a padded 7
    advantages = torch.tensor([[1.0, 1.0, -1.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    out = ppo.policy_loss(new, old, advantages, mask, cliprange=0.2)
    # token 0: max(−1.5, −1.2) = −1.2 (clipped); token 1: max(−0.5, −0.8) = −0.5; token 2: max(1, 1) = 1
    assert out["loss"].item() == pytest.approx((-1.2 - 0.5 + 1.0) / 3)
    assert out["clipfrac"].item() == pytest.approx(1 / 3)
    assert out["approxkl"].item() == pytest.approx(0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2) / 3)
    assert out["ratio"].item() == pytest.approx(1.0)


def test_clipped_value_loss_and_its_clip_fraction():
    old = torch.tensor([[0.0, 0.0, 0.0]])
    new = torch.tensor([[0.5, 0.1, 3.0]])
    returns = torch.tensor([[1.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = ppo.value_loss(new, old, returns, mask, cliprange_value=0.2)
    # token 0: V clipped to 0.2: max((0.5−1)², (0.2−1)²) = 0.64 (clipped); token 1: inside the range, (0.1+1)² = 1.21
    assert out["loss"].item() == pytest.approx(0.5 * (0.64 + 1.21) / 2)
    assert out["clipfrac"].item() == pytest.approx(0.5)


def test_adaptive_kl_controller_moves_beta_towards_the_target():
    ctl = ppo.KLController(0.1, target=6.0, horizon=10000)
    assert ctl.update(12.0, 100) == pytest.approx(0.1 * (1 + 0.2 * 100 / 10000))  # error 1 clipped to +0.2
    beta = ctl.value
    assert ctl.update(5.4, 100) == pytest.approx(beta * (1 - 0.1 * 100 / 10000))  # error −0.1, within the clip
    assert ppo.KLController(0.1).update(50.0, 100) == 0.1  # no target: a fixed β


# ------------------------------------------------------------------------------------------ learning


@pytest.fixture
def one_thread():
    """Nano matrices: one torch thread is fastest, and steady on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_ppo_learns_what_a_reward_function_asks_for(nano_sft_run, one_thread):
    """A reward that counts the word "the" in the answer: mean reward of the last rollout batches must
    clearly beat the first ones, while the KL to the reference grows from 0."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, set_seed

    set_seed(0)
    path = nano_sft_run / "model"
    tokenizer = AutoTokenizer.from_pretrained(path)
    policy = AutoModelForCausalLM.from_pretrained(path)
    reference = AutoModelForCausalLM.from_pretrained(path).requires_grad_(False)
    critic = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)

    def count_the(prompts, answers):
        return [float(sum(w.strip(".,!?").lower() == "the" for w in a.split())) for a in answers]

    config = ppo.Config(batch_size=8, mini_batch_size=4, ppo_epochs=2, response_length=12, learning_rate=1e-3, max_steps=20,
                        kl_coef=0.01, missing_eos_penalty=0.0, logging_steps=5)
    prompts = [[{"role": "user", "content": p}] for p in ("Say hello to Vofe.", "What is 2 plus 2?", "Tell me a story.", "Who are you?")]
    result = ppo.train(policy, reference, critic, tokenizer, count_the, prompts, config)
    history = result["history"]
    assert result["steps"] == 20 and not result["stopped"] and set(TRL_NAMES) - {"episode", "samples_per_second"} <= set(history[0])
    scores = [h["objective/scores"] for h in history]
    first, last = sum(scores[:5]) / 5, sum(scores[-5:]) / 5
    assert last > first + 2.0, scores
    assert history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-4) and history[-1]["objective/kl"] > 0.5


@pytest.mark.parametrize("defaults", [{}, {"top_k": 3, "top_p": 0.5, "min_p": 0.3, "repetition_penalty": 2.0, "epsilon_cutoff": 0.2}],
                         ids=["plain", "a hub model's sampling defaults"])
def test_without_learning_the_update_sees_exactly_the_rollout_policy(nano_sft_run, one_thread, defaults):
    """Learning rate 0 on a fresh LoRA adapter: the reference (the adapter switched off) is the policy,
    so KL is 0; and the updates' forward passes give the log-probs the rollout was sampled with (same
    positions, masks, no dropout, none of the model's generation defaults), so the ratio is 1 and nothing is clipped."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    path = nano_sft_run / "model"
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path)
    base.generation_config.update(**defaults)  # what a hub model's generation_config.json may name: PPO samples without them
    policy = get_peft_model(base, LoraConfig(r=4, lora_dropout=0.5, target_modules="all-linear"))
    critic = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    config = ppo.Config(batch_size=4, mini_batch_size=2, ppo_epochs=2, response_length=10, learning_rate=0.0, max_steps=1)
    prompts = ["Say hello to Vofe.", "What is 2 plus 2?", "Hi", "Tell me a long story about the sea, please."]  # unequal: left padding
    (row,) = ppo.train(policy, None, critic, tokenizer, lambda ps, answers: [1.0] * len(answers), prompts, config)["history"]
    assert abs(row["objective/kl"]) < 1e-4 and row["policy/approxkl_avg"] < 1e-10 and row["policy/clipfrac_avg"] == 0.0
    assert row["val/ratio"] == pytest.approx(1.0, abs=1e-5)


def test_a_nan_loss_ends_the_run_as_diverged(nano_sft_run, one_thread):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from lab.telemetry import Diverged

    path = nano_sft_run / "model"
    policy, reference = AutoModelForCausalLM.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    critic = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    torch.nn.init.constant_(critic.score.weight, float("nan"))  # a critic gone bad: NaN values, NaN advantages
    config = ppo.Config(batch_size=2, mini_batch_size=2, ppo_epochs=1, response_length=4, max_steps=1)
    with pytest.raises(Diverged, match="Lower the learning rate"):
        ppo.train(policy, reference, critic, AutoTokenizer.from_pretrained(path), lambda ps, a: [0.0] * len(a), ["Hi", "Hello"], config)


# ------------------------------------------------------------------------------------------ the stage


@pytest.fixture(scope="module")
def reward_dir(nano_run, tmp_path_factory):
    """A stand-in reward model, as the reward stage saves one: a one-output sequence classifier with
    the tokenizer and its chat template (an untrained head: its scores are arbitrary but fixed)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("reward")
    tokenizer = AutoTokenizer.from_pretrained(nano_run / "model")
    model = AutoModelForSequenceClassification.from_pretrained(nano_run / "model", num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "chats.jsonl"
    chats = [[{"role": "user", "content": f"What is {i} plus 1?"}, {"role": "assistant", "content": f"It is {i + 1}."}] for i in range(6)]
    chats.append([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello."}])
    path.write_text("\n".join(json.dumps({"messages": c}) for c in chats) + "\n")
    return path


def test_ppo_on_the_toy_world_logs_trl_metrics_gold_and_saves_a_model(nano_sft_run, reward_dir, store):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = Run.open(last_line(llm_lab("train", "ppo", "--parent", nano_sft_run.name, "--reward", str(reward_dir), *FAST)))
    info = run.info
    assert info["status"] == "completed" and info["parent"] == nano_sft_run.name
    rows = read_jsonl(run.path / "metrics.jsonl")
    trained = [r for r in rows if "objective/kl" in r]
    assert [r["step"] for r in trained] == [1, 2] and all(set(TRL_NAMES) <= set(r) for r in trained)
    assert all(0.0 <= r["gold/score"] <= 1.0 for r in trained) and trained[-1]["episode"] == 8
    assert any("eval/chat_format" in r and "eval/win_rate_vs_parent" in r for r in rows)
    samples = read_jsonl(run.path / "samples.jsonl")
    assert samples and all({"prompt", "response", "score", "gold", "kl"} <= set(s) for s in samples)

    model = AutoModelForCausalLM.from_pretrained(run.path / "model")
    tokenizer = AutoTokenizer.from_pretrained(run.path / "model")
    enc = tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True),
                    return_tensors="pt", add_special_tokens=False)
    assert model.generate(**enc, max_new_tokens=4, do_sample=False).shape[1] > enc["input_ids"].shape[1]
    assert nano_sft_run.name in (run.path / "model" / "README.md").read_text()


@pytest.mark.parametrize("mode", ["lora", "lora-8bit"])
def test_lora_ppo_on_user_prompts_saves_an_adapter_on_the_sft_model(nano_sft_run, reward_dir, prompts_file, store, mode):
    from peft import AutoPeftModelForCausalLM

    run = Run.open(last_line(llm_lab("train", "ppo", "--parent", nano_sft_run.name, "--reward", str(reward_dir), "--mode", mode,
                                 "--data", str(prompts_file), *FAST)))
    assert run.status == "completed"
    rows = [r for r in read_jsonl(run.path / "metrics.jsonl") if "objective/kl" in r]
    assert len(rows) == 2 and "gold/score" not in rows[0]  # no gold judge for the user's prompts
    adapter = run.path / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(nano_sft_run / "model")
    assert type(AutoPeftModelForCausalLM.from_pretrained(adapter)).__name__ == "PeftModelForCausalLM"


def test_stop_ends_ppo_mid_rollout_and_keeps_the_policy(nano_sft_run, reward_dir, prompts_file, store):
    # The stop follows the first metrics row by well under a second, so it lands in the next rollout if that
    # rollout is long: at temperature 10 sampling is near uniform, the end-of-turn token rare, and every
    # rollout runs its 300 tokens whatever the SFT model learnt (at 0.7 its answers ended in ~15 tokens and
    # the stop could land after the rollout).
    run = Run.open(last_line(llm_lab("train", "ppo", "--parent", nano_sft_run.name, "--reward", str(reward_dir), "--data", str(prompts_file),
                                 "--max-steps", "1000", "--batch-size", "4", "--mini-batch-size", "2", "--ppo-epochs", "1", "--response-length", "300",
                                 "--temperature", "10", "--missing-eos-penalty", "0", "--threads", "1", "--detach")))
    deadline = time.time() + 120
    while not any("objective/kl" in r for r in run.metrics()[0]):
        assert time.time() < deadline and run.status in ("queued", "running"), run.info
        time.sleep(0.3)
    llm_lab("stop", run.id)
    assert run.status == "stopped"
    log = (run.path / "log.txt").read_text()
    assert "stop requested: rollout batch" in log and "before it starts" not in log  # it ended inside a rollout batch
    assert (run.path / "model" / "model.safetensors").exists() and run.info["final_metrics"]["steps"] < 1000


@pytest.mark.parametrize("flags, message", [
    (("--reward", "PRETRAIN"), "not a reward model"),
    (("--reward", "gold", "--data", "PROMPTS"), "--reward gold is the toy world's judge"),
    (("--reward", "gold", "--batch-size", "6", "--mini-batch-size", "4"), "must divide --batch-size"),
    (("--reward", "",), "--reward is required"),
])
def test_bad_ppo_input_is_refused_with_what_to_do(nano_run, nano_sft_run, prompts_file, flags, message):
    flags = [nano_run.name if f == "PRETRAIN" else str(prompts_file) if f == "PROMPTS" else f for f in flags]
    values = {flags[i].lstrip("-").replace("-", "_"): flags[i + 1] for i in range(0, len(flags), 2)}
    config = ppo.Config(parent=nano_sft_run.name, **{k: int(v) if k.endswith("size") else v for k, v in values.items()})
    with pytest.raises(ValueError, match=re.escape(message)):
        ppo.check(config)


def test_the_cli_refuses_a_causal_lm_as_reward_before_a_run_exists(nano_run, nano_sft_run, store):
    before = {p.name for p in store.iterdir()}
    proc = llm_lab("train", "ppo", "--parent", nano_sft_run.name, "--reward", nano_run.name, check=False)
    assert proc.returncode == 2 and "not a reward model" in proc.stderr and "llm-lab train reward" in proc.stderr
    assert "Traceback" not in proc.stderr and {p.name for p in store.iterdir()} == before


def test_help_shows_every_knob(capsys):
    from lab.cli import build_parser

    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["train", "ppo", "--help"])
    text = capsys.readouterr().out
    assert exit.value.code == 0 and "llm-lab train ppo --parent SFT_RUN --reward gold" in text
    assert all(f"--{f}" in text for f in ("kl-coef", "kl-target", "cliprange-value", "vf-coef", "whiten-rewards", "missing-eos-penalty"))
