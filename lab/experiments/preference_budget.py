"""preference-budget: the reward model and DPO trained on 50, 200, 800 and all of the toy world's preference
pairs. Preference labels are the costly part of alignment (people rank answers); this
measures what each budget of labels buys: the reward model's accuracy on held-out pairs and the DPO model's
gold win rate against the instruct model. At default scale each budget trains long enough to see every pair
twice (never fewer steps than the lifecycle's run): with the lifecycle's steps for all, all 1,965 pairs were not
even seen once each, and the budget past 1,280 pairs bought nothing because it was never read.
"""

from __future__ import annotations

from lab.experiments import answers, chain, enough_steps, pct, varied, world_of

QUESTION = "What does human feedback buy: how do the reward model and DPO improve with the number of preference pairs?"
RUNS = "a reward model and a DPO model on 50, 200, 800 and all of the world's preference pairs (at default scale, steps to see every pair twice, and never fewer than the lifecycle's); then the reward model's held-out accuracy and DPO's gold win rate against the instruct model"
SEEDS = 1
BUDGETS = {"nano": (50, 200, 0), "default": (50, 200, 800, 0)}  # 0: all of them
# Passes over each budget's pairs at the least. Nano keeps the lifecycle's steps for every budget: it is what the
# tests run, and at nano's step counts the claim is not measurable anyway.
EPOCHS = {"nano": 0, "default": 2}


def _name(stage: str, budget: int) -> str:
    return f"{stage} {'all pairs' if not budget else f'{budget} pairs'}"


def plan(base: dict, seeds: list[int], scale: str) -> list:
    from lab import stages

    steps = chain(base, "tokenizer", "pretrain", "sft")
    epochs = EPOCHS.get(scale, 0)
    everything = len(stages.preference_splits("world")[0])
    for budget in BUDGETS[scale]:
        fields = {"max_pairs": budget} if budget else {}
        for step in ("reward", "dpo"):
            steps.append(varied(base, step, _name(step, budget), **fields, **enough_steps(base, step, budget or everything, epochs)))
    return steps


def measure(made: dict, device: str) -> dict:
    from lab import evals, inference, stages
    from lab.runs import Run
    from lab.stages.reward import heldout_accuracy

    world = world_of(made["sft"])
    train, heldout = stages.preference_splits("world")
    prompts = evals.comparison_prompts(world)
    baseline = answers(made["sft"], prompts, device)
    rows = []
    for step in [s for s in made if s.startswith("reward ")]:
        label = step.removeprefix("reward ")
        budget = len(train) if label == "all pairs" else int(label.split()[0])
        scorer = inference.load(made[step], "reward", device)
        accuracy = heldout_accuracy(scorer.model, scorer.tokenizer, heldout)
        h2h = evals.head_to_head(world, prompts, answers(made[f"dpo {label}"], prompts, device), baseline)
        rows.append({"pairs": budget, "reward_run": made[step], "dpo_run": made[f"dpo {label}"],
                     "reward_steps": Run.open(made[step]).config["max_steps"], "dpo_steps": Run.open(made[f"dpo {label}"]).config["max_steps"],
                     "reward_accuracy": accuracy["accuracy"],
                     **{k: v for k, v in accuracy.items() if k.startswith("accuracy_")}, "dpo_win_rate": h2h["win_rate"],
                     "dpo_decisive_win_rate": h2h["decisive_win_rate"]})
    rows.sort(key=lambda r: r["pairs"])
    return {"budgets": rows, "heldout_pairs": len(heldout), "train_pairs": len(train), "prompts": len(prompts)}


def conclude(m: dict) -> str:
    rows = m["budgets"]
    few, most = rows[0], rows[-1]
    text = (f"With {few['pairs']} pairs the reward model ranked {pct(few['reward_accuracy'])} of {m['heldout_pairs']} held-out pairs right and DPO won "
            f"{pct(few['dpo_win_rate'])} against the instruct model; with all {most['pairs']}, {pct(most['reward_accuracy'])} and "
            f"{pct(most['dpo_win_rate'])}. By budget (reward model / DPO, and their steps): " + "; ".join(
                f"{r['pairs']} pairs: {pct(r['reward_accuracy'])} / {pct(r['dpo_win_rate'])} ({r.get('reward_steps', '?')} / {r.get('dpo_steps', '?')} steps)" for r in rows) + ".")
    gain = most["reward_accuracy"] - few["reward_accuracy"]
    if gain >= 0.05:
        half = next((r for r in rows if r["reward_accuracy"] - few["reward_accuracy"] >= gain / 2), most)
        text += (f" More labels bought a better reward model (+{gain * 100:.0f} points), half of that gain by {half['pairs']} pairs: "
                 "the first labels are worth the most.")
    else:
        text += f" The expected effect did not appear for the reward model: its accuracy moved {gain * 100:+.0f} points from the fewest pairs to all of them."
    for key, what in (("reward_accuracy", "the reward model's accuracy"), ("dpo_win_rate", "DPO's win rate")):
        peak = max(rows, key=lambda r: r[key])
        if peak is not most and peak[key] - most[key] >= 0.02:
            text += (f" The curve did not rise to the end: {what} peaked at {peak['pairs']} pairs ({pct(peak[key])}) and was "
                     f"{pct(most[key])} with all {most['pairs']}.")
    dpo_gain = most["dpo_win_rate"] - few["dpo_win_rate"]
    text += (f" DPO's win rate moved {dpo_gain * 100:+.0f} points" + (" with the budget." if abs(dpo_gain) >= 0.03 else
             ", within what one seed can tell apart: at these step counts DPO gained little from more pairs."))
    return text


def figure(m: dict):
    from plotly.subplots import make_subplots

    rows = m["budgets"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("reward model: held-out pair accuracy", "DPO: gold win rate vs the instruct model"))
    x = [r["pairs"] for r in rows]
    fig.add_scatter(x=x, y=[r["reward_accuracy"] for r in rows], mode="lines+markers", name="reward model", row=1, col=1)
    fig.add_scatter(x=x, y=[r["dpo_win_rate"] for r in rows], mode="lines+markers", name="DPO", row=1, col=2)
    fig.update_xaxes(type="log", title_text="preference pairs")
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    fig.update_layout(title="preference-budget: what more preference pairs buy", height=380, margin=dict(l=40, r=10, t=70, b=110), showlegend=False)
    return fig
