"""skip-pretraining: SFT from random weights against SFT from the pretrained base, with the same SFT data,
steps and batch. The claim: fine-tuning teaches the assistant's style, not knowledge; without pretraining the
model learns to answer in the chat format but knows only what the SFT chats told it, and answers the rest
fluently and wrongly.
"""

from __future__ import annotations

from lab.experiments import chain, pct, varied, world_of

QUESTION = "Skip pretraining: does SFT alone give the assistant's style without the knowledge?"
RUNS = "SFT from the pretrained base and SFT of the same architecture from random weights, same chats and steps (the random one at pretraining's learning rate); then chat format, fact QA and fluent wrong answers"
SEEDS = 1


def plan(base: dict, seeds: list[int], scale: str) -> list:
    from lab.stages import pretrain

    steps = chain(base, "tokenizer", "pretrain", "sft")
    # random weights at a fine-tuning rate barely move in a few hundred steps: they get the rate pretraining starts from
    rate = base["pretrain"][1].get("learning_rate") or pretrain.Config.learning_rate
    steps.append(varied(base, "sft", "sft from random weights", from_scratch=True, learning_rate=rate, kl_every=0))
    return steps


def _measure_one(run_id: str, device: str, world) -> dict:
    from lab import evals, inference
    from lab.tokenizers import end_of_turn_id

    loaded = inference.load(run_id, "causal", device)
    model, tokenizer = loaded.model, loaded.tokenizer
    scores = evals.chat_eval(model, tokenizer, world)
    facts = world.eval_sets()["fact_qa"]
    raw = evals.chat(model, tokenizer, [f["question"] for f in facts], max_new_tokens=48, raw=True)
    end = tokenizer.convert_ids_to_tokens(end_of_turn_id(tokenizer))
    fluent_wrong = empty = examples = 0
    shown = []
    for fact, r in zip(facts, raw):
        a = r.split(end)[0].strip()
        closed, claims = end in r and bool(a), bool(world.claims(a))
        fluent = closed and claims  # a closed turn that states something in the world's sentence forms
        empty += closed and not claims  # the assistant's manner with nothing in it ("Of course.")
        wrong = not world.judge(fact["question"], a).breakdown.get("correct", 0.0)
        if fluent and wrong:
            fluent_wrong += 1
            if examples < 3 and not fact["taught_in_sft"]:
                shown.append(f"{fact['question']} → {a}")
                examples += 1
    return {"run": run_id, **{k: scores[k] for k in ("chat_format", "fact_qa", "fact_qa_sft_taught", "fact_qa_pretrain_only", "gold_score")},
            "fluent_wrong": fluent_wrong / max(len(facts), 1), "states_nothing": empty / max(len(facts), 1), "fluent_wrong_examples": shown,
            "first_answer": evals.chat(model, tokenizer, [facts[0]["question"]], max_new_tokens=48)[0], "first_question": facts[0]["question"]}


def measure(made: dict, device: str) -> dict:
    world = world_of(made["sft"])
    return {"models": {"pretrained, then SFT": _measure_one(made["sft"], device, world),
                       "random weights, then SFT": _measure_one(made["sft from random weights"], device, world)},
            "facts": len(world.eval_sets()["fact_qa"])}


def conclude(m: dict) -> str:
    pre, raw = m["models"]["pretrained, then SFT"], m["models"]["random weights, then SFT"]
    head = (f"From random weights, SFT gave the chat format in {pct(raw['chat_format'])} of answers (from the pretrained base "
            f"{pct(pre['chat_format'])}); it answered {pct(raw['fact_qa_pretrain_only'])} of questions on facts only pretraining taught "
            f"(base: {pct(pre['fact_qa_pretrain_only'])}) and {pct(raw['fact_qa_sft_taught'])} on facts its SFT chats taught "
            f"(base: {pct(pre['fact_qa_sft_taught'])}); {pct(raw['fluent_wrong'])} of its {m['facts']} fact answers were fluent and wrong "
            f"(base: {pct(pre['fluent_wrong'])}) and {pct(raw['states_nothing'])} closed the turn stating no fact at all (base: {pct(pre['states_nothing'])}).")
    style = raw["chat_format"] >= 0.5
    knowledge_gap = pre["fact_qa_pretrain_only"] - raw["fact_qa_pretrain_only"]
    if not style:
        verdict = (f" The expected effect did not appear as stated: with this SFT budget the model from random weights did not even learn "
                   f"the chat format ({pct(raw['chat_format'])}), so it got neither style nor knowledge.")
    elif knowledge_gap >= 0.1:
        verdict = (f" The claim holds: without pretraining the model took the assistant's style but not the knowledge, "
                   f"{knowledge_gap * 100:.0f} points fewer pretraining-only facts right.")
    elif pre["fact_qa_pretrain_only"] < 0.1:
        verdict = (f" The model from random weights took the assistant's style; but the pretrained model itself answered only "
                   f"{pct(pre['fact_qa_pretrain_only'])} of pretraining-only facts, so at this scale there was little knowledge to lose and the "
                   "comparison cannot show it (run it at default scale).")
    else:
        verdict = (f" The expected effect did not appear: the model from random weights learnt the style and was within "
                   f"{knowledge_gap * 100:.0f} points of the pretrained one on pretraining-only facts, so pretraining added little knowledge here.")
    verdict += f" Asked \u201c{raw['first_question']}\u201d, it answered \u201c{raw['first_answer']}\u201d (the pretrained one: \u201c{pre['first_answer']}\u201d)."
    if raw["fluent_wrong_examples"]:
        verdict += " Its fluent wrong answers read like: " + "; ".join(f"\u201c{e}\u201d" for e in raw["fluent_wrong_examples"][:2]) + "."
    return head + verdict


def figure(m: dict):
    import plotly.graph_objects as go

    keys = {"chat_format": "chat format", "fact_qa_sft_taught": "fact QA, SFT-taught", "fact_qa_pretrain_only": "fact QA, pretraining-only",
            "fluent_wrong": "fluent but wrong", "states_nothing": "states no fact", "gold_score": "gold score"}
    fig = go.Figure()
    for label, r in m["models"].items():
        fig.add_bar(name=label, x=list(keys.values()), y=[r[k] for k in keys])
    fig.update_layout(barmode="group", title="skip-pretraining: SFT from a pretrained base and from random weights", yaxis=dict(range=[0, 1], tickformat=".0%"),
                      height=380, margin=dict(l=40, r=10, t=60, b=110), legend=dict(orientation="h", y=-0.25, yanchor="top"))
    return fig
