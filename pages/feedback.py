"""Feedback: the human-ranking loop. A model answers each prompt K times (K different seeds, the same
settings); you rank the answers; the ranking is saved as every preference pair it implies (K choose 2),
in checkpoints/feedback/<dataset>.jsonl, the data a reward model (one click here) or DPO then learns from.

Prompts come from the toy world (the prompts of its preference pairs) or from a file of yours (prompts,
preference pairs or chats, as `lab.stages.prompt_set` reads them). Undo removes the last ranking's pairs;
the dataset downloads as jsonl.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from lab import feedback, stages
from lab.errors import UserError
from pages import api, visitor
from pages.compare import model_choices
from pages.stage import HIDDEN, warn

MAX_K = 4

ABOUT = """Pick a model and a prompt set; **Sample** draws K answers to the prompt (seeds *seed* … *seed + K − 1*,
so raise the temperature for variety); rank them, 1 the best (equal ranks: no preference), and **Save ranking**:
every pair the ranking implies becomes a preference pair (3 answers → 3 pairs, 4 → 6). Enough pairs, and
**Train a reward model on these** queues a reward run on them, with the model as its parent. Or give single answers
a thumb up or down and **Save thumbs**: KTO learns from such labels, no pairs needed (**Train KTO on these**); they are
kept in a dataset of their own, *NAME*-labels."""


AI_ABOUT = """Instead of you, a model can rank (Constitutional AI's feedback): shown the prompt, two answers and one
principle, the labeler prefers one by its probabilities of answering "A" or "B", asked in both orders. Every two
answers are compared under each principle, and each verdict is saved to the dataset as a pair that names its
labeler, principle and margin. Any instruct model can judge; on the toy world the lab trains one: SFT on the
judging chats `llm-lab world` writes (`llm-lab feedback` labels many prompts at once)."""


def fresh() -> dict:
    return {"source": None, "prompts": [], "index": -1, "context": [], "answers": [], "model": None}


def export_copy(path: str) -> str | None:
    """A copy of a feedback file in the temp folder, for the download box: gradio serves files from there
    whatever LAB_CHECKPOINTS points at, and a later vote does not change a download in progress."""
    if not Path(path).exists():
        return None
    folder = Path(tempfile.gettempdir()) / "lab-feedback-export"
    folder.mkdir(exist_ok=True)
    return str(shutil.copy(path, folder / Path(path).name))  # gr.File refuses a Path: its FileData wants a str


def summary(dataset: str) -> tuple[str, list[str] | None]:
    """The counter's text and the export files of a dataset and of its thumbs (feedback.labels_name)."""
    try:
        c, thumbs = api.feedback_count(dataset), api.feedback_count(feedback.labels_name(dataset))
    except gr.Error as e:
        return f"⚠️ {e.message}", None
    text = f"**{c['pairs']}** preference pairs from **{c['rankings']}** rankings in `{c['file']}`"
    if thumbs["labels"]:
        text += f"; **{thumbs['labels']}** answers labelled good or bad in `{thumbs['file']}`"
    files = [f for f in (export_copy(c["file"]), export_copy(thumbs["file"])) if f]
    return text, files or None


def on_k(k):
    k = int(k)
    return [gr.Column(visible=i < k) for i in range(MAX_K)] + [gr.Radio(choices=list(range(1, k + 1)), value=None) for _ in range(MAX_K)]


THUMBS = {"👍 good": "good", "👎 bad": "bad"}  # words too: a browser without an emoji font shows boxes


def on_next(source, state):
    """The next prompt of the set (read when the set changes), its earlier turns shown above it."""
    source = (source or "world").strip()
    state = dict(state)
    if source != state["source"]:
        try:
            prompts = stages.prompt_set(source)
        except UserError as e:  # a bad file: the message names the line and the fix
            return gr.skip(), gr.skip(), gr.skip(), warn(gr.Error(str(e)))
        state.update(source=source, prompts=prompts, index=-1)
    state["index"] = (state["index"] + 1) % len(state["prompts"])
    turns = state["prompts"][state["index"]]
    state.update(context=turns[:-1], answers=[])
    shown = "\n\n".join(f"**{t['role']}**: {t['content']}" for t in turns[:-1])
    where = f"prompt {state['index'] + 1} of {len(state['prompts'])} from `{source}`"
    return turns[-1]["content"], (f"{where}; the conversation so far:\n\n{shown}" if shown else where), state, ""


def on_sample(model, prompt, k, temperature, top_p, max_new, seed, mode, state):
    k = int(k)
    quiet = [gr.skip()] * (3 * MAX_K + 1)
    if not model:
        yield quiet + [warn(gr.Error("pick a model first"))]
        return
    if not float(temperature):
        yield quiet + [warn(gr.Error("temperature 0 is greedy: all K answers would be the same; raise it"))]
        return
    # The set's earlier turns belong to its prompt: a prompt typed instead starts a conversation of its own.
    from_set = state["prompts"] and state["index"] >= 0 and prompt == state["prompts"][state["index"]][-1]["content"]
    history = state["context"] if from_set else []
    panes = None
    try:
        for panes in api.compare([model] * k, prompt, temperature, top_p, int(max_new), int(seed or 0), mode, "", [history] * k, True):
            yield [p["answer"] for p in panes] + [""] * (MAX_K - k) + [None] * (2 * MAX_K) + [gr.skip(), ""]
    except gr.Error as e:
        yield quiet + [warn(e)]
        return
    done = {**state, "answers": [p["answer"] for p in panes], "model": model, "prompt": prompt, "history": history, "saved": []}
    yield [p["answer"] for p in panes] + [""] * (MAX_K - k) + [gr.skip()] * (2 * MAX_K) + [done, "rank the answers (1 = best), then save; or give them 👍/👎"]


def on_save(request: gr.Request, browser_id: str, dataset, state, *given):
    answers = state["answers"]
    if not answers:
        return gr.skip(), gr.skip(), warn(gr.Error("nothing to rank yet: sample answers first")), gr.skip()
    if "human" in state.get("saved", ()):
        return gr.skip(), gr.skip(), warn(gr.Error("your ranking of these answers is saved already: press Next prompt, then Sample")), gr.skip()
    chosen = list(given[: len(answers)])
    if any(r is None for r in chosen):
        return gr.skip(), gr.skip(), warn(gr.Error("give every answer a rank (1 = best; equal ranks for no preference)")), gr.skip()
    try:
        saved = api.rank(state["prompt"], answers, [int(r) for r in chosen], state["history"], dataset, state["model"], visitor.of(browser_id, request))
    except gr.Error as e:
        return gr.skip(), gr.skip(), warn(e), gr.skip()
    text, file = summary(dataset)
    skipped = f"; {saved['skipped']} left out (identical or empty answers)" if saved["skipped"] else ""
    # Saved: a second click cannot save them twice (the AI labeler may still rank them, once)
    return text, file, f"saved {saved['added']} pair(s){skipped}: press Next prompt, then Sample", {**state, "saved": [*state.get("saved", ()), "human"]}


def on_save_labels(request: gr.Request, browser_id: str, dataset, state, *given):
    """The thumbs given, saved as KTO's labelled answers in the dataset's -labels companion."""
    answers = state["answers"]
    if not answers:
        return gr.skip(), gr.skip(), warn(gr.Error("nothing to label yet: sample answers first")), gr.skip()
    if "thumbs" in state.get("saved", ()):
        return gr.skip(), gr.skip(), warn(gr.Error("your thumbs on these answers are saved already: press Next prompt, then Sample")), gr.skip()
    thumbs = [THUMBS.get(t) for t in given[: len(answers)]]
    try:
        saved = api.label_answers(state["prompt"], answers, thumbs, state["history"], feedback.labels_name(dataset), state["model"],
                                  visitor.of(browser_id, request))
    except gr.Error as e:
        return gr.skip(), gr.skip(), warn(e), gr.skip()
    skipped = f"; {saved['skipped']} empty answer(s) left out" if saved["skipped"] else ""
    return (*summary(dataset), f"saved {saved['added']} answer(s) labelled good or bad{skipped} for KTO: press Next prompt, then Sample",
            {**state, "saved": [*state.get("saved", ()), "thumbs"]})


def on_undo(dataset, browser_id: str, request: gr.Request):
    """Takes back the newest of what was saved: a ranking's pairs or a set of thumbs."""
    owner = visitor.of(browser_id, request)
    try:  # a demo's undo takes back the visitor's own last save (api.undo_feedback), so look for theirs
        name = feedback.newest([dataset, feedback.labels_name(dataset)], api.visitor(owner) if api.demo.on() else None)
        undone = api.undo_feedback(name, owner)
    except (gr.Error, UserError) as e:
        return gr.skip(), gr.skip(), warn(e if isinstance(e, gr.Error) else gr.Error(str(e)))
    what = f"ranking's {undone['removed']} pair(s)" if name == dataset else f"thumbs: {undone['removed']} labelled answer(s)"
    return *summary(dataset), f"removed the last {what}"


def on_train(model, dataset, browser_id: str, request: gr.Request, stage: str = "reward"):
    """A reward run on the dataset's pairs, or (stage kto) a KTO run on its thumbs, with the sampled model as parent."""
    try:
        c = api.feedback_count(dataset if stage == "reward" else feedback.labels_name(dataset))
        have = c["pairs"] if stage == "reward" else c["labels"]
        if stage == "reward" and not have:
            raise gr.Error(f"{Path(c['file']).name} holds no pairs yet: rank some answers first")
        if stage == "kto" and have < 2:
            raise gr.Error(f"{Path(c['file']).name} holds {have} labelled answer(s): give at least two answers a thumb (good and bad) first")
        if not model:
            raise gr.Error(f"pick the model the {'reward model' if stage == 'reward' else 'KTO policy'} starts from (its parent) first")
        config = {"parent": model, "data": c["file"], "batch_size": min(16, have)}
        run_id = api.start_run(stage, json.dumps(config), visitor.of(browser_id, request))
    except gr.Error as e:
        return warn(e)
    what, where = ("pairs", "Align → Reward model") if stage == "reward" else ("labelled answers", "Align → KTO")
    return f"{stage if stage == 'reward' else 'KTO'} run `{run_id}` queued on {have} {what}, from `{model}`: watch it on {where}"


def on_train_kto(model, dataset, browser_id: str, request: gr.Request):
    return on_train(model, dataset, browser_id, request, stage="kto")


def on_ai_rank(request: gr.Request, browser_id: str, dataset, labeler_model, state):
    """The labeler's verdicts on the answers sampled, saved like a ranking (each pair naming its labeler and principle)."""
    answers = state["answers"]
    if not answers:
        return gr.skip(), gr.skip(), warn(gr.Error("nothing to rank yet: sample answers first")), gr.skip()
    if labeler_model in state.get("saved", ()):
        return gr.skip(), gr.skip(), warn(gr.Error("this labeler's verdicts on these answers are saved already: press Next prompt, then Sample")), gr.skip()
    try:
        out = api.ai_rank(state["prompt"], answers, state["history"], dataset, labeler_model, state["model"], visitor.of(browser_id, request))
    except gr.Error as e:
        return gr.skip(), gr.skip(), warn(e), gr.skip()
    gold = (f"; of the {out['gold_pairs']} pair(s) the gold judge tells apart, it agrees on {out['gold_agreement']:.0%}"
            if out["gold_agreement"] is not None else "")
    people = (f"; with people's rankings (the last {out['human_pairs']} pairs) it agrees on {out['human_agreement']:.0%}"
              if out["human_agreement"] is not None else "; no one has ranked answers yet to compare it with")
    return (*summary(dataset), f"the labeler `{out['labeler']}` saved {out['added']} pair(s) under {', '.join(out['principles'])}{gold}{people}",
            {**state, "saved": [*state.get("saved", ()), labeler_model]})


def on_save_constitution(text):
    try:
        saved = api.save_constitution(text)
    except gr.Error as e:
        return gr.skip(), warn(e)
    return saved, f"constitution saved: {len(saved.splitlines())} principle(s)"


def on_upload(file):
    return gr.Dropdown(choices=["world", *api.uploads()], value=api.keep_upload(file))


def build(demo: gr.Blocks) -> None:
    with gr.Tab("Feedback", id="Feedback") as tab:
        gr.Markdown(ABOUT)
        with gr.Row(equal_height=True):
            model = gr.Dropdown(label="model", allow_custom_value=True, scale=2, elem_id="feedback-model")
            source = gr.Dropdown(["world", *api.uploads()], value="world", allow_custom_value=True, scale=2,
                                 label="prompts: the toy world's, or a file of prompts, pairs or chats", elem_id="feedback-source")
            upload = gr.UploadButton("Upload prompts", size="sm", scale=0, file_types=[".jsonl", ".json", ".csv", ".tsv", ".parquet"])
            k = gr.Slider(2, MAX_K, value=3, step=1, label="answers per prompt (K)", scale=1, elem_id="feedback-k")
        with gr.Accordion("Sampling", open=False):
            with gr.Row():
                temperature = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="temperature", info="answers differ only by chance: keep it high")
                top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="top-p")
                max_new = gr.Slider(1, 512, value=48, step=1, label="max new tokens")
                seed = gr.Number(0, precision=0, label="seed (answer i uses seed + i)")
                mode = gr.Radio(["auto", "chat", "raw"], value="auto", label="mode")
        context = gr.Markdown(elem_id="feedback-context")
        with gr.Row(equal_height=True):
            prompt = gr.Textbox(label="prompt", lines=2, scale=4, elem_id="feedback-prompt")
            with gr.Column(scale=1, min_width=160):
                next_prompt = gr.Button("Next prompt", size="sm", elem_id="feedback-next")
                sample = gr.Button("Sample", variant="primary", elem_id="feedback-sample")
        answers, ranks, thumbs, boxes = [], [], [], []
        with gr.Row(equal_height=False):
            for i in range(MAX_K):
                with gr.Column(visible=i < 3, min_width=200) as box:
                    boxes.append(box)
                    answers.append(gr.Textbox(label=f"answer {i + 1}", lines=5, interactive=False, elem_id=f"feedback-answer-{i}"))
                    ranks.append(gr.Radio(list(range(1, MAX_K + 1))[:3], label="rank (1 = best)", elem_id=f"feedback-rank-{i}"))
                    thumbs.append(gr.Radio(list(THUMBS), label="or a thumb (KTO)", elem_id=f"feedback-thumb-{i}"))
        with gr.Row(equal_height=True):
            save = gr.Button("Save ranking", variant="primary", elem_id="feedback-save")
            save_thumbs = gr.Button("Save thumbs 👍/👎", elem_id="feedback-save-thumbs")
            undo = gr.Button("Undo last save", elem_id="feedback-undo")
            train = gr.Button("Train a reward model on these", elem_id="feedback-train")
            train_kto = gr.Button("Train KTO on these", elem_id="feedback-train-kto")
        message = gr.Markdown(elem_id="feedback-message")
        with gr.Row(equal_height=True):
            dataset = gr.Textbox("feedback", label="preference dataset: checkpoints/feedback/NAME.jsonl", scale=2, elem_id="feedback-dataset")
            export = gr.File(label="export (jsonl)", file_count="multiple", interactive=False, height=90, scale=2, elem_id="feedback-export")
        counter = gr.Markdown(elem_id="feedback-counter")
        with gr.Accordion("AI feedback: a labeler model ranks the answers under a constitution", open=False, elem_id="feedback-ai"):
            gr.Markdown(AI_ABOUT)
            with gr.Row(equal_height=True):
                principles = gr.Textbox(label="constitution: one `name: text` per line", lines=4, scale=3, elem_id="feedback-constitution")
                with gr.Column(scale=1, min_width=200):
                    labeler_model = gr.Dropdown(label="labeler (an instruct model)", allow_custom_value=True, elem_id="feedback-labeler")
                    ai_rank = gr.Button("AI ranks these answers", variant="primary", elem_id="feedback-ai-rank")
                    save_principles = gr.Button("Save constitution", size="sm", elem_id="feedback-constitution-save")
        # inside the tab: a component placed in the Tabs between two tabs broke the tab bar (the next
        # tab's button showed the selected tab's label)
        state = gr.State(fresh())

    k.change(on_k, inputs=k, outputs=boxes + ranks, **HIDDEN)
    next_prompt.click(on_next, inputs=[source, state], outputs=[prompt, context, state, message], **HIDDEN)
    source.change(lambda source, state: on_next(source, {**state, "source": None}), inputs=[source, state], outputs=[prompt, context, state, message], **HIDDEN)
    sample.click(on_sample, inputs=[model, prompt, k, temperature, top_p, max_new, seed, mode, state], outputs=answers + ranks + thumbs + [state, message],
                 api_visibility="private", show_progress="minimal", **api.GENERATION)
    save.click(on_save, inputs=[visitor.state(), dataset, state, *ranks], outputs=[counter, export, message, state], **HIDDEN)
    save_thumbs.click(on_save_labels, inputs=[visitor.state(), dataset, state, *thumbs], outputs=[counter, export, message, state], **HIDDEN)
    undo.click(on_undo, inputs=[dataset, visitor.state()], outputs=[counter, export, message], **HIDDEN)
    train.click(on_train, inputs=[model, dataset, visitor.state()], outputs=message, api_visibility="private")
    train_kto.click(on_train_kto, inputs=[model, dataset, visitor.state()], outputs=message, api_visibility="private")
    dataset.blur(summary, inputs=dataset, outputs=[counter, export], **HIDDEN)
    upload.upload(on_upload, inputs=upload, outputs=source, **HIDDEN)
    ai_rank.click(on_ai_rank, inputs=[visitor.state(), dataset, labeler_model, state], outputs=[counter, export, message, state],
                  api_visibility="private", show_progress="minimal", **api.GENERATION)
    save_principles.click(on_save_constitution, inputs=principles, outputs=[principles, message], **HIDDEN)
    # Read when the tab opens, not at the page load: each event costs the browser work (stage.HIDDEN).
    tab.select(lambda: [gr.Dropdown(choices=model_choices())] * 2 + [api.constitution()], outputs=[model, labeler_model, principles], **HIDDEN)
    tab.select(summary, inputs=dataset, outputs=[counter, export], **HIDDEN)
    tab.select(lambda source, state: on_next(source, state) if state["source"] is None else [gr.skip()] * 4,
               inputs=[source, state], outputs=[prompt, context, state, message], **HIDDEN)
