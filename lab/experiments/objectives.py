"""objectives: next-token (causal, a decoder) against masked-token (an encoder, BERT's) pretraining on the same
text with the same steps, batch and context. The claim: the objective decides what a model can do afterwards;
an encoder fills a blank from both sides, a decoder completes a prompt and, after SFT, answers in a chat.
"""

from __future__ import annotations

from lab.experiments import chain, pct, varied, world_of

QUESTION = "Does the pretraining objective decide what a model can do: fill a blank, complete a prompt, answer in a chat?"
RUNS = "a causal decoder and a masked-LM encoder pretrained on the same text and steps, and SFT on the decoder; then each fills a blank mid-sentence, completes a fact's prompt and answers a chat question"
SEEDS = 1


def plan(base: dict, seeds: list[int], scale: str) -> list:
    return [*chain(base, "tokenizer", "pretrain", "sft"), varied(base, "pretrain", "pretrain masked", objective="mlm")]


def _blank_template(kind: str) -> str:
    """A sentence of the fact's forms with text on both sides of its value, so a blank there has context after it."""
    from lab.world import text as T

    spec = T.FACT_TEXT[kind]
    return next((t for t in spec["train"] if not t.rstrip(".").endswith("{o}")), spec["prefix"] + " {o}.")


def _first(tokenizer, head: str, value: str) -> int | None:
    ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    full = tokenizer(f"{head} {value}", add_special_tokens=False)["input_ids"]
    return full[len(ids)] if full[: len(ids)] == ids and len(full) > len(ids) else None


def _masked(model, tokenizer, texts: list[str], options: list[list[str]], truths: list[str]) -> list[bool]:
    """The encoder at each text's one mask: whether the value it rates highest, of those the fact's kind can take
    (by the probability of each value's first token), is the truth."""
    import torch

    out = []
    for text, values, truth in zip(texts, options, truths):
        enc = tokenizer(text, return_tensors="pt").to(model.device)
        where = (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero()
        with torch.no_grad():
            logits = model(**enc).logits[0, where[0, 0]]
        head = text.split(tokenizer.mask_token)[0].rstrip()
        firsts = {v: _first(tokenizer, head, v) for v in values}
        best = max(values, key=lambda v: float(logits[firsts[v]]) if firsts[v] is not None else float("-inf"))
        out.append(firsts[best] is not None and firsts[best] == firsts.get(truth))
    return out


def _scored(model, tokenizer, sentences: list[list[str]], truths: list[str], options: list[list[str]]) -> list[bool]:
    """The decoder on a blank: whether, of the values the fact's kind can take, the sentence it finds likeliest is
    the one with the truth (a left-to-right model reads what follows the blank only this way)."""
    import torch

    out = []
    bos = tokenizer.bos_token or ""
    side, tokenizer.padding_side = tokenizer.padding_side, "right"  # every sentence from position 0
    for filled, truth, values in zip(sentences, truths, options):
        batch = tokenizer([bos + s for s in filled], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            logp = torch.log_softmax(model(**batch).logits[:, :-1].float(), -1)
        target = batch["input_ids"][:, 1:]
        mask = batch["attention_mask"][:, 1:].float()
        total = (logp.gather(-1, target[..., None])[..., 0] * mask).sum(-1)
        out.append(values[int(total.argmax())] == truth)
    tokenizer.padding_side = side
    return out


def measure(made: dict, device: str) -> dict:
    from lab import evals, inference
    from lab.runs import Run

    world = world_of(made["pretrain"])
    facts = [f for f in world.facts if f.kind != "arithmetic"]
    options = [world.candidates(f.kind) for f in facts]
    truths = [f.answer for f in facts]
    blanks = [_blank_template(f.kind) for f in facts]
    slots = [{"s": f.subject, "a": "", "b": ""} for f in facts]

    decoder = inference.load(made["pretrain"], "causal", device)
    dec_blank = _scored(decoder.model, decoder.tokenizer, [[b.format(o=v, **s) for v in vs] for b, s, vs in zip(blanks, slots, options)], truths, options)
    dec_complete = evals.fact_completion(decoder.model, decoder.tokenizer, [{"prefix": f.prefix, "answer": f.answer} for f in facts])["fact_accuracy"]
    instruct = inference.load(made["sft"], "causal", device)
    dec_chat = evals.chat_eval(instruct.model, instruct.tokenizer, world)

    from transformers import AutoModelForMaskedLM

    from lab import models

    path = Run.open(made["pretrain masked"]).model_dir
    model, tokenizer, _ = models.load_model(str(path), AutoModelForMaskedLM, "full", device)
    m = tokenizer.mask_token
    enc_blank = _masked(model, tokenizer, [b.format(o=m, **s) for b, s in zip(blanks, slots)], options, truths)
    enc_complete = _masked(model, tokenizer, [f"{f.prefix} {m}" for f in facts], options, truths)
    # what the encoder can do in a chat: fill the value of an answer the template already holds
    enc_chat = _masked(model, tokenizer, [tokenizer.apply_chat_template([{"role": "user", "content": f.question}, {"role": "assistant", "content": f"{f.prefix} {m}."}],
                                                                     tokenize=False) for f in facts], options, truths)
    return {"facts": len(facts), "chance": sum(1 / len(set(o)) for o in options) / len(options),
            "decoder": {"run": made["pretrain"], "sft_run": made["sft"], "fill_blank": sum(dec_blank) / len(facts), "complete": dec_complete,
                        "chat_fact_qa": dec_chat["fact_qa"], "chat_format": dec_chat["chat_format"], "writes_text": True},
            "encoder": {"run": made["pretrain masked"], "fill_blank": sum(enc_blank) / len(facts), "complete": sum(enc_complete) / len(facts),
                        "chat_fill": sum(enc_chat) / len(facts), "writes_text": False}}


def conclude(m: dict) -> str:
    d, e = m["decoder"], m["encoder"]
    text = (f"On {m['facts']} facts (chance {pct(m['chance'])} when picking among a kind's values): with a blank mid-sentence, the masked-LM encoder "
            f"picked the true value {pct(e['fill_blank'])} of the time and the causal decoder, scoring each filled sentence, {pct(d['fill_blank'])}. "
            f"Completing a fact's prompt, the decoder's next word was right {pct(d['complete'])} of the time (the encoder, filling one mask at the "
            f"end, {pct(e['complete'])}). After SFT the decoder answered {pct(d['chat_fact_qa'])} of chat fact questions in its own words, closing "
            f"its turn in {pct(d['chat_format'])}; the encoder writes no text (it fills masks in place), and given an answer with its value masked "
            f"it filled {pct(e['chat_fill'])}.")
    if e["fill_blank"] > d["fill_blank"] + 0.05:
        text += " The encoder was the better blank-filler, the decoder the only one that writes: the objective decided what each can do."
    else:
        text += (f" The encoder was not the better blank-filler here ({pct(e['fill_blank'])} against {pct(d['fill_blank'])}): the expected advantage of "
                 "reading both sides did not appear at this scale; only the difference in what each can write did.")
    return text


def figure(m: dict):
    import plotly.graph_objects as go

    tasks = {"fill_blank": "fill a blank mid-sentence", "complete": "complete a prompt", "chat": "answer a chat question"}
    d, e = m["decoder"], m["encoder"]
    fig = go.Figure()
    fig.add_bar(name="causal decoder (+ SFT for chat)", x=list(tasks.values()), y=[d["fill_blank"], d["complete"], d["chat_fact_qa"]])
    fig.add_bar(name="masked-LM encoder (chat: fills a masked answer)", x=list(tasks.values()), y=[e["fill_blank"], e["complete"], e["chat_fill"]])
    fig.add_hline(y=m["chance"], line_dash="dot", annotation_text="chance")
    fig.update_layout(barmode="group", title="objectives: what next-token and masked-token pretraining can do", yaxis=dict(range=[0, 1], tickformat=".0%"),
                      height=380, margin=dict(l=40, r=10, t=60, b=110), legend=dict(orientation="h", y=-0.25, yanchor="top"))
    return fig
