"""sft-data-quality: SFT on N clean chats against SFT on 4N chats of which three quarters are rude, rambling,
wrong or comply with harmful requests, from the same base with the same steps. The claim (LIMA's, among
others): the quality of SFT data matters more than its quantity.
"""

from __future__ import annotations

from lab.experiments import chain, pct, varied, world_of

QUESTION = "Does SFT data quality matter more than quantity: N clean chats against 4N mostly bad ones?"
RUNS = "SFT from the same base, same steps, on N clean chats and on 4N chats of which 75% are rude, rambling, wrong or comply with harmful requests; then gold score, refusals, fact QA, rudeness and rambling"
SEEDS = 1
CLEAN = {"nano": 60, "default": 100}  # N
BAD_SHARE = 0.75
SETS = {"clean": 1, "noisy": 4}  # how many times N chats


def data(world, scale: str) -> dict[str, list[dict]]:
    """The two SFT sets, by the name the plan gives their files."""
    n = CLEAN[scale]
    return {"clean": world.sft_chats_of_quality(n, 0.0), "noisy": world.sft_chats_of_quality(SETS["noisy"] * n, BAD_SHARE)}


def plan(base: dict, seeds: list[int], scale: str) -> list:
    steps = chain(base, "tokenizer", "pretrain")
    steps.append(varied(base, "sft", f"sft on {CLEAN[scale]} clean chats", data="{clean}"))
    steps.append(varied(base, "sft", f"sft on {SETS['noisy'] * CLEAN[scale]} mostly bad chats", data="{noisy}"))
    return steps


def measure(made: dict, device: str) -> dict:
    from lab import evals, inference

    world = world_of(made["pretrain"])
    prompts = evals.comparison_prompts(world)
    out = {"models": {}}
    for step in [s for s in made if s.startswith("sft on ")]:
        loaded = inference.load(made[step], "causal", device)
        scores = evals.chat_eval(loaded.model, loaded.tokenizer, world)
        replies = evals.chat(loaded.model, loaded.tokenizer, prompts, max_new_tokens=48)
        verdicts = [world.judge(p, a).breakdown for p, a in zip(prompts, replies)]
        label = step.removeprefix("sft on ")
        out["models"][label] = {"run": made[step], "chats": int(label.split()[0]),
                                **{k: scores[k] for k in ("gold_score", "refusal_rate", "comply_rate", "fact_qa", "chat_format")},
                                "rude": sum(v.get("polite", 1) < 1 for v in verdicts) / len(verdicts),
                                "rambling": sum(v.get("concise", 1) < 1 for v in verdicts) / len(verdicts)}
    out["bad_share"] = BAD_SHARE
    return out


def conclude(m: dict) -> str:
    (clean_label, clean), (noisy_label, noisy) = sorted(m["models"].items(), key=lambda kv: kv[1]["chats"])
    text = (f"SFT on {clean_label} reached a gold score of {clean['gold_score']:.2f}, refused {pct(clean['refusal_rate'])} of harmful requests "
            f"(complied with {pct(clean['comply_rate'])}), answered {pct(clean['fact_qa'])} of fact questions, and was rude in {pct(clean['rude'])} "
            f"and rambling in {pct(clean['rambling'])} of its answers; on {noisy_label} ({m['bad_share']:.0%} bad): {noisy['gold_score']:.2f}, "
            f"{pct(noisy['refusal_rate'])} (complied {pct(noisy['comply_rate'])}), {pct(noisy['fact_qa'])}, rude {pct(noisy['rude'])}, rambling {pct(noisy['rambling'])}.")
    gap = clean["gold_score"] - noisy["gold_score"]
    if gap >= 0.03:
        text += f" Quality beat quantity: a quarter as many chats, all clean, gave a gold score {gap:.2f} higher."
    elif gap <= -0.03:
        text += f" The expected effect did not appear: four times the chats, mostly bad, scored {-gap:.2f} higher on the gold judge."
    else:
        text += f" The two were within {abs(gap):.2f} of each other on the gold judge: neither quality nor quantity clearly won here."
    # the gold score is one number; say where the larger, noisier set still did better (its bad chats carry facts too)
    better = [f"{what} ({pct(noisy[k])} against {pct(clean[k])})" for k, what in (("fact_qa", "fact questions answered"), ("refusal_rate", "harmful requests refused"))
              if noisy[k] - clean[k] >= 0.05]
    if better:
        text += f" Quantity still won on {' and '.join(better)}."
    return text


def figure(m: dict):
    import plotly.graph_objects as go

    keys = {"gold_score": "gold score", "refusal_rate": "refuses harmful", "comply_rate": "complies with harmful", "fact_qa": "fact QA",
            "rude": "rude answers", "rambling": "rambling answers"}
    fig = go.Figure()
    for label, r in sorted(m["models"].items(), key=lambda kv: kv[1]["chats"]):
        fig.add_bar(name=label, x=list(keys.values()), y=[r[k] for k in keys])
    fig.update_layout(barmode="group", title="sft-data-quality: N clean chats against 4N mostly bad ones", yaxis=dict(range=[0, 1], tickformat=".0%"),
                      height=380, margin=dict(l=40, r=10, t=60, b=110), legend=dict(orientation="h", y=-0.25, yanchor="top"))
    return fig
