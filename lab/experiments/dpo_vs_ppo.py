"""dpo-vs-ppo: DPO and PPO from the same instruct model on the same preference data (DPO on the pairs, PPO on
their prompts with the reward model trained on those pairs), over several seeds. The claim: DPO is the cheaper,
more stable alternative to PPO, reaching as good a model for less compute.
"""

from __future__ import annotations

from lab.experiments import answers, apart, chain, pct, seconds, spread, world_of

QUESTION = "Is DPO the cheaper, more stable alternative to PPO: as good a model, for less compute, with less spread over seeds?"
RUNS = "DPO and PPO from the same instruct model on the same preference data (PPO through the reward model trained on it), one run of each per seed; then each model's gold win rate against the instruct model and its training time"
SEEDS = 3
METHODS = ("dpo", "ppo")


def plan(base: dict, seeds: list[int], scale: str) -> list:
    steps = chain(base, "tokenizer", "pretrain", "sft", "reward")
    for seed in seeds:
        for method in METHODS:
            stage, fields = base[method]
            steps.append((f"{method} seed {seed}", stage, {**fields, "seed": seed}))
    return steps


def measure(made: dict, device: str) -> dict:
    from lab import evals

    world = world_of(made["sft"])
    prompts = evals.comparison_prompts(world)
    baseline = answers(made["sft"], prompts, device)
    out = {"prompts": len(prompts), "methods": {}, "reward_seconds": seconds(made["reward"])}
    for method in METHODS:
        rows = []
        for step in [s for s in made if s.startswith(f"{method} seed ")]:
            replies = answers(made[step], prompts, device)
            h2h = evals.head_to_head(world, prompts, replies, baseline)
            rows.append({"run": made[step], "seed": int(step.rsplit(" ", 1)[1]), "seconds": seconds(made[step]), **h2h,
                         "gold_score": sum(world.judge(p, a).score for p, a in zip(prompts, replies)) / len(prompts)})
        out["methods"][method] = {"runs": rows, **{k: spread([r[k] for r in rows]) for k in ("win_rate", "decisive_win_rate", "gold_score", "seconds")}}
    return out


def conclude(m: dict) -> str:
    dpo, ppo = m["methods"]["dpo"], m["methods"]["ppo"]
    n = dpo["win_rate"]["n"]

    def rate(x):
        s = x["win_rate"]
        return f"{pct(s['mean'])} (seeds {pct(s['min'])}–{pct(s['max'])})" if s["n"] > 1 else pct(s["mean"])

    head = (f"Against the instruct model on {m['prompts']} held-out prompts (ties half), DPO won {rate(dpo)} and PPO {rate(ppo)}, over {n} "
            f"seed{'s' if n > 1 else ''}; DPO trained in {dpo['seconds']['mean']:.0f} s and PPO in {ppo['seconds']['mean']:.0f} s "
            f"plus {m['reward_seconds'] or 0:.0f} s for the reward model it needs.")
    if n > 1 and not apart(dpo["win_rate"], ppo["win_rate"]):
        quality = " Their win rates are within the spread over seeds: neither is better here."
    else:
        better = "DPO" if dpo["win_rate"]["mean"] >= ppo["win_rate"]["mean"] else "PPO"
        quality = f" {better} was better" + (" beyond the spread over seeds." if n > 1 else " (one seed: the difference may be chance).")
    ppo_cost = ppo["seconds"]["mean"] + (m["reward_seconds"] or 0)  # PPO needs its reward model trained first
    cheaper = dpo["seconds"]["mean"] < ppo_cost
    cost = (f" DPO was {ppo_cost / dpo['seconds']['mean']:.1f}× cheaper in time than PPO with its reward model." if cheaper
            else f" DPO was not cheaper: it took {dpo['seconds']['mean'] / ppo_cost:.1f}× the time of PPO with its reward model at these step counts.")
    stable = ""
    if n > 1:
        stable = (f" The spread of win rates over seeds (standard deviation) was {dpo['win_rate']['std'] * 100:.1f} points for DPO and "
                  f"{ppo['win_rate']['std'] * 100:.1f} for PPO: " + ("DPO was the more stable." if dpo["win_rate"]["std"] < ppo["win_rate"]["std"] else "DPO was not the more stable."))
    return head + quality + cost + stable


def figure(m: dict):
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("gold win rate vs the instruct model (ties ½)", "training time (s)"))
    for method, part in m["methods"].items():
        rows = part["runs"]
        fig.add_box(y=[r["win_rate"] for r in rows], name=method.upper(), boxpoints="all", row=1, col=1)
        fig.add_box(y=[r["seconds"] for r in rows], name=method.upper(), boxpoints="all", showlegend=False, row=1, col=2)
    fig.update_yaxes(range=[0, 1], tickformat=".0%", row=1, col=1)
    fig.update_layout(title="dpo-vs-ppo: the same preference data, several seeds", height=380, margin=dict(l=40, r=10, t=70, b=110), showlegend=False)
    return fig
