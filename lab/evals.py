"""Evaluations that read a model the way a user would: by what it generates."""

from __future__ import annotations

import torch


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
