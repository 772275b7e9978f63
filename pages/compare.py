"""Compare: 2–4 models side by side on one prompt (base, instruct and aligned, or any runs and folders),
with the same sampling settings and seed, streamed into their columns together.

Each pane keeps its own conversation. Under each answer: the reward model's score (pick a reward run), the
toy world's gold score when the prompt is one of the world's, the token count and tokens/s; a switch
colours the answers by each token's probability, with its top-5 alternatives on hover. "Best" saves the
pane's answer as chosen over each other pane's (checkpoints/feedback/<dataset>.jsonl), which the reward
and DPO forms then offer as data. Generation goes through `api.compare`, which loads the models in the
app's process through lab.inference's cache (the page itself never touches torch).
"""

from __future__ import annotations

import html

import gradio as gr

from lab import inference, stages
from pages import api, visitor
from pages.stage import HIDDEN, warn

LETTERS = "ABCD"
PANES = inference.MAX_PANES

ABOUT = """Pick 2–4 models, or an SFT or aligned run's whole **lifecycle** (base → instruct → aligned, by its
parent links), then send a prompt: every model answers with the same temperature, top-p and seed, so the
answers differ by model only. Base models (pretrain runs) continue the text raw; the others answer in
their chat template (mode *auto*; force either). **Best** saves that answer as preferred to each other
answer, as preference pairs the Align forms train on. A next prompt continues the conversation; after a vote
it continues from the chosen answer in every pane, so the next round can be voted on too."""


def model_choices() -> list[tuple[str, str]]:
    """Runs whose model writes text (pretrain, SFT, aligned), newest first."""
    return [(f"{run_id} · {stage}", run_id) for run_id, stage in inference.runs_with_models("causal")]


def lifecycle_choices() -> list[tuple[str, str]]:
    return [(f"{run_id} · {stage}", run_id) for run_id, stage in inference.runs_with_models("causal") if stages.produces(stage) == "chat"]


def reward_choices() -> list[tuple[str, str]]:
    return [("none", "")] + [(run_id, run_id) for run_id, _ in inference.runs_with_models("reward")]


def example_prompts() -> list[str]:
    """Toy-world prompts (fact questions, tasks, harmful requests) that the gold judge can score."""
    return stages.alignment_prompts("world", [], n=12)


def probability_html(pane: dict | None) -> str:
    """The answer as spans coloured by the model's probability of each token (red: unlikely, green: likely),
    the top-5 alternatives in each span's title, so they show on hover."""
    if not pane or not pane.get("done") or not pane["token_probs"]:
        return ""
    spans = []
    for t in pane["token_probs"]:
        if t["special"]:  # the end of turn: not part of the answer's text
            continue
        p = t["prob"]
        title = f"p = {p:.3f}\n" + "\n".join(f"{token!r}  {q:.3f}" for token, q in t["top"])
        spans.append(f'<span title="{html.escape(title)}" style="background: hsl({round(120 * p)}, 80%, 80%); color: #111; '
                     f'border-radius: 3px">{html.escape(t["token"])}</span>')
    return ('<div class="token-probs" style="white-space: pre-wrap; line-height: 1.9; font-family: monospace">'
            + "".join(spans) + "</div>")


def stats_text(pane: dict | None) -> str:
    if not pane:
        return ""
    if not pane["done"]:
        return f"*streaming… {pane['mode']}*"
    parts = []
    if pane["reward"] is not None:
        parts.append(f"reward **{pane['reward']:.3f}**")
    if pane["gold"] is not None:
        detail = ", ".join(f"{k} {v:.2g}" for k, v in pane["gold_breakdown"].items())
        parts.append(f"gold **{pane['gold']:.2f}** ({detail})")
    parts.append(f"{pane['tokens']} tokens")
    if pane["tokens_per_second"]:
        parts.append(f"{pane['tokens_per_second']:.1f} tokens/s")
    parts.append(pane["mode"])
    text = " · ".join(parts)
    return text + (f"\n\n⚠️ {pane['note']}" if pane["note"] else "")


def fresh(models: list[str]) -> dict:
    """A new conversation with these models: empty histories, nothing to vote on."""
    return {"models": list(models), "histories": [[] for _ in range(PANES)], "before": None, "prompt": None, "panes": None, "voted": False, "unvoted": None}


def counter_text(dataset: str) -> str:
    try:
        c = api.feedback_count(dataset)
    except gr.Error as e:
        return f"⚠️ {e.message}"
    return f"**{c['pairs']}** preference pairs from **{c['rankings']}** votes in `{c['file']}`"


def panes_of(models: list[str]) -> list:
    """Columns shown for the models picked, titled by them, with empty conversations."""
    n = max(2, len(models))
    return ([gr.Column(visible=i < n) for i in range(PANES)]
            + [f"**{LETTERS[i]}** · `{models[i]}`" if i < len(models) else f"**{LETTERS[i]}**" for i in range(PANES)]
            + [[] for _ in range(PANES)] + [""] * PANES + [""] * PANES + [fresh(models)])


def on_models(models, state):
    models = list(models or [])
    if models == state["models"]:
        return [gr.skip()] * (5 * PANES + 1)
    return panes_of(models)


def on_fill(run_id):
    if not run_id:
        return gr.skip(), warn(gr.Error("pick an SFT or aligned run first"))
    try:
        chain_models = api.lifecycle(run_id)
    except gr.Error as e:
        return gr.skip(), warn(e)
    return gr.Dropdown(choices=model_choices(), value=chain_models), f"lifecycle of `{run_id}`: " + " → ".join(f"`{m}`" for m in chain_models)


def view(state, panes, prompt, colour) -> list:
    """Chatbots, stats and probability views of every pane: the history, then this round's prompt and answer."""
    conversations, shown_stats, shown_probs = [], [], []
    for i in range(PANES):
        pane = panes[i] if panes and i < len(panes) else None
        turns = list(state["histories"][i])
        if pane is not None:
            # "…" while the first token is on its way; a finished empty answer says so
            shown = pane["answer"] or ("*(empty: the model ended its turn at once)*" if pane["done"] else "…")
            turns += [{"role": "user", "content": prompt}, {"role": "assistant", "content": shown}]
        conversations.append(turns)
        shown_stats.append(stats_text(pane))
        shown_probs.append(probability_html(pane) if colour else "")
    return conversations + shown_stats + shown_probs


def on_send(models, prompt, temperature, top_p, max_new, seed, mode, reward, colour, state):
    models = list(models or [])
    if len(models) < 2:
        yield [gr.skip()] * (3 * PANES + 1) + [warn(gr.Error("pick at least two models to compare (or fill the panes with a lifecycle)")), gr.skip()]
        return
    if not (prompt or "").strip():
        yield [gr.skip()] * (3 * PANES + 1) + [warn(gr.Error("type a prompt first")), gr.skip()]
        return
    if models != state["models"]:
        state = fresh(models)
    histories = [list(h) for h in state["histories"][: len(models)]]
    panes = None
    try:
        for panes in api.compare(models, prompt, temperature, top_p, int(max_new), int(seed or 0), mode, reward or "", histories):
            yield view(state, panes, prompt, colour) + [gr.skip(), "", gr.skip()]
    except gr.Error as e:
        yield view(state, None, prompt, colour) + [gr.skip(), warn(e), gr.skip()]
        return
    # The round is over: each conversation grows by it, and it can be voted on.
    done = {**state, "before": histories, "prompt": prompt, "panes": panes, "voted": False, "unvoted": None,
            "histories": [h + [{"role": "user", "content": prompt}, {"role": "assistant", "content": p["answer"]}] for h, p in zip(histories, panes)]
            + state["histories"][len(models):]}
    turn = sum(t["role"] == "user" for t in done["histories"][0])
    said = f"turn {turn} of this conversation: each pane replied after the turns above it (**New conversation** starts afresh)" if turn > 1 else ""
    yield view(state, panes, prompt, colour) + [done, said, ""]


def on_colour(state, colour):
    panes = state["panes"] or []
    return [probability_html(panes[i]) if colour and i < len(panes) else "" for i in range(PANES)]


def on_vote(i, state, dataset, request=None):
    def refuse(e: gr.Error):
        return gr.skip(), warn(e), *[gr.skip()] * (PANES + 1)

    panes = state["panes"]
    if not panes:
        return refuse(gr.Error("nothing to vote on yet: send a prompt first"))
    if i >= len(panes):
        return refuse(gr.Error(f"pane {LETTERS[i]} has no answer"))
    if state["voted"]:
        return refuse(gr.Error("this round is already voted on: send a new prompt (or undo the vote)"))
    if not panes[i]["answer"].strip():
        return refuse(gr.Error(f"{LETTERS[i]}'s answer is empty: there is nothing to prefer; vote for another pane or send again"))
    # A pair's two answers must reply to the same conversation: after a round nobody voted on, each pane
    # went on from its own answer, and those panes cannot be compared with this one any more.
    before = state["before"]
    same = [j for j in range(len(panes)) if before[j] == before[i]]
    if len(same) < 2:
        return refuse(gr.Error(f"{LETTERS[i]}'s conversation differs from every other pane's (each went on from its own "
                               "earlier answer, with no vote): press New conversation, and vote each round"))
    try:
        saved = api.vote(state["prompt"], [panes[j]["answer"] for j in same], same.index(i), before[i], dataset,
                         [state["models"][j] for j in same], request)
    except gr.Error as e:
        return refuse(e)
    skipped = f" ({saved['skipped']} left out: identical or empty answers)" if saved["skipped"] else ""
    left_out = [LETTERS[j] for j in range(len(panes)) if j not in same]
    apart = f"; not against {', '.join(left_out)}, whose conversation went another way" if left_out else ""
    # The conversation goes on from the chosen answer in every pane, so that the next round's answers reply
    # to the same turns and can be voted on too (the way multi-turn preference data is collected).
    n = len(state["models"])
    done = {**state, "voted": True, "unvoted": state["histories"], "histories": [list(state["histories"][i]) for _ in range(n)] + state["histories"][n:]}
    return (counter_text(dataset), f"saved {LETTERS[i]} as preferred to {saved['added']} other answer(s){skipped}{apart}. "
            f"The conversation goes on from {LETTERS[i]}'s answer in every pane", done, *done["histories"])


def voter(i: int):
    """The handler of pane i's "best" button (gradio hands the request to a function that asks for it by type)."""
    def on_best(state, dataset, browser_id: str, request: gr.Request):
        return on_vote(i, state, dataset, visitor.of(browser_id, request))
    return on_best


def on_undo(dataset, state, browser_id: str, request: gr.Request):
    try:
        undone = api.undo_feedback(dataset, visitor.of(browser_id, request))
    except gr.Error as e:
        return gr.skip(), warn(e), *[gr.skip()] * (PANES + 1)
    # Each pane's own conversation again, as before the vote carried the chosen answer into all of them.
    state = {**state, "voted": False, "histories": state.get("unvoted") or state["histories"], "unvoted": None}
    return counter_text(dataset), f"removed the last vote's {undone['removed']} pair(s)", state, *state["histories"]


def refresh():
    return gr.Dropdown(choices=model_choices()), gr.Dropdown(choices=lifecycle_choices()), gr.Dropdown(choices=reward_choices())


def on_restore(saved, restored, models):
    """The models and settings as this browser left them, when the page is first opened in a session (a load
    event would redraw them in every browser at every load); models already picked (Home's "Compare these
    models") stay."""
    if restored or not saved:
        return [gr.skip()] * len(SETTINGS) + [True]
    return [gr.skip() if name == "models" and models else saved.get(name, gr.skip()) for name in SETTINGS] + [True]


# What the browser keeps of the page, in the order of build's `settings`.
SETTINGS = ("models", "temperature", "top_p", "max_new", "seed", "mode", "reward", "dataset")


def build(demo: gr.Blocks, kept: gr.BrowserState) -> tuple[gr.Dropdown, gr.Textbox]:
    """The page; returns its model picker and prompt, which Home fills with a lifecycle's models. `kept` holds
    its models and settings in the browser."""
    with gr.Tab("Compare", id="Compare") as tab:
        gr.Markdown(ABOUT)
        with gr.Row(equal_height=True):
            picked = gr.Dropdown(label="models (2–4): runs, or a typed model folder", multiselect=True, max_choices=PANES,
                                 allow_custom_value=True, scale=3, elem_id="compare-models")
            chain = gr.Dropdown(label="or a lifecycle: an SFT or aligned run", scale=2, elem_id="compare-lifecycle")
            fill = gr.Button("Fill with its lifecycle", scale=1, elem_id="compare-fill")
        with gr.Accordion("Sampling (the same for every model) and scoring", open=False):
            with gr.Row():
                temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="temperature (0: greedy)", elem_id="compare-temperature")
                top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="top-p")
                max_new = gr.Slider(1, 512, value=64, step=1, label="max new tokens", elem_id="compare-max-new")
                seed = gr.Number(0, precision=0, label="seed")
                mode = gr.Radio(list(inference.MODES), value="auto", label="mode", info="auto: raw for base models, chat for the rest")
            with gr.Row():
                reward = gr.Dropdown(label="reward model (scores every answer)", allow_custom_value=True, elem_id="compare-reward")
                colour = gr.Checkbox(False, label="colour answers by token probability (hover a token for its top-5 alternatives)", elem_id="compare-colour")
        with gr.Row(equal_height=True):
            prompt = gr.Textbox(label="prompt", placeholder="Ask something, or start a text for base models to continue",
                                lines=2, scale=4, elem_id="compare-prompt")
            with gr.Column(scale=1, min_width=160):
                send = gr.Button("Send", variant="primary", elem_id="compare-send")
                clear = gr.Button("New conversation", size="sm", elem_id="compare-clear")
        examples = gr.Dropdown(example_prompts(), value=None, label="or a toy-world prompt (the gold judge scores the answers)", elem_id="compare-examples")
        message = gr.Markdown(elem_id="compare-message")
        columns, titles, chats, stats, probs, best = [], [], [], [], [], []
        with gr.Row(equal_height=False):
            for i in range(PANES):
                with gr.Column(visible=i < 2, min_width=220) as column:
                    columns.append(column)
                    titles.append(gr.Markdown(f"**{LETTERS[i]}**", elem_id=f"compare-title-{i}"))
                    chats.append(gr.Chatbot(height=320, show_label=False, elem_id=f"compare-chat-{i}"))
                    stats.append(gr.Markdown(elem_id=f"compare-stats-{i}"))
                    probs.append(gr.HTML(elem_id=f"compare-probs-{i}"))
                    best.append(gr.Button(f"{LETTERS[i]} is best", size="sm", elem_id=f"compare-best-{i}"))
        with gr.Row(equal_height=True):
            dataset = gr.Textbox("compare", label="preference dataset: checkpoints/feedback/NAME.jsonl", scale=2, elem_id="compare-dataset")
            undo = gr.Button("Undo last vote", size="sm", scale=0, elem_id="compare-undo")
        counter = gr.Markdown(elem_id="compare-counter")
        # inside the tab: a component placed in the Tabs between two tabs broke the tab bar (the next
        # tab's button showed the selected tab's label)
        state = gr.State(fresh([]))
        restored = gr.State(False)  # inside the tab: a State between two tabs shifted the browser's tab list (the tab after it vanished)

    pane_outputs = columns + titles + chats + stats + probs + [state]
    picked.change(on_models, inputs=[picked, state], outputs=pane_outputs, **HIDDEN)
    clear.click(lambda models: panes_of(list(models or [])), inputs=picked, outputs=pane_outputs, **HIDDEN)
    fill.click(on_fill, inputs=chain, outputs=[picked, message], **HIDDEN)
    examples.select(lambda text: text, inputs=examples, outputs=prompt, **HIDDEN)
    inputs = [picked, prompt, temperature, top_p, max_new, seed, mode, reward, colour, state]
    gr.on([send.click, prompt.submit], on_send, inputs=inputs, outputs=chats + stats + probs + [state, message, prompt],
          api_visibility="private", show_progress="minimal", **api.GENERATION)
    colour.change(on_colour, inputs=[state, colour], outputs=probs, **HIDDEN)
    for i, button in enumerate(best):
        button.click(voter(i), inputs=[state, dataset, visitor.state()], outputs=[counter, message, state, *chats], **HIDDEN)
    undo.click(on_undo, inputs=[dataset, state, visitor.state()], outputs=[counter, message, state, *chats], **HIDDEN)
    dataset.blur(counter_text, inputs=dataset, outputs=counter, **HIDDEN)
    tab.select(refresh, outputs=[picked, chain, reward], **HIDDEN)  # not at the page load: see stage.HIDDEN
    settings = [picked, temperature, top_p, max_new, seed, mode, reward, dataset]
    tab.select(on_restore, inputs=[kept, restored, picked], outputs=[*settings, restored], **HIDDEN).then(counter_text, inputs=dataset, outputs=counter, **HIDDEN)
    gr.on([c.change for c in settings], lambda restored_, saved, *values: dict(zip(SETTINGS, values)) if restored_ else saved,
          inputs=[restored, kept, *settings], outputs=kept, trigger_mode="always_last", **HIDDEN)
    # A typed prompt is what is sent: the toy-world prompt picked before no longer says what the prompt is.
    prompt.input(lambda: None, outputs=examples, **HIDDEN)
    return picked, prompt
