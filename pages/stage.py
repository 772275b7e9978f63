"""The page of one training stage, built from nothing but the stage's declaration and config dataclass
(`lab.stages`), so that a stage added to `lab.stages.REGISTRY` gets its page with no UI code of its own:
its tab (or a sub-tab of the page it names), its form, its curves.

Left: set up a run. Model fields (those whose metadata names `runs`) pick a run of those stages (or take a
typed folder or hub id), the data is the toy world, an uploaded file, a path or (for stages that learn from
preferences or prompts) the pairs collected on the Compare and Feedback pages, with a preview of what the
stage will read; the rest of the form comes from the fields' metadata (`help`, `choices`, `advanced`,
`order`), and the equivalent `llm-lab train` command follows the form. Start queues a job (`lab.jobs`, a
subprocess); the page never trains.

Right: watch a run. One event at a time follows it, answering when the run writes something (a long poll of
its files' sizes); it reads only the new lines of its metrics.jsonl and samples.jsonl, keeping the offsets and
the rows read so far in the browser session's state. Each page opens on the latest run of
its stage with offsets at 0, so a reload, a second browser or a restarted app shows a job's curves from
its first step.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import get_type_hints

import gradio as gr
import pandas as pd

from lab import configs, feedback, jobs, runs, stages
from lab.runs import Run
from pages import api, curves, visitor

# A stage page follows its run with one event that answers each time the run writes something (a long poll of
# its files, every NEWS_SECONDS; an answer at least every WAIT_SECONDS while the run is active, so the clock moves),
# instead of a poll twice a second: every event costs the browser work in proportion to the whole app, and an
# answer of a running event about a third of that (bench/RESULTS.md). The timer starts the next such event at most
# FOLLOW_SECONDS after one ends (a tick while one is pending is dropped, but each still wakes the browser). An event
# on an active run ends after FOLLOW_FOR_SECONDS (a page left hidden then stops answering); one on a finished run
# (or none) answers nothing until the run is restarted or deleted, looking every IDLE_NEWS_SECONDS for
# IDLE_FOR_SECONDS, so that a page left open between jobs costs the browser one event in minutes. Pages that show a
# summary of active runs (Home's lifecycle, an experiment) look every REFRESH_SECONDS, and when nothing runs every
# IDLE_SECONDS.
FOLLOW_SECONDS = 1.0
WAIT_SECONDS = 5.0
FOLLOW_FOR_SECONDS = 60.0
NEWS_SECONDS = 0.1  # how often a waiting ask looks at an active run's files (a stat each)
IDLE_FOR_SECONDS = 300.0
IDLE_NEWS_SECONDS = 1.0
# While a run is active its curves are redrawn when the rows not drawn yet are PLOT_SHARE of those drawn, at most
# every PLOT_SECONDS and at least every PLOT_MAX_SECONDS: a plotly redraw costs the browser more than the rest of an
# event (bench/RESULTS.md), and a long run's curve changes little in a few rows. The progress text, with the latest
# value of each primary curve, follows every row.
PLOT_SECONDS = 3.0
PLOT_MAX_SECONDS = 10.0
PLOT_SHARE = 0.1
REFRESH_SECONDS = 1.0
IDLE_SECONDS = 15.0
# An event's outputs are its progress targets unless it names others, and the browser keeps a loading status for
# every component ever targeted, then redraws them all at each later event: hundreds of components, seconds of a
# busy page on 2 cores (bench/RESULTS.md). Events that show no progress therefore target none.
HIDDEN = dict(api_visibility="private", show_progress="hidden", show_progress_on=[])


def run_label(run_id: str, info: dict, status: str) -> str:
    """A run as a picker lists it: id, stage, status, its preset or mode, and its steps."""
    config = info.get("config") or {}
    parts = [run_id, info["stage"], status] + ([runs.mode_of(info)] if runs.mode_of(info) else [])
    steps = (info.get("final_metrics") or {}).get("steps") if status == "completed" else None
    if steps or config.get("max_steps"):
        parts.append(f"{steps} steps" if steps else f"up to {config['max_steps']} steps")
    return " · ".join(parts)


def run_choices(of_stages: tuple | None, saved_only: bool) -> list[tuple[str, str]]:
    """(label, run id) of runs of those stages, newest first; with saved_only, those with a saved model."""
    out = []
    for run in reversed(runs.list_runs()):
        try:
            info = run.info
            if of_stages is not None and info["stage"] not in of_stages:
                continue
            if saved_only and run.model_dir is None:
                continue
            out.append((run_label(run.id, info, run.status), run.id))
        except FileNotFoundError:  # deleted while we listed
            continue
    return out


def latest_completed(of_stages: tuple) -> str | None:
    """The run a model picker starts on: the newest completed run of its first stage (then of the others)."""
    for stage in of_stages:
        for run in reversed(runs.list_runs()):
            try:
                if run.info["stage"] == stage and run.status == "completed" and run.model_dir is not None:
                    return run.id
            except FileNotFoundError:
                continue
    return None


def model_picker_choices(f) -> list[tuple[str, str]]:
    return run_choices(f.metadata["runs"], saved_only=True) + [(label, value) for value, label in f.metadata.get("offers") or ()]


def picks_latest(f) -> bool:
    """Whether a model field's picker pre-selects a run: one in the form's open part with no default (the model
    a stage builds on, pretraining's tokenizer), not an advanced one such as init_from."""
    return bool(f.metadata.get("runs")) and f.default == "" and not f.metadata.get("advanced")


def data_choices(stage: str) -> list[tuple[str, str]]:
    """The data picker's (label, value): the toy world, the feedback datasets for stages that learn from
    preferences, then uploaded files."""
    out = [("world", "world")]
    wanted = stages.spec(stage).data
    if wanted in ("preference", "prompts", "labels"):  # the pairs of Compare and Feedback, or their prompts; KTO takes thumbs too
        for path in feedback.files():
            held = feedback.count(path.stem)
            if held["pairs"]:
                out.append((f"feedback: {path.stem} ({held['pairs']} pairs)", str(path)))
            elif held["labels"] and wanted == "labels":
                out.append((f"feedback: {path.stem} ({held['labels']} answers labelled good or bad)", str(path)))
    return out + [(p, p) for p in api.uploads()]


def fresh(run_id: str | None) -> dict:
    """A session's view of a run, before anything is read: everything from byte 0."""
    return {"run": run_id, "offset": 0, "rows": [], "samples_offset": 0, "samples": [], "shown": None, "status": None, "done": False,
            "pending": set(), "resumes": None, "seen": None, "replaced": False, "opened": False,
            "plotted": 0.0, "plotted_rows": 0, "stale": False}


def size(path) -> int:
    """A file's size; 0 for one not written yet."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def clock(seconds: float | None) -> str:
    s = int(seconds or 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def progress_text(p: dict, queue_position: int | None) -> str:
    parts = [f"**{p['status']}**"]
    if p["status"] == "queued":
        parts.append(f"position {queue_position} in the queue" if queue_position else "waiting to start")
    if p["step"] or p["status"] == "running":
        parts.append(f"step {p['step']} of {p['max_steps']}" if p["max_steps"] else f"step {p['step']}")
    if p["elapsed"] is not None:
        parts.append(f"elapsed {clock(p['elapsed'])}")
    if p["eta"] is not None:
        parts.append(f"ETA {clock(p['eta'])}")
    if p["tokens_per_second"]:
        parts.append(f"{p['tokens_per_second']:,.0f} tokens/s")
    text = f"Run `{p['id']}`: " + " · ".join(parts)
    if p["error"]:
        text += f"\n\n{p['error']}"
    if p["status"] == "completed" and p["final_metrics"]:
        shown = {k: v for k, v in p["final_metrics"].items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "train_runtime"}
        text += "\n\n" + " · ".join(f"{k} {number(v)}" for k, v in shown.items() if not k.startswith("eval"))
        evaluated = {k: v for k, v in shown.items() if k.startswith("eval")}
        if evaluated:  # the end-of-run evaluations, one value each: a table, not one-point curves
            text += "\n\n| end-of-run evaluation | value |\n|---|---:|\n" + "".join(f"| {k.removeprefix('eval/')} | {number(v)} |\n" for k, v in evaluated.items())
        if p["final_metrics"].get("note"):  # what the run wants its reader to know, e.g. a vocabulary smaller than asked
            text += f"\n\nℹ️ {p['final_metrics']['note']}"
    return text


def latest_values(rows: list[dict], primary: tuple[str, ...]) -> str:
    """The newest value of each metric of the primary curves' families: a row's numbers as soon as it is written,
    while its curve follows every PLOT_SECONDS."""
    values = {}
    for row in reversed(rows[-50:]):
        for key, v in row.items():
            if key not in values and curves.is_curve(key, v) and curves.family(key) in primary:
                values[key] = v
    return "\n\n" + " · ".join(f"{k} {number(v)}" for k, v in list(values.items())[:6]) if values else ""


def number(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else f"{v:,}"


NO_SAMPLES = pd.DataFrame({"samples": ["none yet (the job writes them every `sample_every` steps)"]})


def samples_table(rows: list[dict]) -> gr.Dataframe:
    """The latest step's samples: what the model writes for the fixed prompts now."""
    if not rows:
        return gr.Dataframe(NO_SAMPLES, label="latest samples")
    step = rows[-1].get("step", 0)
    latest = [{k: v for k, v in r.items() if k not in ("time", "step")} for r in rows if r.get("step", 0) == step]
    # The scores first: long prompts and answers wrap, and a score column at the far right went out of sight.
    table = pd.DataFrame(latest)
    scores = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
    table = table[scores + [c for c in table.columns if c not in scores]].round(3)
    return gr.Dataframe(table, label=f"samples at step {step}")


def preview(stage: str, source: str, columns: str = "") -> tuple[str, list]:
    try:
        p = api.preview_data(stage, source, columns=columns)
    except gr.Error as e:
        return f"⚠️ {e.message}", []
    size = f"{p['records']:,} records" + (f", {p['bytes']:,} bytes" if p["bytes"] else "")
    how = f"\n\n{p['how']}" if p["how"] else ""  # e.g. "Dolly-style: instruction + context → user, response → assistant"
    return f"**{size}** · format **{p['format']}** (detected: {p['detected_from']}){how}", p["preview"]


def warn(e: gr.Error) -> str:
    """Show a user's mistake as a toast and as the message under the buttons; never a traceback."""
    gr.Warning(e.message)
    return f"⚠️ {e.message}"


# What the browser gathers into one hidden value (see build): a form's values, whether it has been restored, and what
# the browser kept of it; at the page load, every page's kept form.
FORM_JS = "(...values) => JSON.stringify({values: values.slice(0, -2), restored: values.at(-2), saved: values.at(-1)})"
KEPT_JS = "(...kept) => JSON.stringify(kept)"


def field_component(stage: str, f, t: type) -> gr.Component:
    """The form's input of one config field."""
    meta = f.metadata
    info = "; ".join(x for x in (meta.get("help"), configs.allowed(f)) if x)  # the bounds the form's values are checked against
    kw = dict(label=f.name.replace("_", " "), info=info or None, elem_id=f"{stage}-field-{f.name}")
    if meta.get("runs"):
        return gr.Dropdown(choices=model_picker_choices(f), value=f.default or None, allow_custom_value=True, interactive=False, **kw)
    if t is bool:
        return gr.Checkbox(value=f.default, **kw)
    if meta.get("choices"):
        return gr.Dropdown(choices=list(meta["choices"]), value=f.default, **kw)
    if t is int:
        return gr.Number(value=f.default, precision=0, **kw)
    if t is float:
        return gr.Number(value=f.default, step=f.default / 10 if f.default else 0.1, **kw)
    return gr.Textbox(value=f.default, **kw)


class StagePage:
    """The handlers of one stage's page: the form's values are passed in the order of `names`."""

    def __init__(self, stage: str):
        self.stage = stage
        self.cls = stages.get(stage).Config
        self.types = get_type_hints(self.cls)
        self.fields = configs.fields(self.cls)
        self.names = [f.name for f in self.fields]
        self.by_name = {f.name: f for f in self.fields}
        self.references = {f.name: f.metadata["runs"] for f in self.fields if f.metadata.get("runs")}
        self.pickers = [*self.references] + (["data"] if "data" in self.names else [])  # their choices change with the store
        self.has_data = "data" in self.names
        self.primary = stages.spec(stage).curves  # shown first; the rest fold into "More curves"
        self.writes_samples = "sample_every" in self.names

    def runs_of_stage(self) -> gr.Dropdown:
        return gr.Dropdown(choices=run_choices((self.stage,), saved_only=False))

    def values_json(self, *values) -> str:
        # An emptied model picker gives None, which for a text field means "none given".
        return json.dumps({name: "" if v is None and self.types[name] is str else v for name, v in zip(self.names, values)})

    def typed(self, values: list) -> list:
        """The form's values as the browser sent them in one JSON list (FORM_JS), typed as gr.Number's own
        preprocessing would: a JavaScript number is 440 or 0.001 whatever the field's type."""
        def one(name, v):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and self.types[name] in (int, float):
                return int(round(v)) if self.types[name] is int else float(v)
            return v
        return [one(name, v) for name, v in zip(self.names, values)]

    def on_form(self, form_json):
        """On every change of the form: the same run's command, and the form as the browser keeps it (until the
        kept form is restored or edited, only the pickers' changes: the rest of the form still shows its defaults)."""
        form = json.loads(form_json)  # set by the browser (FORM_JS) before this event: it follows its change
        values, restored, saved = self.typed(form["values"]), form["restored"], form["saved"]
        shown = dict(zip(self.names, values))
        edited = any(shown[f.name] != f.default for f in self.fields if f.name not in self.pickers)  # a page opened another way
        kept = shown if restored or edited else {**(saved or {}), **{name: shown[name] for name in self.pickers}}
        try:
            return api.cli_command(self.stage, self.values_json(*values)), kept
        except gr.Error as e:
            return f"# not a valid config yet: {e.message}", kept

    def on_start(self, request: gr.Request, state, browser_id: str, *values):
        try:
            run_id = api.start_run(self.stage, self.values_json(*values), visitor.of(browser_id, request))
        except gr.Error as e:
            return gr.skip(), gr.skip(), gr.skip(), warn(e)
        picker = gr.Dropdown(choices=run_choices((self.stage,), saved_only=False), value=run_id)
        state["replaced"] = True  # an ask waiting on the run shown before must not draw it over this one
        return picker, fresh(run_id), gr.Timer(active=True), f"Run `{run_id}` queued: it starts as soon as a job slot is free (one job at a time unless LAB_MAX_JOBS says more)."

    def on_stop(self, state, browser_id: str, request: gr.Request):
        if not state["run"]:
            return "no run to stop"
        try:
            said = api.stop_run(state["run"], visitor.of(browser_id, request))
        except gr.Error as e:
            return warn(e)
        if said == "stopping":
            return f"Run `{state['run']}`: stopping (it saves what it has learnt, then ends `stopped`)"
        if state["status"] in runs.ACTIVE:  # it ended as the stop came, or was queued and never starts now
            return f"Run `{state['run']}`: {said}"
        return f"Run `{state['run']}` is `{said}` already: there is nothing to stop"

    def poll(self, state) -> None:
        """Read what is new since the last poll into the session's `state`, in place, and note in
        state["pending"] what the page must redraw for it. In place, not returned: a poll that was under way
        when Start or the run picker replaced the state then cannot put the old run back."""
        run_id = state["run"]
        if not run_id:
            return
        run = Run(runs.root() / run_id)
        try:
            state["seen"] = (run.path / "run.json").stat().st_mtime_ns
            info = run.info
            status = run.status
            def from_start():  # a resume rewound the run's files to a checkpoint: read them again
                state.update(offset=0, rows=[], samples_offset=0, samples=[])
                state["pending"].update(("rows", "samples"))

            resumes = len(info.get("resumes") or [])
            if state["resumes"] is not None and resumes != state["resumes"]:
                from_start()
            state["resumes"] = resumes
            try:
                new = api.run_metrics(run_id, state["offset"])
                new_samples = api.run_samples(run_id, state["samples_offset"])
            except gr.Error:  # an offset the rewind left inside or past the files
                if not runs.in_store(run.path):
                    raise
                from_start()
                new, new_samples = api.run_metrics(run_id, 0), api.run_samples(run_id, 0)
        except (FileNotFoundError, gr.Error):
            state.update(run=None, gone=run_id)
            state["pending"].add("gone")
            return
        first = state["shown"] is None
        state["rows"] += new["rows"]
        state["offset"] = new["offset"]
        state["samples"] = (state["samples"] + new_samples["rows"])[-64:]
        state["samples_offset"] = new_samples["offset"]
        text = progress_text(runs.progress(info, status, state["rows"]), jobs.queue_position(run) if status == "queued" else None)
        if status == "running":
            text += latest_values(state["rows"], self.primary)
        if text != state["shown"]:
            state["pending"].add("text")
        state["shown"] = text
        if first or new["rows"]:
            state["stale"] = True
        # While the run is active its curves follow as plot_due says; at once for its first rows, and when it ends.
        if state["stale"] and (not state["plotted"] or status not in runs.ACTIVE or self.plot_due(state)):
            state["pending"].add("rows")
            state.update(stale=False, plotted=time.monotonic() if state["rows"] else 0.0, plotted_rows=len(state["rows"]))
        if first or new_samples["rows"]:
            state["pending"].add("samples")
        if not first and status != state["status"]:
            state["pending"].add("status")
        state["status"] = status
        state["done"] = status not in runs.ACTIVE and not new["rows"]

    @staticmethod
    def plot_due(state) -> bool:
        """Whether an active run's curves are to be redrawn now (PLOT_SHARE)."""
        since = time.monotonic() - state["plotted"]
        new = len(state["rows"]) - state["plotted_rows"]
        return since >= PLOT_MAX_SECONDS or (since >= PLOT_SECONDS and new >= PLOT_SHARE * state["plotted_rows"])

    def draw(self, state, smoothing, more_open=False):
        """Redraw what the polls since the last draw found: [progress, plot, samples, run picker, message, more curves]."""
        pending, state["pending"] = state["pending"], set()
        if "gone" in pending:
            return f"Run `{state['gone']}` is gone (deleted).", curves.empty("no run"), samples_table([]), self.runs_of_stage(), "", curves.empty("no run")
        redraw = "rows" in pending
        return (
            state["shown"] if "text" in pending else gr.skip(),
            curves.metrics_figure(state["rows"], smoothing, only=self.primary) if redraw else gr.skip(),
            samples_table(state["samples"]) if "samples" in pending else gr.skip(),
            # The run picker's labels carry each run's status. What Start or Stop said ("queued: it starts as
            # soon as ...", "stopping: it saves what it has learnt") holds until the run ends, not after.
            self.runs_of_stage() if "status" in pending else gr.skip(),
            "" if "status" in pending and state["status"] not in runs.ACTIVE else gr.skip(),
            curves.metrics_figure(state["rows"], smoothing, besides=self.primary) if redraw and more_open else gr.skip(),
        )

    def news(self, state) -> bool:
        """Whether the run shown has written what its page has not read: a new status (its run.json), rows, samples."""
        path = runs.root() / state["run"]
        try:
            if (path / "run.json").stat().st_mtime_ns != state["seen"]:
                return True
        except FileNotFoundError:  # deleted: the poll says so
            return True
        return size(path / "metrics.jsonl") != state["offset"] or size(path / "samples.jsonl") != state["samples_offset"]

    async def on_tick(self, state, smoothing, more_open):
        async for answer in self.follow(state, smoothing, more_open):
            yield answer
        # Gradio sends an event's last answer again as its end (or, for one that gave none, empty values that
        # would blank the page): nothing, so that a run replaced meanwhile is not drawn back.
        yield [gr.skip()] * 6

    async def follow(self, state, smoothing, more_open):
        """Follow the run shown: one event that answers each time the run writes something. On an active run it
        answers at least every WAIT_SECONDS (so the clock moves) and ends when the run does, or after
        FOLLOW_FOR_SECONDS (a page left hidden stops answering; the timer's next tick, when the page is shown
        again, starts another). On a finished run, or none, it answers only if the run is restarted or deleted,
        and ends quietly after IDLE_FOR_SECONDS. Each answer costs the browser about a third of a new event
        (bench/RESULTS.md)."""
        active = state["run"] is not None and not state["done"]
        # A tick can come before the page's first read (on_open) has set the run shown: a short wait then.
        ends = time.monotonic() + (FOLLOW_FOR_SECONDS if active else IDLE_FOR_SECONDS if state["opened"] else 1.0)
        while True:
            active = state["run"] is not None and not state["done"]
            deadline = time.monotonic() + WAIT_SECONDS if active else ends
            if state["stale"]:  # rows came that the curves do not show yet
                deadline = min(deadline, state["plotted"] + PLOT_MAX_SECONDS)
            while not state["replaced"] and not state["pending"] and time.monotonic() < deadline:
                if state["run"] is not None and self.news(state):
                    self.poll(state)  # a row half written reads as nothing yet: wait on
                if not state["pending"]:
                    await asyncio.sleep(NEWS_SECONDS if active else IDLE_NEWS_SECONDS)
            if state["replaced"]:  # Start, the run picker or the page's opening showed another run meanwhile
                return
            if not state["pending"]:
                if not active:  # a finished run that changed no more (or none shown)
                    return
                self.poll(state)  # the wait ran out: the clock moves
            yield self.draw(state, smoothing, more_open)
            if time.monotonic() > ends:
                return

    def watch(self, run_id, smoothing, more_open=False, follow=False) -> list:
        """A fresh view of `run_id`, filled at once: [state, progress, plot, samples, timer, more curves]. The
        timer is started if `follow` (the page is shown: a hidden page's timer stays stopped)."""
        state = {**fresh(run_id), "opened": True}
        self.poll(state)
        text, figure, table, _, _, more = self.draw(state, smoothing, more_open)
        return [state, text, figure, table, gr.Timer(active=True) if follow else gr.skip(), more]

    def on_watch(self, run_id, state, smoothing, more_open):
        """Another run picked (here, or by a link that opens the page on it)."""
        if run_id == state["run"]:
            return [gr.skip()] * 6
        state["replaced"] = True  # an ask waiting on the run shown before must not draw it over this one
        return self.watch(run_id, smoothing, more_open, follow=True)

    def on_smoothing(self, state, smoothing, more_open):
        if not state["run"]:
            return gr.skip(), gr.skip()
        rows = state["rows"]
        return (curves.metrics_figure(rows, smoothing, only=self.primary),
                curves.metrics_figure(rows, smoothing, besides=self.primary) if more_open else gr.skip())

    def on_more(self, state, smoothing):
        """"More curves" opened: the rest of the run's curves, kept up to date while it stays open."""
        return True, curves.metrics_figure(state["rows"], smoothing, besides=self.primary) if state["run"] else curves.empty("no run")

    def refresh_choices(self) -> list:
        """New runs of other stages become parents; new runs of this one can be watched."""
        return [self.runs_of_stage(), *self.picker_choices()]

    def picker_choices(self) -> list:
        """The model pickers and the data picker with today's choices, their values as they are."""
        out = [gr.Dropdown(choices=model_picker_choices(self.by_name[name])) for name in self.references]
        if self.has_data:
            out.append(gr.Dropdown(choices=data_choices(self.stage)))
        return out

    def picker_value(self, name: str, values: dict):
        """What the picker of field `name` shows for `values` (field name → value). A model picker given no
        value starts on its first stage's newest completed run: the stage before is what a newcomer builds on."""
        f = self.by_name[name]
        if name in values or name == "data" or not picks_latest(f):
            return values.get(name, f.default)
        return latest_completed(f.metadata["runs"]) or f.default

    def picker_values(self, values: dict) -> list:
        """The model pickers and the data picker, with today's choices, showing `values`. They are built locked and
        unlocked here: the page load sets them, and an answer that comes late (seconds, on a busy machine) would
        overwrite what was typed before it."""
        out = []
        for name in self.pickers:
            value = self.picker_value(name, values)
            if name == "data":
                out.append(gr.Dropdown(choices=data_choices(self.stage), value=value, interactive=True))
            else:
                out.append(gr.Dropdown(choices=model_picker_choices(self.by_name[name]), value=value or None, interactive=True))
        return out

    def form_values(self, values: dict) -> list:
        """The whole form showing `values`, in the order of `names` (a missing field takes its default)."""
        pickers = dict(zip(self.pickers, self.picker_values(values)))
        return [pickers[f.name] if f.name in pickers else values.get(f.name, f.default) for f in self.fields]

    def on_defaults(self):
        return self.form_values({})

    def on_settings_of(self, run_id):
        """"Start from this run's settings": the watched run's config in the form."""
        if not run_id:
            return [gr.skip()] * len(self.fields) + ["pick a run to take its settings from"]
        try:
            config = Run.open(run_id).config
        except LookupError as e:
            return [gr.skip()] * len(self.fields) + [f"⚠️ {e}"]
        kept = {name: config[name] for name in self.names if name in config}
        return [*self.form_values(kept), f"the form holds `{run_id}`'s settings: change what you like, then Start"]

    def on_open(self, saved, restored, watched, smoothing):
        """The page's tab opened. The first time in a session: the rest of the form as this browser left it, the
        run shown (the one a link opened the page on, else this stage's latest, read from its first step), in
        one event and not at the page load: eight pages' reads at the load made some 50 events, which kept a
        browser and the app busy for 15-30 s on 2 cores (bench/RESULTS.md). Later openings: today's choices."""
        n_rest = len(self.names) - len(self.pickers)
        if restored:
            return [*self.refresh_choices(), *[gr.skip()] * (6 + n_rest + 1)]
        saved = saved or {}
        mine = run_choices((self.stage,), saved_only=False)
        run_id = watched or (mine[0][1] if mine else None)
        # Only what the browser kept: a field it never saved stays as it is, edited already or not. The pickers
        # were set at the page load (on_page_load): here only their choices, or a value typed since is lost.
        rest = [saved[name] if name in saved else gr.skip() for name in self.names if name not in self.pickers]
        # The timer is started by the tab's own select (app.tick_only_when_shown), which knows the sub-tab shown.
        # The command and the preview follow `restored`'s change, in the handlers that follow each edit: one
        # made here from the form as this event found it would overwrite an edit made while it ran.
        return [gr.Dropdown(choices=mine, value=run_id), *self.picker_choices(), *self.watch(run_id, smoothing), *rest, True]

    def on_page_load(self, saved) -> list:
        """The pickers as this browser left them, else on the runs to build on, set and unlocked at the page load
        (picker_values). The rest of the form waits for the page's first opening (on_open)."""
        return self.picker_values({name: v for name, v in (saved or {}).items() if name in self.pickers})

    def preview(self, source, columns=""):
        return preview(self.stage, source, columns)

    def on_upload(self, file):
        return gr.Dropdown(choices=data_choices(self.stage), value=api.keep_upload(file))


def data_field(stage: str, f, columns=None) -> tuple[gr.Dropdown, gr.UploadButton, gr.Markdown, gr.JSON, gr.Textbox | None]:
    """The data picker, with an upload button, the column mapping (`columns`: its field, if the stage has one),
    what the data holds and a preview of it."""
    with gr.Group():
        data = gr.Dropdown(choices=data_choices(stage), value=f.default, allow_custom_value=True, interactive=False, label="data",
                           info=(f.metadata.get("help") or "") + "; or upload a file", elem_id=f"{stage}-field-data")
        upload = gr.UploadButton("Upload a file", size="sm", elem_id=f"{stage}-upload", file_types=[".txt", ".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet"])
        mapping = field_component(stage, columns, str) if columns is not None else None
        summary = gr.Markdown(elem_id=f"{stage}-data-summary")
        with gr.Accordion("Data preview", open=False):
            shown = gr.JSON(show_label=False)
    return data, upload, summary, shown, mapping


def kept_forms(pages: tuple[str, ...] = ()) -> dict[str, gr.BrowserState]:
    """Where each stage's form (and each of `pages`' settings) is kept in the browser, across reloads and app
    restarts: call in the Blocks, outside the Tabs (a BrowserState reads the browser's storage when it is
    mounted, and a tab not shown yet is not). A fixed key and secret: form values are no secret, and a random
    one is lost at every restart."""
    return {name: gr.BrowserState({}, storage_key=f"llm-lab-form-{name}", secret="llm-lab-forms") for name in (*stages.names(), *pages)}


def build(stage: str, demo: gr.Blocks, tab, kept: gr.BrowserState, at_load: list, page_tab=None) -> gr.Dropdown:
    """One stage's page inside `tab` (a sub-tab of `page_tab` where stages share a page): the layout, then the
    wiring of StagePage's handlers. Returns its picker of the run shown, which other pages set to open the page
    on a run. `kept` holds the form in the browser. Appends to `at_load` what the page load sets: (the page,
    its kept form, its pickers)."""
    page, spec = StagePage(stage), stages.spec(stage)
    gr.Markdown((stages.get(stage).__doc__ or "").strip().split("\n\n")[0])
    inputs: dict[str, gr.Component] = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            for f in [f for f in page.fields if not f.metadata.get("advanced")]:
                if f.name == "data":
                    inputs["data"], upload, data_summary, data_preview, mapping = data_field(stage, f, page.by_name.get("columns"))
                    if mapping is not None:
                        inputs["columns"] = mapping
                elif f.name == "columns":  # in the data's group, above
                    continue
                else:
                    inputs[f.name] = field_component(stage, f, page.types[f.name])
            with gr.Accordion("Advanced", open=False):
                for f in [f for f in page.fields if f.metadata.get("advanced")]:
                    inputs[f.name] = field_component(stage, f, page.types[f.name])
            command = gr.Code(label="The same run from a terminal", language="shell", lines=2, interactive=False, elem_id=f"{stage}-cli")
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id=f"{stage}-start")
                stop = gr.Button("Stop", variant="stop", elem_id=f"{stage}-stop")
            with gr.Row():
                defaults = gr.Button("Reset the form to defaults", size="sm", elem_id=f"{stage}-defaults")
                settings_of = gr.Button("Start from the shown run's settings", size="sm", elem_id=f"{stage}-settings-of")
            message = gr.Markdown(elem_id=f"{stage}-message")
            if spec.notes:
                gr.Markdown(spec.notes)
        with gr.Column(scale=3):
            with gr.Row():
                watched = gr.Dropdown(choices=run_choices((stage,), saved_only=False), value=None, label=f"{stage} run shown", scale=4, elem_id=f"{stage}-run")
                refresh = gr.Button("↻", size="sm", scale=0, min_width=40)
            status = gr.Markdown("no run yet: set one up and press Start", elem_id=f"{stage}-progress")
            # A stage with no curves (the tokenizer: its figures come once, in the text above) shows no plots.
            plot = gr.Plot(label="metrics", elem_id=f"{stage}-curves", visible=bool(page.primary))
            with gr.Accordion("More curves (learning rate, gradient norm, the trainer's other metrics)", open=False,
                              visible=bool(page.primary), elem_id=f"{stage}-more") as more_box:
                more_plot = gr.Plot(show_label=False, elem_id=f"{stage}-more-curves")
            smoothing = gr.Slider(0.0, 0.99, value=0.6, step=0.01, label="smoothing (exponential moving average)", visible=bool(page.primary))
            samples = gr.Dataframe(NO_SAMPLES, label="latest samples", wrap=True, interactive=False, elem_id=f"{stage}-samples",
                                   visible=page.writes_samples)  # only stages that answer fixed prompts as they train
    state = gr.State(fresh(None))
    more_open = gr.State(False)
    timer = gr.Timer(FOLLOW_SECONDS)

    restored = gr.State(False)  # whether this session's form has been set from what the browser kept

    form = [inputs[name] for name in page.names]
    rest = [inputs[name] for name in page.names if name not in page.pickers]
    choice_outputs = [watched, *[inputs[name] for name in page.pickers]]
    watch_outputs = [state, status, plot, samples, timer, more_plot]
    # The CLI box follows each keystroke: a cheap handler that must not wait in the queue behind page loads. The
    # browser gathers the form into one value first (FORM_JS): gradio's frontend keeps a loading status for every
    # input of every event that has ended and updates each at every later event, tick or not, finding each by a walk
    # of the whole page (bench/RESULTS.md); seven forms of ~40 fields made every event on a page cost ~0.8 s of a
    # 2-core machine's browser. An event run in the browser alone keeps none.
    form_json = gr.Textbox(visible=False)
    gr.on([*[c.change for c in form], restored.change], None, inputs=[*form, restored, kept], outputs=form_json, js=FORM_JS, **HIDDEN)
    form_json.change(page.on_form, inputs=form_json, outputs=[command, kept], trigger_mode="always_last", concurrency_limit=None, **HIDDEN)
    defaults.click(page.on_defaults, outputs=form, **HIDDEN)
    settings_of.click(page.on_settings_of, inputs=watched, outputs=[*form, message], **HIDDEN)
    start.click(page.on_start, inputs=[state, visitor.state(), *form], outputs=[watched, state, timer, message], api_visibility="private")
    # A stop is a cheap signal that must not wait in the queue behind other browsers' page loads and reads.
    stop.click(page.on_stop, inputs=[state, visitor.state()], outputs=message, api_visibility="private", concurrency_limit=None)
    watched.change(page.on_watch, inputs=[watched, state, smoothing, more_open], outputs=watch_outputs, **HIDDEN)
    timer.tick(page.on_tick, inputs=[state, smoothing, more_open], outputs=[status, plot, samples, watched, message, more_plot],
               concurrency_limit=None, **HIDDEN)
    smoothing.release(page.on_smoothing, inputs=[state, smoothing, more_open], outputs=[plot, more_plot], **HIDDEN)
    more_box.expand(page.on_more, inputs=[state, smoothing], outputs=[more_open, more_plot], **HIDDEN)
    more_box.collapse(lambda: False, outputs=more_open, **HIDDEN)
    refresh.click(page.refresh_choices, outputs=choice_outputs, **HIDDEN)
    for opened in (tab, page_tab) if page_tab else (tab,):
        opened.select(page.on_open, inputs=[kept, restored, watched, smoothing], outputs=[*choice_outputs, *watch_outputs, *rest, restored], **HIDDEN)
    if page.has_data:
        read_with = [inputs["data"], *([inputs["columns"]] if "columns" in inputs else [])]
        gr.on([restored.change, *[c.change for c in read_with]], page.preview, inputs=read_with, outputs=[data_summary, data_preview],
              trigger_mode="always_last", **HIDDEN)
        upload.upload(page.on_upload, inputs=upload, outputs=inputs["data"], **HIDDEN)
    if page.pickers:
        at_load.append((page, kept, [inputs[name] for name in page.pickers]))
    return watched


@dataclass
class Opened:
    """How to open a stage's page on a run: select `tab` in the app's tabs (and `sub` in `inner`, for a stage
    that shares its page), and set `watched` to the run."""

    tab: str
    inner: gr.Tabs | None
    sub: str | None
    watched: gr.Dropdown


def build_pages(demo: gr.Blocks, kept: dict[str, gr.BrowserState], extras: dict | None = None,
                own_pages: tuple[str, ...] = ("Home", "Experiments")) -> dict[str, Opened]:
    """A tab per stage in lifecycle order; the stages that name the same page share its tab, a sub-tab each.
    Stages whose page is one of `own_pages` (the lifecycle: Home; the experiments) are shown by that page, not by a form here.
    `extras` maps a page's title to a `build(demo, tab)` that adds a section under its stages."""
    pages: dict[str, list[str]] = {}
    for stage in stages.names():
        if stages.spec(stage).page not in own_pages:
            pages.setdefault(stages.spec(stage).page or stages.spec(stage).label, []).append(stage)
    opened, at_load, kept_json = {}, [], None
    for title, members in pages.items():
        with gr.Tab(title, id=title) as tab:
            if kept_json is None:  # in a page: the Tabs around hold only tabs
                kept_json = gr.Textbox(visible=False)
            if len(members) == 1:
                opened[members[0]] = Opened(title, None, None, build(members[0], demo, tab, kept[members[0]], at_load))
            else:
                with gr.Tabs() as inner:
                    for stage in members:
                        label = stages.spec(stage).label
                        with gr.Tab(label, id=label) as sub:
                            opened[stage] = Opened(title, inner, label, build(stage, demo, sub, kept[stage], at_load, page_tab=tab))
            if title in (extras or {}):
                extras[title](demo, tab)

    # Every page's pickers in one event: each event costs the browser work (HIDDEN), and so does each input of
    # one that has ended, so the browser gathers the kept forms into one value first (as a page's form: build).
    def on_page_load(kept_json):
        return [v for (page, _, _), kept_form in zip(at_load, json.loads(kept_json)) for v in page.on_page_load(kept_form)]

    demo.load(None, inputs=[kept_form for _, kept_form, _ in at_load], outputs=kept_json, js=KEPT_JS, **HIDDEN)
    kept_json.change(on_page_load, inputs=kept_json, outputs=[c for *_, pickers in at_load for c in pickers], **HIDDEN)
    return opened
