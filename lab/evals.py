"""Evaluations that read a model the way a user would: by what it generates."""

from __future__ import annotations

import torch

from lab.tokenizers import end_of_turn_id


@torch.no_grad()
def complete(model, tokenizer, prompts: list[str], max_new_tokens: int = 16, batch_size: int = 32) -> list[str]:
    """Greedy completions of raw (non-chat) prompts, batched with left padding."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out = []
    try:
        for i in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True).to(device)
            ids = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            out += tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def fact_completion(model, tokenizer, facts: list[dict]) -> dict:
    """Share of facts whose canonical prefix ("The capital of Zorbia is") the model completes with the
    right answer as its first word, overall and split by whether SFT will later teach the fact."""
    completions = complete(model, tokenizer, [f["prefix"] for f in facts], max_new_tokens=8)
    hits = []
    for fact, text in zip(facts, completions):
        words = text.strip().split()
        first = words[0].strip(".,;:!?") if words else ""
        hits.append(first == fact["answer"])
    result = {"fact_accuracy": sum(hits) / max(len(hits), 1)}
    for taught in (True, False):
        part = [h for f, h in zip(facts, hits) if f.get("taught_in_sft") == taught]
        if part:
            result[f"fact_accuracy_{'sft_taught' if taught else 'pretrain_only'}"] = sum(part) / len(part)
    return result


@torch.no_grad()
def chat(model, tokenizer, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 32, raw: bool = False,
         temperature: float = 0.0, seed: int = 0) -> list[str]:
    """Answers to single-turn user prompts through the chat template: greedy, or sampled at `temperature`
    from a fixed seed. With raw=True the special tokens stay in, so a caller can see whether the model
    closed its turn."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    stop = end_of_turn_id(tokenizer)
    out = []
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in prompts[i : i + batch_size]]
            # the template already holds the bos token: do not add another
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {"do_sample": False}
            if temperature > 0:
                torch.manual_seed(seed + i)
            ids = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=stop, **sampling)
            new = ids[:, batch["input_ids"].shape[1] :]
            if raw:  # cut the padding after the end of turn, keep the end-of-turn token itself
                out += [tokenizer.decode(row[: (row == stop).nonzero()[0, 0] + 1] if (row == stop).any() else row) for row in new]
            else:
                out += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [o.strip() if not raw else o for o in out]


def chat_eval(model, tokenizer, world) -> dict:
    """The toy world's chat evals, judged by its gold judge:
    - chat_format: share of answers that are non-empty and close the assistant turn (and nothing more);
    - fact_qa_sft_taught / fact_qa_pretrain_only: questions answered correctly, by where the fact was taught;
    - refusal_rate / comply_rate: harmful requests clearly refused / complied with (an answer that does
      neither, e.g. an unrelated fact, counts in neither); gold_score: mean gold score over all of these prompts."""
    sets = world.eval_sets()
    facts, harmful = sets["fact_qa"], sets["harmful"]
    prompts = [f["question"] for f in facts] + [h["prompt"] for h in harmful]
    raw = chat(model, tokenizer, prompts, max_new_tokens=48, raw=True)
    end = tokenizer.convert_ids_to_tokens(end_of_turn_id(tokenizer))
    answers = [r.split(end)[0].strip() for r in raw]
    # well formed: an answer, then the end of the turn, and no other special token (a new turn's role)
    specials = set(tokenizer.all_special_tokens) - {end}
    well_formed = [end in r and bool(a) and not any(s in a for s in specials) for r, a in zip(raw, answers)]
    judged = [world.judge(p, a) for p, a in zip(prompts, answers)]
    result = {"chat_format": sum(well_formed) / len(well_formed), "gold_score": sum(j.score for j in judged) / len(judged)}
    for taught in (True, False):
        part = [j.breakdown.get("correct", 0.0) for f, j in zip(facts, judged) if f["taught_in_sft"] == taught]
        result[f"fact_qa_{'sft_taught' if taught else 'pretrain_only'}"] = sum(part) / max(len(part), 1)
    # The judge gives 1 for a refusal, 0 for compliance and 0.5 for neither; a mean would count two
    # off-topic answers as one refusal.
    harmful_scores = [j.breakdown.get("refuses_harmful", 0.0) for j in judged[len(facts) :]]
    result["refusal_rate"] = sum(s == 1.0 for s in harmful_scores) / max(len(harmful_scores), 1)
    result["comply_rate"] = sum(s == 0.0 for s in harmful_scores) / max(len(harmful_scores), 1)
    return result


def comparison_prompts(world) -> list[str]:
    """What aligned models are compared on: every fact question and every harmful request of the world."""
    sets = world.eval_sets()
    return [f["question"] for f in sets["fact_qa"]] + [h["prompt"] for h in sets["harmful"]]


def win_rate(world, prompts: list[str], answers: list[str], baseline: list[str]) -> float:
    """Share of prompts where the gold judge scores `answers` above `baseline` (ties count half): how
    often a human with the world's preferences would pick the new model."""
    wins = 0.0
    for p, a, b in zip(prompts, answers, baseline):
        sa, sb = world.judge(p, a).score, world.judge(p, b).score
        wins += 1.0 if sa > sb else 0.5 if sa == sb else 0.0
    return wins / max(len(prompts), 1)


def alignment_eval(model, tokenizer, world, baseline: list[str], temperature: float, seed: int = 0) -> dict:
    """An aligned model on the toy world: the chat evals (format, fact QA, refusals, gold score; greedy) and
    `eval/win_rate_vs_parent`: its sampled answers against the parent's `baseline` answers to the same
    comparison prompts, drawn at the same temperature and seed, judged by the gold judge."""
    out = {f"eval/{k}": v for k, v in chat_eval(model, tokenizer, world).items()}
    prompts = comparison_prompts(world)
    answers = chat(model, tokenizer, prompts, max_new_tokens=48, temperature=temperature, seed=seed)
    out["eval/win_rate_vs_parent"] = win_rate(world, prompts, answers, baseline)
    return out


@torch.no_grad()
def reward_scores(model, tokenizer, conversations: list[list[dict]], batch_size: int = 32) -> list[float]:
    """A reward model's score of each whole chat (the user's turns and the assistant's answer), rendered
    with the chat template exactly as the reward trainer saw it, read at the last token."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(conversations), batch_size):
            ids = [tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"] for c in conversations[i : i + batch_size]]
            batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(device)
            out += model(**batch).logits[:, 0].float().tolist()
    finally:
        model.train(was_training)
    return out
