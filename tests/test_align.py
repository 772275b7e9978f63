"""Alignment on TRL, run as a user runs it: the reward model, DPO and GRPO/RLOO as real subprocesses on
nano models, and what they save loaded back with plain transformers / PEFT."""

from __future__ import annotations

import json
import re
import time

import pytest
import torch
from conftest import last_line, llm_lab, read_jsonl, refused

from lab import evals
from lab.runs import Run

FEW = ("--logging-steps", "1", "--seed", "0")


@pytest.fixture(scope="module")
def sft_run(nano_sft_run):
    return nano_sft_run.name


@pytest.fixture(scope="module")
def reward_run(sft_run, store):
    return last_line(llm_lab("train", "reward", "--parent", sft_run, "--max-steps", "6", "--batch-size", "8", *FEW))


def test_reward_model_trains_logs_accuracy_and_saves_a_sequence_classifier(reward_run, store):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = Run.open(reward_run)
    assert run.status == "completed"
    rows = read_jsonl(run.path / "metrics.jsonl")
    assert {"loss", "accuracy", "margin"} <= {k for r in rows for k in r}
    final = run.info["final_metrics"]
    # held-out pairs of the toy world, overall and per gold criterion
    assert 0 <= final["eval/accuracy"] <= 1 and {"eval/accuracy_correct", "eval/accuracy_polite", "eval/accuracy_refuses_harmful"} <= set(final)
    model = AutoModelForSequenceClassification.from_pretrained(run.path / "model")
    tok = AutoTokenizer.from_pretrained(run.path / "model")
    chat = [{"role": "user", "content": "What is 1 plus 1?"}, {"role": "assistant", "content": "1 plus 1 is 2."}]
    scores = evals.reward_scores(model, tok, [chat, chat[:1] + [{"role": "assistant", "content": "Go away."}]])
    assert len(scores) == 2 and all(map(torch.isfinite, torch.tensor(scores)))


def test_lora_reward_model_is_saved_merged(sft_run, store):
    run = Run.open(last_line(llm_lab("train", "reward", "--parent", sft_run, "--mode", "lora", "--max-steps", "2", "--batch-size", "4", *FEW)))
    files = {p.name for p in (run.path / "model").iterdir()}
    assert "model.safetensors" in files and "adapter_config.json" not in files  # PPO and GRPO load it with transformers alone


def test_dpo_logs_margins_kl_and_gold_and_beats_nothing_silently(sft_run, store):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = Run.open(last_line(llm_lab("train", "dpo", "--parent", sft_run, "--max-steps", "4", "--batch-size", "4", "--kl-every", "2", "--sample-every", "2", *FEW)))
    rows = read_jsonl(run.path / "metrics.jsonl")
    keys = {k for r in rows for k in r}
    assert {"loss", "rewards/margins", "rewards/accuracies", "kl", "gold/score"} <= keys
    kl = [r["kl"] for r in rows if "kl" in r]
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and kl[-1] > 0  # the policy leaves its reference
    final = run.info["final_metrics"]
    assert 0 <= final["eval/win_rate_vs_parent"] <= 1 and "eval/refusal_rate" in final and "eval/rewards/accuracies" in final
    samples = read_jsonl(run.path / "samples.jsonl")
    assert samples and all("gold" in s for s in samples)
    model = AutoModelForCausalLM.from_pretrained(run.path / "model")
    tok = AutoTokenizer.from_pretrained(run.path / "model")
    last = [s for s in samples if s["step"] == samples[-1]["step"]]  # the final weights' answers, logged by the job
    assert evals.chat(model, tok, [s["prompt"] for s in last], max_new_tokens=48) == [s["completion"] for s in last]


def test_lora_dpo_on_a_lora_sft_run_saves_an_adapter_on_the_merged_sft_model(nano_run, store):
    from peft import AutoPeftModelForCausalLM

    lora_sft = last_line(llm_lab("train", "sft", "--parent", nano_run.name, "--mode", "lora", "--max-steps", "2", "--batch-size", "4", "--kl-every", "0", "--sample-every", "0"))
    run = Run.open(last_line(llm_lab("train", "dpo", "--parent", lora_sft, "--mode", "lora", "--max-steps", "2", "--batch-size", "4", "--kl-every", "1", "--sample-every", "0", *FEW)))
    base = json.loads((run.path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str(Run.open(lora_sft).path / "adapter-merged")  # the SFT adapter folded in once, then the reference
    assert [r for r in read_jsonl(run.path / "metrics.jsonl") if "kl" in r]
    AutoPeftModelForCausalLM.from_pretrained(run.path / "adapter")


HH_PAIRS = "".join(json.dumps({
    "chosen": f"\n\nHuman: Hi, I am {i}.\n\nAssistant: Hello {i}.\n\nHuman: What is {i} plus one?\n\nAssistant: {i + 1}.",
    "rejected": f"\n\nHuman: Hi, I am {i}.\n\nAssistant: Hello {i}.\n\nHuman: What is {i} plus one?\n\nAssistant: Go away."}) + "\n" for i in range(16))


@pytest.mark.parametrize("stage", ["reward", "dpo"])
def test_hh_rlhf_transcripts_train_the_reward_model_and_dpo(sft_run, store, tmp_path, stage):
    path = tmp_path / "hh.jsonl"
    path.write_text(HH_PAIRS)
    extra = ("--kl-every", "0", "--sample-every", "2") if stage == "dpo" else ()
    run = Run.open(last_line(llm_lab("train", stage, "--parent", sft_run, "--data", str(path), "--max-steps", "2", "--batch-size", "4", *extra, *FEW)))
    assert run.status == "completed" and [r for r in read_jsonl(run.path / "metrics.jsonl") if "loss" in r]
    if stage == "dpo":  # it answered the transcripts' last questions, asked in a chat of their own turns
        assert re.fullmatch(r"What is \d+ plus one\?", read_jsonl(run.path / "samples.jsonl")[0]["prompt"])


def test_a_preference_pair_from_a_transcript_is_learnt_on_its_last_answer_only(sft_run, tmp_path):
    """TRL's preference trainers learn the tokens after the prompt (the chat up to the answer, rendered with the
    generation prompt): from an HH pair that is the last Assistant turn, not the history's earlier one."""
    from transformers import AutoTokenizer

    from lab import data

    path = tmp_path / "hh.jsonl"
    path.write_text(HH_PAIRS)
    pair = data.load(path, want="preference").records[3]
    assert [t["role"] for t in pair["prompt"]] == ["user", "assistant", "user"]
    tokenizer = AutoTokenizer.from_pretrained(Run.open(sft_run).path / "model")
    prompt = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    whole = tokenizer.apply_chat_template(pair["prompt"] + pair["chosen"], tokenize=True, return_dict=True)["input_ids"]
    assert whole[: len(prompt)] == prompt
    learnt = tokenizer.decode(whole[len(prompt):])
    assert "4." in learnt and "Hello" not in learnt


def test_grpo_with_a_reward_model_logs_reward_kl_and_the_gold_judge(sft_run, reward_run, store):
    run = Run.open(last_line(llm_lab("train", "grpo", "--parent", sft_run, "--reward", reward_run, "--max-steps", "2", "--batch-size", "8", "--max-completion-length", "12", "--sample-every", "0", *FEW)))
    keys = {k for r in read_jsonl(run.path / "metrics.jsonl") for k in r}
    assert {"reward", "reward_std", "kl", "entropy", "rewards/gold_judge/mean"} <= keys
    assert (run.path / "model" / "model.safetensors").exists() and "eval/win_rate_vs_parent" in run.info["final_metrics"]


def test_rloo_with_the_gold_judge_as_reward(sft_run, store):
    run = Run.open(last_line(llm_lab("train", "grpo", "--parent", sft_run, "--reward", "gold", "--algorithm", "rloo", "--mode", "lora", "--max-steps", "1", "--batch-size", "4", "--num-generations", "2", "--max-completion-length", "8", "--sample-every", "0", *FEW)))
    assert run.status == "completed" and (run.path / "adapter" / "adapter_config.json").exists()
    assert any("reward" in r for r in read_jsonl(run.path / "metrics.jsonl"))


def test_stop_ends_grpo_mid_rollout_and_keeps_the_policy(nano_run, store):
    # The stop follows the first metrics row by well under a second, so it lands in the next rollout if that
    # rollout is long: at temperature 10 sampling is near uniform and every completion runs most of its 400
    # tokens. (At temperature 1 the pretrained parent sometimes ended its text early, and the stop landed
    # after the rollout.)
    run = Run.open(last_line(llm_lab("train", "grpo", "--parent", nano_run.name, "--reward", "gold", "--max-steps", "500", "--batch-size", "8",
                                 "--max-completion-length", "400", "--temperature", "10", "--sample-every", "0", "--detach", *FEW)))
    deadline = time.time() + 240
    while not any("reward" in r for r in run.metrics()[0]):
        assert time.time() < deadline and run.status in ("queued", "running"), run.info
        time.sleep(0.5)
    llm_lab("stop", run.id)
    assert run.status == "stopped"
    assert "rollout abandoned" in (run.path / "log.txt").read_text()
    assert (run.path / "model" / "model.safetensors").exists() and run.info["final_metrics"]["steps"] < 500


@pytest.mark.parametrize("args, message", [
    (("grpo", "--reward", "SFT"), "not a reward model"),
    (("grpo", "--reward", "gold", "--batch-size", "6"), "must be a multiple of --num-generations"),
    (("dpo", "--beta", "0"), "--beta 0.0 is out of range: it must be above 0 and at most 100"),
    (("dpo", "--sft-weight", "-1"), "--sft-weight -1.0 is out of range: it must be from 0 to 100"),
    (("grpo", "--reward", "gold", "--num-generations", "1"), "--num-generations 1 is out of range: it must be from 2 to 1,024"),
    (("reward", "--data", "MISSING.jsonl"), "MISSING.jsonl"),
])
def test_bad_alignment_input_is_refused_before_a_run_exists(sft_run, store, args, message):
    args = tuple(sft_run if a == "SFT" else a for a in args)
    assert message in refused("train", args[0], "--parent", sft_run, *args[1:])


@pytest.mark.parametrize("loss_type", ["orpo", "simpo"])
def test_reference_free_orpo_and_simpo_train_with_kl_and_gold_curves(sft_run, store, loss_type):
    from transformers import AutoModelForCausalLM

    run = Run.open(last_line(llm_lab("train", "dpo", "--parent", sft_run, "--loss-type", loss_type, "--max-steps", "2", "--batch-size", "4",
                                     "--kl-every", "1", "--sample-every", "2", "--no-world-evals", *FEW)))
    rows = read_jsonl(run.path / "metrics.jsonl")
    keys = {k for r in rows for k in r}
    assert run.status == "completed" and {"loss", "rewards/margins", "kl", "gold/score"} <= keys
    assert ("log_odds_ratio" in keys) == (loss_type == "orpo")  # ORPO's own term
    assert f"({loss_type.upper() if loss_type == 'orpo' else 'SimPO'})" in (run.path / "model" / "README.md").read_text()
    AutoModelForCausalLM.from_pretrained(run.path / "model")


LABELS = "".join(json.dumps({"prompt": f"What is {i} plus one?", "completion": str(i + 1) if i % 2 else "Go away.", "label": "yes" if i % 2 else "no"}) + "\n"
                 for i in range(12))


@pytest.mark.parametrize("data", ["world", "labels.jsonl"])
def test_kto_learns_from_answers_labelled_good_or_bad(sft_run, store, tmp_path, data):
    from transformers import AutoModelForCausalLM

    if data != "world":
        (tmp_path / data).write_text(LABELS)
        data = str(tmp_path / data)
    run = Run.open(last_line(llm_lab("train", "kto", "--parent", sft_run, "--data", data, "--max-steps", "2", "--batch-size", "4",
                                     "--kl-every", "1", "--sample-every", "2", "--no-world-evals", *FEW)))
    rows = read_jsonl(run.path / "metrics.jsonl")
    keys = {k for r in rows for k in r}
    assert run.status == "completed" and {"loss", "rewards/chosen", "rewards/rejected", "kl", "kto/reference_point"} <= keys
    assert [r["step"] for r in rows if "kl" in r] == [0, 1, 2]  # the lab's KL on fixed chats, apart from KTO's own estimate
    AutoModelForCausalLM.from_pretrained(run.path / "model")


def test_kto_and_orpo_refuse_what_their_losses_cannot_take(sft_run, store, tmp_path):
    same = tmp_path / "same.jsonl"
    same.write_text("".join(json.dumps({"prompt": f"Q{i}?", "completion": "A.", "label": True}) + "\n" for i in range(4)))
    assert "KTO learns from good and bad answers both" in refused("train", "kto", "--parent", sft_run, "--data", str(same))
    assert "give it 2 or more" in refused("train", "kto", "--parent", sft_run, "--batch-size", "1")
    assert "ORPO's loss holds its own NLL term" in refused("train", "dpo", "--parent", sft_run, "--loss-type", "orpo", "--sft-weight", "0")
