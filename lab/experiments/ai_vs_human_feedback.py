"""ai-vs-human-feedback: the same budget of labels from the gold judge (standing in for careful people) against
as many and against many more labels from an AI labeler (RLAIF, Constitutional AI's feedback half). The lab
trains the labeler itself: SFT from the base on the toy world's judging chats (lab.labeler), so it is a model
that judges, not the gold rules. The instruct model samples answers to the world's prompts; every two answers
to a prompt are a candidate pair, which the gold judge labels by its score and the labeler by its verdict
under the constitution as a whole (the sum of its log-odds over the principles). A reward model and a DPO
model then train on each label set, and are measured as in preference-budget (the reward model's accuracy on
the world's held-out pairs, DPO's gold win rate against the instruct model), and the reward models also on
gold-labeled pairs of answers sampled for prompts no label set holds: the world's pairs are what the labeler
learnt to judge from, the sampled ones what the gold labels are like.
"""

from __future__ import annotations

import random

from lab.experiments import answers, chain, enough_steps, pct, varied, world_of

QUESTION = "Can many AI labels stand in for fewer careful human ones: a reward model and DPO on gold labels against AI labels?"
RUNS = ("a labeler (SFT on the world's judging chats); the instruct model's sampled answers labeled by the gold judge (N pairs) and by the "
        "labeler (N, and many times N); a reward model and a DPO model on each label set; then the labeler's agreement with the gold "
        "judge, the reward models' accuracy on the world's held-out pairs and on held-out sampled pairs, and DPO's gold win rate against the instruct model")
SEEDS = 1
BUDGET = {"nano": 50, "default": 200}  # N: the gold judge's labels, and the AI's at the same budget
MANY = {"nano": 4, "default": 8}  # the AI's large budget, in times N
JUDGE_STEPS = {"nano": 300, "default": 500}  # the labeler's SFT (RESULTS, "A judge the toy world trains")
EPOCHS = {"nano": 0, "default": 2}  # as preference-budget: at default, each label set seen twice at the least
SAMPLES = 4  # answers per prompt: 6 candidate pairs each
HELDOUT = 40  # prompts whose gold-labeled pairs no run trains on
ARMS = ("gold", "ai", "ai many")


def data(world, scale: str) -> dict[str, list[dict]]:
    from lab import labeler

    return {"judging": labeler.judging_chats(world, "train")}


def _budget(arm: str, scale: str) -> int:
    return BUDGET[scale] * (MANY[scale] if arm == "ai many" else 1)


def plan(base: dict, seeds: list[int], scale: str) -> list:
    steps = chain(base, "tokenizer", "pretrain", "sft")
    steps.append(varied(base, "sft", "labeler", data="{judging}", max_steps=JUDGE_STEPS[scale], kl_every=0, sample_every=0))
    steps.append(("labels", "data", {}))  # computed from the runs above: data_from_runs
    for arm in ARMS:
        pairs = _budget(arm, scale)
        for step in ("reward", "dpo"):
            steps.append(varied(base, step, f"{step} on {arm} labels", data=f"{{{arm} labels}}", **enough_steps(base, step, pairs, EPOCHS[scale])))
    return steps


def data_from_runs(made: dict, scale: str, device: str) -> dict[str, list[dict]]:
    """The label sets: candidate pairs of the instruct model's sampled answers, labeled by the gold judge (its
    score; a tie is no label) and by the labeler (its summed log-odds; 0 is no label), the first N or many N."""
    from lab import evals, inference, labeler, stages

    world = world_of(made["sft"])
    want = _budget("ai many", scale)
    prompts = [p[-1]["content"] for p in stages.prompt_set("world")]
    random.Random(f"ai-vs-human/{scale}").shuffle(prompts)
    # enough prompts for the largest budget (6 candidates each, of which some are the same answer twice or a tie),
    # and HELDOUT prompts apart whose gold-labeled pairs measure the reward models on answers like those they learnt
    prompts = prompts[: min(len(prompts), want // 3 + 10 + HELDOUT)]
    policy = inference.load(made["sft"], "causal", device)
    sampled = evals.chat(policy.model, policy.tokenizer, [p for p in prompts for _ in range(SAMPLES)], max_new_tokens=48, temperature=1.0, seed=0)
    candidates = []
    for i, prompt in enumerate(prompts):
        distinct = list(dict.fromkeys(a for a in sampled[i * SAMPLES : (i + 1) * SAMPLES] if a.strip()))
        candidates += [(prompt, distinct[x], distinct[y]) for x in range(len(distinct)) for y in range(x + 1, len(distinct))]
    judge = inference.load(made["labeler"], "causal", device)
    odds = labeler.overall_odds(judge.model, judge.tokenizer, candidates, labeler.DEFAULT_CONSTITUTION)
    apart = set(prompts[-HELDOUT:])
    gold, ai, heldout = [], [], []
    for (prompt, a, b), o in zip(candidates, odds):
        ga, gb = world.judge(prompt, a).score, world.judge(prompt, b).score
        label = {"prompt": prompt, "chosen": a if ga > gb else b, "rejected": b if ga > gb else a}
        if prompt in apart:
            heldout += [label] if ga != gb else []
            continue
        gold += [label] if ga != gb else []
        if o != 0:
            ai.append({"prompt": prompt, "chosen": a if o > 0 else b, "rejected": b if o > 0 else a, "margin": round(abs(o), 4)})
    n = BUDGET[scale]
    return {"gold labels": gold[:n], "ai labels": ai[:n], "ai many labels": ai[:want], "heldout labels": heldout}


def _labels(path: str) -> list[dict]:
    from pathlib import Path

    from lab.runs import read_jsonl_from

    return read_jsonl_from(Path(path))[0]


def measure(made: dict, device: str) -> dict:
    from lab import evals, inference, labeler, stages
    from lab.stages.reward import heldout_accuracy

    world = world_of(made["sft"])
    _, heldout = stages.preference_splits("world")
    sampled_heldout, _ = stages.preference_splits(made["heldout labels"], heldout_fraction=0)
    prompts = evals.comparison_prompts(world)
    baseline = answers(made["sft"], prompts, device)
    judge = inference.load(made["labeler"], "causal", device)
    held = labeler.agreement_with_gold(judge.model, judge.tokenizer, world)
    arms = []
    for arm in ARMS:
        reward, dpo = made[f"reward on {arm} labels"], made[f"dpo on {arm} labels"]
        scorer = inference.load(reward, "reward", device)
        accuracy = heldout_accuracy(scorer.model, scorer.tokenizer, heldout)
        on_sampled = heldout_accuracy(scorer.model, scorer.tokenizer, sampled_heldout)
        h2h = evals.head_to_head(world, prompts, answers(dpo, prompts, device), baseline)
        arms.append({"arm": arm, "labeler": "gold judge" if arm == "gold" else "AI labeler", "labels": len(_labels(made[f"{arm} labels"])),
                     "reward_run": reward, "dpo_run": dpo, "reward_accuracy": accuracy["accuracy"], "reward_accuracy_sampled": on_sampled.get("accuracy"),
                     "dpo_win_rate": h2h["win_rate"], "dpo_decisive_win_rate": h2h["decisive_win_rate"]})
    # how right the AI's labels were: the gold judge on each pair the labeler decided
    verdicts = [(lambda c, r: (c > r) - (c < r))(world.judge(p["prompt"], p["chosen"]).score, world.judge(p["prompt"], p["rejected"]).score)
                for p in _labels(made["ai many labels"])]
    decided = [v for v in verdicts if v]
    return {"arms": arms, "heldout_pairs": len(heldout), "sampled_heldout_pairs": len(sampled_heldout), "prompts": len(prompts), "labeler_heldout_agreement": held["agreement"],
            "labeler_by_principle": held["by_principle"], "label_agreement": sum(v > 0 for v in decided) / len(decided) if decided else None,
            "ai_labels_gold_tied": (len(verdicts) - len(decided)) / len(verdicts) if verdicts else None}


def conclude(m: dict) -> str:
    arm = {a["arm"]: a for a in m["arms"]}
    gold, ai, many = arm["gold"], arm["ai"], arm["ai many"]

    def row(a: dict) -> str:
        return f"{a['labels']} {'gold' if a['arm'] == 'gold' else 'AI'} labels {pct(a['reward_accuracy'])} / {pct(a['reward_accuracy_sampled'])} / {pct(a['dpo_win_rate'])}"

    text = (f"The gold judge agreed with {pct(m['label_agreement'])} of the AI labels it did not score level ({pct(m['ai_labels_gold_tied'])} "
            f"were a tie to it); the labeler, which learnt to judge from the world's own gold-labeled pairs, got {pct(m['labeler_heldout_agreement'])} "
            f"of the world's held-out pairs right. Reward model accuracy on the world's {m['heldout_pairs']} held-out pairs / on "
            f"{m['sampled_heldout_pairs']} gold-labeled pairs of held-out prompts' sampled answers / DPO's win rate against the instruct model: "
            f"{row(gold)}; {row(ai)}; {row(many)}.")

    def compare(x: dict, y: dict, what: str) -> str:  # y's reward model against x's, on each held-out set
        parts = []
        for key, where in (("reward_accuracy", "the world's pairs"), ("reward_accuracy_sampled", "the sampled answers")):
            if x.get(key) is not None and y.get(key) is not None:
                gap = y[key] - x[key]
                parts.append(f"{'level' if abs(gap) < 0.03 else 'better' if gap > 0 else 'worse'} on {where} ({gap * 100:+.0f} points)")
        mixed = any(p.startswith("better") for p in parts) and any(p.startswith("worse") for p in parts)
        return (f" {what}: the reward model was " + " and ".join(parts)
                + (": each label set taught what its own labeler prefers." if mixed else " (one seed)."))

    text += compare(gold, ai, "The same number of AI labels against gold ones")
    text += compare(gold, many, f"{many['labels'] // max(gold['labels'], 1)}× as many AI labels against the gold ones")
    dpo_gap = many["dpo_win_rate"] - gold["dpo_win_rate"]
    text += (f" DPO's win rate moved {dpo_gap * 100:+.0f} points from the gold labels to the many AI labels"
             + (", within what one seed can tell apart." if abs(dpo_gap) < 0.03 else "."))
    return text


def figure(m: dict):
    from plotly.subplots import make_subplots

    arms = m["arms"]
    names = [f"{a['labels']} {'gold' if a['arm'] == 'gold' else 'AI'} labels" for a in arms]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("reward model: accuracy on held-out pairs", "DPO: gold win rate vs the instruct model"))
    fig.add_bar(x=names, y=[a["reward_accuracy"] for a in arms], name="the world's held-out pairs", row=1, col=1)
    fig.add_bar(x=names, y=[a["reward_accuracy_sampled"] for a in arms], name="held-out prompts' sampled answers (gold-labeled)", row=1, col=1)
    fig.add_bar(x=names, y=[a["dpo_win_rate"] for a in arms], name="DPO", showlegend=False, row=1, col=2)
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    fig.update_layout(title=f"ai-vs-human-feedback: the gold judge agreed with {pct(m['label_agreement'])} of the AI labels",
                      height=380, margin=dict(l=40, r=10, t=70, b=110), barmode="group", legend=dict(orientation="h", y=-0.25, yanchor="top"))
    return fig
