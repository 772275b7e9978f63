"""Home, the first page: the lifecycle as a map (a box per stage with its latest run and status, which opens
that stage's page on that run), "Run the whole lifecycle" (`lab.stages.lifecycle`, a background job like any
other) with its progress and the live loss of the step that trains, then the report card and "Compare these
models". It opens on the newest lifecycle of the store: its report card when it finished."""

from __future__ import annotations

import json

import gradio as gr

from lab import evals, runs, stages
from lab.runs import Run
from lab.stages import lifecycle
from pages import api, curves, visitor
from pages.stage import HIDDEN, IDLE_SECONDS, REFRESH_SECONDS, run_choices, warn

# With no lifecycle running, the map changes only when a run of another page (or the CLI) does: a slow look
# (IDLE_SECONDS), and one each time Home is opened again. Every tick costs the browser the same, whatever it outputs.
MAP = [s for s, *_ in lifecycle.PLAN]
SYMBOL = {"completed": "✓", "running": "▶", "queued": "…", "failed": "✗", "stopped": "■"}

INTRO = """**Start here.** The lab trains a language model through its whole lifecycle on a small built-in world
of invented countries, people and animals: a tokenizer, a base model that has read about the world, an
instruct model that answers questions, a reward model, and models aligned with DPO and PPO. **Run the whole
lifecycle** does every step in order, as jobs you can watch on each stage's page, then measures every model
and writes a report card. Or open a stage's page and run it yourself."""


def newest_lifecycle() -> Run | None:
    for run in reversed(runs.list_runs()):  # ids start with their time
        if run.info.get("stage") == "lifecycle":
            return run
    return None


def expected(scale: str) -> str:
    total = lifecycle.expected_seconds(scale)["total"]
    where = "as this store's last one took" if lifecycle.last_completed(scale) else "on a 2-core CPU; a GPU is faster"
    return f"**{scale}**: about {total / 60:.0f} min ({where})" if total >= 90 else f"**{scale}**: about {total:.0f} s ({where})"


def latest_by_stage() -> dict[str, tuple[str, str]]:
    """stage -> (id, status) of its newest run, in one pass over the store."""
    out = {}
    for run in runs.list_runs():  # oldest first: the newest of each stage is written last
        try:
            out[run.info["stage"]] = (run.id, run.status)
        except (OSError, KeyError, ValueError):  # deleted while read
            continue
    return out


def boxes(progress: dict | None, latest: dict) -> tuple[list, list, dict]:
    """Each stage's button label and its line, and the run each opens: the shown lifecycle's run for that step,
    else the stage's latest run in the store (`latest_by_stage`)."""
    by_step = {r["step"]: r for r in (progress or {}).get("steps", [])}
    labels, lines, opens = [], [], {}
    for step in MAP:
        row = by_step.get(step)
        rid = row["run"] if row and row.get("run") else None
        status = row["status"] if row else None
        if rid is None:
            rid, status = latest.get(step, (None, None))
        opens[step] = rid
        label = stages.spec(step).label
        labels.append(f"{SYMBOL.get(status, '○')} {label}" + (f" · {status}" if status else ""))
        lines.append(f"{lifecycle.WHAT[step]}" + (f"<br>`{rid}`" if rid else "<br>*no run yet*"))
    return labels, lines, opens


def progress_text(p: dict | None) -> str:
    if p is None:
        return "No lifecycle yet: press **Run the whole lifecycle**."
    status = p["status"]
    head = f"Lifecycle `{p['id']}` ({p['scale']}): **{status}**"
    if p.get("jobs_ahead"):
        head += f", waiting in the queue behind {p['jobs_ahead']} job(s): it starts when they end"
    if p.get("elapsed"):
        head += f" · {p['elapsed']:.0f} s elapsed"
    if p.get("eta"):
        head += f" · about {p['eta']:.0f} s to go"
    rows = ["| step | status | run | time |", "|---|---|---|---:|"]
    for r in p["steps"]:
        where = f" (step {r['of'][0]} of {r['of'][1]})" if r.get("of") else ""
        took = f"{r['seconds']:.0f} s" if r.get("seconds") else ""
        rows.append(f"| {r['step']} | {SYMBOL.get(r['status'], '')} {r['status']}{where} | {('`' + r['run'] + '`') if r.get('run') else ''} | {took} |")
    error = f"\n\n⚠️ {p['error']}" if p.get("error") and status in ("failed", "stopped") else ""
    return head + error + "\n\n" + "\n".join(rows)


def next_step(p: dict | None) -> str:
    if p is None:
        latest = latest_by_stage()
        done = [s for s in MAP if latest.get(s, (None, None))[1] == "completed"]
        missing = [s for s in MAP if s not in done and s not in lifecycle.OPTIONAL]
        if not done:
            return "**Next step:** run the whole lifecycle (nano first: it is quick), or begin with the **Data & tokenizer** page."
        return f"**Next step:** {stages.spec(missing[0]).label} (its page is in the tabs above), or run the whole lifecycle." if missing else "**Next step:** compare your models on the Compare page."
    if p["status"] in runs.ACTIVE:
        return f"**Now:** {p['current'] or 'starting'}. Close the browser if you like: the lifecycle runs as a job and this page finds it again."
    if p["status"] == "completed":
        return "**Next step:** press **Compare these models** to ask the base, instruct and aligned models the same question, or change a stage on its page and run it again."
    return f"**Next step:** press **Continue** to carry on from the first unfinished step (`llm-lab quickstart --continue {p['id']}`)."


def live_loss(p: dict | None):
    """The curve of the step that trains now (its loss, or PPO's reward)."""
    if not p or not p.get("current"):
        return None
    rid = next((r["run"] for r in p["steps"] if r["step"] == p["current"] and r.get("run")), None)
    if not rid:
        return None
    try:
        rows = Run.open(rid).metrics()[0]
    except LookupError:
        return None
    for metric in ("loss", "objective/rlhf_reward", "chars_per_token"):
        if any(metric in r for r in rows):
            return curves.overlay_figure({f"{p['current']} ({rid})": rows}, metric, 0.6)
    return curves.empty(f"{p['current']}: waiting for its first logged step")


def report(run_id: str | None) -> tuple[str, object, bool]:
    """The report card of a finished lifecycle: its markdown table, its plot, and whether Compare can be filled."""
    if not run_id:
        return "", None, False
    run = Run.open(run_id)
    if run.status != "completed" or not (run.path / "report.json").is_file():
        return "", None, False
    card = api.report_card(run_id)
    return evals.report_markdown(card), evals.figure(card), True


def look(run_id: str | None) -> tuple[str | None, dict | None, dict, str]:
    """What Home would show of a lifecycle: (its id, its progress, each stage's latest run, all of it as one
    string to compare with what is shown)."""
    p = None
    if run_id:
        try:
            p = api.lifecycle_progress(run_id)
        except gr.Error:
            run_id = None
    latest = latest_by_stage()
    return run_id, p, latest, json.dumps([run_id, p, latest], sort_keys=True, default=str)


def view(run_id: str | None, seen: str | None = None):
    """Everything Home shows of a lifecycle (None: the store's state without one); nothing where that is
    `seen` already, what the page shows (a redraw of its report card and plots is the browser's work)."""
    run_id, p, latest, shown = look(run_id)
    if shown == seen:
        return [gr.skip()] * VIEW_OUTPUTS
    labels, lines, opens = boxes(p, latest)
    text, fig, ready = report(run_id)
    active = bool(p) and p["status"] in runs.ACTIVE
    return [
        {"run": run_id, "opens": opens, "seen": shown},
        *[gr.Button(value=v) for v in labels], *lines,
        progress_text(p), gr.Plot(value=live_loss(p), visible=active), gr.Markdown(text, visible=ready), gr.Plot(value=fig, visible=ready),
        gr.Button(visible=ready), next_step(p), gr.Timer(REFRESH_SECONDS if active else IDLE_SECONDS),
    ]


VIEW_OUTPUTS = 2 * len(MAP) + 8  # what `view` returns: the state, a button and a line per stage, and the rest


def on_load():
    run = newest_lifecycle()
    return view(run.id if run else None)


def on_tick(state):
    newest = newest_lifecycle()  # a lifecycle started elsewhere (the CLI, another browser) shows up by itself
    run_id = state.get("run")
    if newest and (not run_id or (newest.id != run_id and newest.status in runs.ACTIVE)):
        run_id = newest.id
    return view(run_id, state.get("seen"))


def on_start(scale, browser_id, request: gr.Request):
    try:
        run_id = api.quickstart(scale, "", visitor.of(browser_id, request))
    except gr.Error as e:
        return [gr.skip()] * VIEW_OUTPUTS + [warn(e)]
    return view(run_id) + [f"Lifecycle `{run_id}` queued ({scale}). Every step is a job: its page shows its curves as it trains."]


def on_stop(state, browser_id, request: gr.Request):
    if not state.get("run"):
        return "no lifecycle to stop"
    try:
        return f"Lifecycle `{state['run']}`: {api.stop_run(state['run'], visitor.of(browser_id, request))} (the step that runs saves what it has; **Continue** carries on)"
    except gr.Error as e:
        return warn(e)


def on_continue(state, browser_id, request: gr.Request):
    if not state.get("run"):
        return [gr.skip()] * VIEW_OUTPUTS + ["no lifecycle to continue"]
    try:
        run_id = api.resume_run(state["run"], visitor.of(browser_id, request))
    except gr.Error as e:
        return [gr.skip()] * VIEW_OUTPUTS + [warn(e)]
    return view(run_id) + [f"Lifecycle `{run_id}` queued again: it reuses the steps that completed."]


def compare_prompt(run_id: str) -> str:
    """A toy-world question SFT never taught: what the base model knows, the instruct model says, the aligned
    models say politely."""
    world = stages.world_of(Run.open(run_id).config.get("data", "world")) or stages.world_of("world")
    return next(f["question"] for f in world.eval_sets()["fact_qa"] if not f["taught_in_sft"])


def on_compare(state):
    """Open Compare with the lifecycle's base, instruct and best aligned model (by win rate) and a prompt."""
    card = api.report_card(state["run"])
    models = {m["step"]: m for m in card["models"]}
    aligned = [s for s in ("dpo", "ppo", "grpo") if s in models]
    best = max(aligned, key=lambda s: models[s]["metrics"].get("win_rate") or 0) if aligned else None
    picked = [models[s]["run"] for s in ("pretrain", "sft") if s in models] + ([models[best]["run"]] if best else [])
    from pages.compare import model_choices

    return gr.Tabs(selected="Compare"), gr.Dropdown(choices=model_choices(), value=picked), compare_prompt(state["run"])


class Home:
    """The page's components, kept to wire the links into other pages once those exist (`link`)."""

    def build(self, demo: gr.Blocks) -> None:
        with gr.Tab("Home", id="Home") as self.tab:
            gr.Markdown(INTRO)
            with gr.Row(equal_height=True):
                self.scale = gr.Radio(list(lifecycle.SCALES), value="nano", label="scale", scale=1, elem_id="home-scale")
                self.expected = gr.Markdown(expected("nano"), elem_id="home-expected")
                self.start = gr.Button("Run the whole lifecycle", variant="primary", scale=1, elem_id="home-start")
                with gr.Column(scale=0, min_width=120):
                    self.stop = gr.Button("Stop", variant="stop", size="sm", elem_id="home-stop")
                    self.carry_on = gr.Button("Continue", size="sm", elem_id="home-continue")
            self.message = gr.Markdown(elem_id="home-message")
            self.buttons, self.lines = [], []
            with gr.Row(equal_height=True):
                for step in MAP:
                    with gr.Column(min_width=150):
                        self.buttons.append(gr.Button(stages.spec(step).label, size="sm", elem_id=f"home-box-{step}"))
                        self.lines.append(gr.Markdown(lifecycle.WHAT[step], elem_id=f"home-line-{step}"))
            self.next = gr.Markdown(elem_id="home-next")
            self.progress = gr.Markdown(elem_id="home-progress")
            self.loss = gr.Plot(label="the step that trains now", visible=False, elem_id="home-loss")
            self.card = gr.Markdown(visible=False, elem_id="home-report")
            self.plot = gr.Plot(visible=False, elem_id="home-report-plot")
            self.compare = gr.Button("Compare these models", variant="primary", visible=False, elem_id="home-compare")
            self.state = gr.State({"run": None, "opens": {}})
            self.timer = gr.Timer(IDLE_SECONDS)
        outputs = [self.state, *self.buttons, *self.lines, self.progress, self.loss, self.card, self.plot, self.compare, self.next, self.timer]
        self.scale.change(expected, inputs=self.scale, outputs=self.expected, **HIDDEN)
        demo.load(on_load, outputs=outputs, **HIDDEN)
        self.timer.tick(on_tick, inputs=self.state, outputs=outputs, concurrency_limit=None, **HIDDEN)
        self.tab.select(on_tick, inputs=self.state, outputs=outputs, **HIDDEN)  # what changed while another page was shown
        self.start.click(on_start, inputs=[self.scale, visitor.state()], outputs=[*outputs, self.message], api_visibility="private")
        self.stop.click(on_stop, inputs=[self.state, visitor.state()], outputs=self.message, api_visibility="private")
        self.carry_on.click(on_continue, inputs=[self.state, visitor.state()], outputs=[*outputs, self.message], api_visibility="private")

    def link(self, tabs: gr.Tabs, opened: dict, compare: tuple) -> None:
        """A box opens its stage's page on its run; "Compare these models" opens Compare, filled in."""
        for step, button in zip(MAP, self.buttons):
            target = opened[step]

            def open_page(state, step=step, target=target):
                rid = state["opens"].get(step)
                picker = gr.Dropdown(choices=run_choices((step,), saved_only=False), value=rid) if rid else gr.skip()
                inner = [gr.Tabs(selected=target.sub)] if target.inner is not None else []
                return [gr.Tabs(selected=target.tab), *inner, picker]

            button.click(open_page, inputs=self.state, outputs=[tabs, *([target.inner] if target.inner is not None else []), target.watched], **HIDDEN)
        picked, prompt = compare
        self.compare.click(on_compare, inputs=self.state, outputs=[tabs, picked, prompt], **HIDDEN)
