"""hallucination: how sure a model is of the answer's first token, for facts it read in pretraining and for
entities it never saw. The claim: a hallucination is not a malfunction but a confident prediction like any
other, so the model is about as sure of a value it makes up as of one it knows, and its confidence is a poor
guide to its truth.
"""

from __future__ import annotations

from lab.experiments import chain, num, pct, world_of

QUESTION = "Is a hallucination a confident high-probability prediction: is the model as sure of made-up answers as of known ones?"
RUNS = "the lifecycle's base and instruct models complete every fact of the world and the same questions about 48 entities they never saw; the first answer token's probability and entropy are read, and whether it begins a value of the right kind"
SEEDS = 1
CONFIDENT = 0.5
BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def plan(base: dict, seeds: list[int], scale: str) -> list:
    return chain(base, "tokenizer", "pretrain", "sft")


def first_token(model, tokenizer, heads: list[str], truths: list[str | None], values: list[list[str]]) -> list[dict]:
    """At the end of each head (a prompt ending where the answer's value starts), the model's most likely next
    token, its probability, the entropy of the distribution in nats, whether that token starts one of the values
    a fact of its kind can take (`values`: a capital for a capital, a job for a job), and whether it starts the
    truth (None when there is none to know)."""
    import torch

    device = next(model.parameters()).device
    model.eval()
    out = []
    for head, truth, options in zip(heads, truths, values):
        ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids], device=device)).logits[0, -1].float()
        probs = torch.softmax(logits, -1)
        p, top = probs.max(-1)

        def starts(value: str) -> int | None:
            full = tokenizer(f"{head} {value}", add_special_tokens=False)["input_ids"]
            return full[len(ids)] if full[: len(ids)] == ids and len(full) > len(ids) else None

        out.append({"p": float(p), "entropy": float(-(probs * torch.log(probs.clamp_min(1e-12))).sum()),
                    "value": int(top) in {starts(v) for v in options}, "right": None if truth is None else starts(truth) == int(top),
                    "token": tokenizer.decode([int(top)]).strip()})
    return out


def _heads(tokenizer, rows: list[dict], chat: bool) -> list[str]:
    """Where each answer's value starts: the base model reads the fact's prefix ("The capital of Zorbia is"); the
    instruct model the question in its chat template, its answer begun with that prefix."""
    bos = tokenizer.bos_token or ""
    if not chat:
        return [bos + r["prefix"] for r in rows]
    heads = []
    for r in rows:
        text = tokenizer.apply_chat_template([{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["prefix"]}], tokenize=False)
        heads.append(text[: text.rindex(r["prefix"]) + len(r["prefix"])])
    return heads


def _summary(rows: list[dict]) -> dict:
    n = max(len(rows), 1)
    return {"n": len(rows), "mean_p": sum(r["p"] for r in rows) / n if rows else None, "mean_entropy": sum(r["entropy"] for r in rows) / n if rows else None,
            "confident_share": sum(r["p"] > CONFIDENT for r in rows) / n}


def measure(made: dict, device: str) -> dict:
    from lab import inference

    world = world_of(made["pretrain"])
    seen = [{"kind": f.kind, "prefix": f.prefix, "question": f.question, "answer": f.answer} for f in world.facts if f.kind != "arithmetic"]
    unseen = world.unseen_facts()
    out = {"models": {}}
    for label, step, chat in (("base", "pretrain", False), ("instruct", "sft", True)):
        loaded = inference.load(made[step], "causal", device)
        tok = loaded.tokenizer
        known = first_token(loaded.model, tok, _heads(tok, seen, chat), [r["answer"] for r in seen], [world.candidates(r["kind"]) for r in seen])
        # an unseen entity has no true value: a value of its kind, stated, is made up
        made_up = first_token(loaded.model, tok, _heads(tok, unseen, chat), [None] * len(unseen), [world.candidates(r["kind"]) for r in unseen])
        right = [r for r in known if r["right"]]
        wrong = [r for r in known if not r["right"] and r["value"]]  # a wrong value, not another kind of word
        invented = [r for r in made_up if r["value"]]
        confident = [r for r in known + made_up if r["value"] and r["p"] > CONFIDENT]
        calibration = []
        for lo, hi in zip(BINS, BINS[1:]):
            part = [r for r in known if lo < r["p"] <= hi or (lo == 0 and r["p"] == 0)]
            calibration.append({"from": lo, "to": hi, "n": len(part), "mean_p": sum(r["p"] for r in part) / len(part) if part else None,
                                "accuracy": sum(bool(r["right"]) for r in part) / len(part) if part else None})
        filled = [c for c in calibration if c["n"]]
        out["models"][label] = {
            "run": made[step], "accuracy": len(right) / max(len(known), 1),
            "known_right": _summary(right), "known_wrong": _summary(wrong), "unseen": _summary(invented),
            "unseen_invents": len(invented) / max(len(made_up), 1),
            "confident_wrong_share": sum(1 for r in confident if not r["right"]) / len(confident) if confident else None,
            "calibration": calibration,
            "calibration_error": sum(c["n"] * abs(c["mean_p"] - c["accuracy"]) for c in filled) / max(sum(c["n"] for c in filled), 1),
            "unseen_examples": [f"{u['prefix']} {r['token']}… (p {r['p']:.2f})" for u, r in zip(unseen, made_up) if r["value"]][::5][:6],
            "p_right": [r["p"] for r in right], "p_wrong": [r["p"] for r in wrong], "p_unseen": [r["p"] for r in invented]}
    out["facts"], out["unseen_entities"] = len(seen), len(unseen)
    return out


def conclude(m: dict) -> str:
    parts = []
    for label, r in m["models"].items():
        right, wrong, unseen = (r[k]["mean_p"] for k in ("known_right", "known_wrong", "unseen"))
        confident = (f"{pct(r['confident_wrong_share'])} of its confident answers (p > {CONFIDENT}) were wrong" if r["confident_wrong_share"] is not None
                     else f"none of its values was confident (p > {CONFIDENT})")
        text = (f"The {label} model got {pct(r['accuracy'])} of {m['facts']} facts right. Asked about {m['unseen_entities']} entities it never saw, "
                f"it began a made-up value of the right kind {pct(r['unseen_invents'])} of the time. Its first answer token had a mean probability "
                f"of {num(right)} on the facts it got right, {num(wrong)} on the wrong values it gave, and {num(unseen)} on made-up values; "
                f"{confident} (calibration error {r['calibration_error']:.2f}).")
        if right is None or unseen is None:
            text += " Too few answers of one kind to compare their confidence."
        elif unseen >= 0.75 * right:
            text += " It was about as sure of values it made up as of facts it knew: the claim holds; its confidence does not tell the two apart."
        elif unseen >= 0.5 * right:
            text += f" It was less sure of made-up values than of known facts ({unseen / right:.0%} of the confidence), but not by much: the claim holds in part."
        else:
            text += (f" It was far less sure of made-up values than of known facts ({unseen / right:.0%} of the confidence): the expected effect did "
                     "not appear; this model's confidence does tell what it knows.")
        parts.append(text)
    return " ".join(parts)


def figure(m: dict):
    from plotly.subplots import make_subplots

    labels = list(m["models"])
    fig = make_subplots(rows=1, cols=1 + len(labels), subplot_titles=("calibration on known facts", *[f"{x}: first-token probability" for x in labels]))
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="perfect calibration", row=1, col=1)
    for label, r in m["models"].items():
        points = [c for c in r["calibration"] if c["n"]]
        fig.add_scatter(x=[c["mean_p"] for c in points], y=[c["accuracy"] for c in points], mode="lines+markers", name=f"{label}",
                        text=[f"{c['n']} facts" for c in points], row=1, col=1)
    for col, (label, r) in enumerate(m["models"].items(), start=2):
        for key, what, color in (("p_right", "right values", "#2ca02c"), ("p_wrong", "wrong values", "#ff7f0e"), ("p_unseen", "made-up values", "#d62728")):
            fig.add_histogram(x=r[key], name=f"{label}: {what}", xbins=dict(start=0, end=1, size=0.1), opacity=0.55, marker_color=color, row=1, col=col)
    fig.update_xaxes(range=[0, 1], title_text="probability of the first answer token")
    fig.update_yaxes(title_text="accuracy", range=[0, 1], row=1, col=1)
    fig.update_layout(barmode="overlay", title="hallucination: confidence of known and made-up answers", height=400, margin=dict(l=40, r=10, t=70, b=110),
                      legend=dict(orientation="h", y=-0.25, yanchor="top"))
    return fig
