"""Experiments: a card per experiment (the claim it measures, what it runs, its expected time here, a Run
button), the one being watched with its runs' progress, then its plot and the conclusion written from its
numbers; past results in a picker. An experiment is a background job (lab.stages.experiment): closing the
browser never stops it, and the page finds it again."""

from __future__ import annotations

import json

import gradio as gr

from lab import experiments, runs
from pages import api, visitor
from pages.stage import HIDDEN, IDLE_SECONDS, REFRESH_SECONDS, warn

SYMBOL = {"completed": "✓", "running": "▶", "queued": "…", "failed": "✗", "stopped": "■", "waiting": "○"}

INTRO = """**Each experiment measures one claim about the lifecycle** on the toy world, with a plot and a conclusion
written from its numbers (it says so when the expected effect does not appear). An experiment trains its runs
as jobs (they show on the Runs page) and reuses any run it made before with the same settings, such as the base
model: the first one is the slowest. **nano** runs in minutes on 2 CPU cores; **default** uses the lifecycle's
default models."""


def minutes(seconds: float) -> str:
    return f"about {seconds / 60:.0f} min" if seconds >= 90 else f"about {seconds:.0f} s"


def card_text(e: dict, scale: str) -> str:
    return f"### {e['name']}\n**{e['question']}**\n\n{e['runs']}.\n\n*{minutes(e['expected_seconds'][scale])} at {scale} scale*"


def past_choices() -> list[tuple[str, str]]:
    """(label, run id) of every experiment run of the store, newest first."""
    out = []
    for run in reversed(runs.list_runs()):
        try:
            info = run.info
        except (OSError, ValueError):
            continue
        if info.get("stage") == "experiment":
            c = info.get("config") or {}
            out.append((f"{c.get('experiment')} · {c.get('scale')} · {run.status} · {run.id}", run.id))
    return out


def progress_text(p: dict) -> str:
    head = f"Experiment **{p['experiment']}** (`{p['id']}`, {p['scale']}): **{p['status']}**"
    if p.get("jobs_ahead"):
        head += f", waiting in the queue behind {p['jobs_ahead']} job(s)"
    if p.get("elapsed"):
        head += f" · {p['elapsed']:.0f} s elapsed"
        if p["status"] in runs.ACTIVE:
            head += f" of {minutes(p['expected'])} expected"
    rows = ["| run | status | id | time |", "|---|---|---|---:|"]
    for r in p["steps"]:
        where = f" (step {r['of'][0]} of {r['of'][1]})" if r.get("of") else ""
        reused = " (made before, reused)" if r.get("shared") else ""
        took = f"{r['seconds']:.0f} s" if r.get("seconds") and not r.get("shared") else ""
        rows.append(f"| {r['step']} | {SYMBOL.get(r['status'], '')} {r['status']}{where}{reused} | {('`' + r['run'] + '`') if r.get('run') else ''} | {took} |")
    error = f"\n\n⚠️ {p['error']}" if p.get("error") and p["status"] in ("failed", "stopped") else ""
    return head + error + "\n\n" + "\n".join(rows)


def view(run_id: str | None, seen: str | None = None, shown: bool = True):
    """What the page shows of one experiment: its progress, and once done its plot and conclusion; nothing where
    that is `seen` already. While the page is `shown` its timer is started as well as paced: a timer stopped by
    another tab's select whose answer came back after this tab's own select (a quick click after the page
    loads) left the page on "queued" for good."""
    p = None
    if run_id:
        try:
            p = api.experiment_result(run_id)
        except gr.Error:
            run_id = None
    seen_now = json.dumps([run_id, p], sort_keys=True, default=str)
    if seen_now == seen:
        return [gr.skip()] * VIEW_OUTPUTS
    def timer(seconds: float):
        return gr.Timer(seconds, active=True) if shown else gr.skip()

    if p is None:
        return [{"run": None, "seen": seen_now}, "No experiment yet: press **Run** on one of the cards.", gr.Plot(visible=False), gr.Markdown(visible=False),
                timer(IDLE_SECONDS), gr.Dropdown(choices=past_choices())]
    result = p.get("result")
    fig = experiments.get(result["name"]).figure(result["measured"]) if result else None
    conclusion = f"**Conclusion** ({result['scale']} scale, {result['seeds']} seed{'s' if result['seeds'] > 1 else ''}): {result['conclusion']}" if result else ""
    active = p["status"] in runs.ACTIVE
    return [{"run": run_id, "seen": seen_now}, progress_text(p), gr.Plot(value=fig, visible=fig is not None), gr.Markdown(conclusion, visible=bool(result)),
            timer(REFRESH_SECONDS if active else IDLE_SECONDS), gr.Dropdown(choices=past_choices(), value=run_id)]  # its label says its status


VIEW_OUTPUTS = 6


def newest() -> str | None:
    choices = past_choices()
    return choices[0][1] if choices else None


def build(demo: gr.Blocks) -> None:
    catalogue = experiments.catalogue()
    with gr.Tab("Experiments", id="Experiments") as tab:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=True):
            scale = gr.Radio(["nano", "default"], value="nano", label="scale", elem_id="experiments-scale")
            seeds = gr.Number(0, precision=0, minimum=0, maximum=10, label="seeds per compared run (0: the experiment's own)", elem_id="experiments-seeds")
        cards, buttons = [], []
        with gr.Row(equal_height=True):
            for e in catalogue:
                with gr.Column(min_width=260, variant="panel"):
                    cards.append(gr.Markdown(card_text(e, "nano"), elem_id=f"experiment-card-{e['name']}"))
                    buttons.append(gr.Button(f"Run {e['name']}", variant="primary", size="sm", elem_id=f"experiment-run-{e['name']}"))
        message = gr.Markdown(elem_id="experiments-message")
        with gr.Row(equal_height=True):
            picker = gr.Dropdown(choices=past_choices(), label="experiments of this store (past results)", scale=4, elem_id="experiments-picker")
            stop = gr.Button("Stop", variant="stop", size="sm", scale=0, min_width=90, elem_id="experiments-stop")
            carry_on = gr.Button("Continue", size="sm", scale=0, min_width=90, elem_id="experiments-continue")
        progress = gr.Markdown(elem_id="experiments-progress")
        plot = gr.Plot(visible=False, elem_id="experiments-plot")
        conclusion = gr.Markdown(visible=False, elem_id="experiments-conclusion")
        state = gr.State({"run": None})
        timer = gr.Timer(IDLE_SECONDS)
    outputs = [state, progress, plot, conclusion, timer, picker]

    def on_scale(scale):
        fresh = experiments.catalogue()  # expected times: this store's last run of each, once there is one
        return [card_text(e, scale) for e in fresh]

    def on_load():  # at the page load, with Home shown: this page's timer stays as tick_only_when_shown set it
        return view(newest(), shown=False)

    def on_tick(state):
        return view(state.get("run"), state.get("seen"))

    def on_pick(rid):
        return view(rid)

    def on_run(name, scale, seeds, browser_id, request: gr.Request):
        try:
            rid = api.run_experiment(name, scale, int(seeds or 0), visitor.of(browser_id, request))
        except gr.Error as e:
            return [*[gr.skip()] * VIEW_OUTPUTS, warn(e)]
        return [*view(rid), f"Experiment **{name}** queued (`{rid}`): its runs are jobs, each on its stage's page and on the Runs page."]

    def on_stop(state, browser_id, request: gr.Request):
        if not state.get("run"):
            return "pick an experiment first"
        try:
            return f"Experiment `{state['run']}`: {api.stop_run(state['run'], visitor.of(browser_id, request))} (**Continue** carries on, reusing the runs that finished)"
        except gr.Error as e:
            return warn(e)

    def on_continue(state, browser_id, request: gr.Request):
        if not state.get("run"):
            return [*[gr.skip()] * VIEW_OUTPUTS, "pick an experiment first"]
        try:
            rid = api.resume_run(state["run"], visitor.of(browser_id, request))
        except gr.Error as e:
            return [*[gr.skip()] * VIEW_OUTPUTS, warn(e)]
        return [*view(rid), f"Experiment `{rid}` queued again: it reuses the runs that completed."]

    scale.change(on_scale, inputs=scale, outputs=cards, **HIDDEN)
    demo.load(on_load, outputs=outputs, **HIDDEN)
    tab.select(on_tick, inputs=state, outputs=outputs, **HIDDEN)
    timer.tick(on_tick, inputs=state, outputs=outputs, concurrency_limit=None, **HIDDEN)
    picker.input(on_pick, inputs=picker, outputs=outputs, **HIDDEN)
    def runner(name: str):
        def run(scale, seeds, browser_id, request: gr.Request):
            return on_run(name, scale, seeds, browser_id, request)
        return run

    for e, button in zip(catalogue, buttons):
        button.click(runner(e["name"]), inputs=[scale, seeds, visitor.state()], outputs=[*outputs, message], api_visibility="private")
    stop.click(on_stop, inputs=[state, visitor.state()], outputs=message, api_visibility="private")
    carry_on.click(on_continue, inputs=[state, visitor.state()], outputs=[*outputs, message], api_visibility="private")
