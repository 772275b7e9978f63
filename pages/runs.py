"""Runs: every run with its status and lineage; one run's details, log and actions (stop, resume, delete,
export); several runs' curves overlaid; the config diff of two runs."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from lab import evals, runs
from lab.runs import Run
from pages import api, curves, visitor
from pages.stage import HIDDEN, warn

RESUME_NOTE = (
    "**Resume** carries on a stopped or failed run from its last checkpoint (saved every *save steps*, and at a stop), "
    "in the same run: the same step numbering, optimizer, learning-rate schedule, data order and random state, as if "
    "it had never stopped; its curves lose what was logged after the checkpoint, which is trained again. A run with no "
    "checkpoint (saving turned off, or killed before its first) goes on as a *new* run from its saved model, for the "
    "steps it had left, with a fresh optimizer (pretrain and full SFT only). A stopped lifecycle resumes in place, from "
    "its first unfinished step. **Export** writes a standalone model folder (`merged/` in the run), with a LoRA adapter "
    "folded into its base."
)


PICKERS = 4  # the run pickers a refresh updates: details, overlaid curves, diff A and B


def table(rows: list[dict]) -> pd.DataFrame:
    def last(row, key):
        value = row["last_metrics"].get(key)
        return round(value, 4) if isinstance(value, float) else value

    return pd.DataFrame(
        [
            {"run": r["id"], "name": r["name"] if r["name"] not in r["id"] else "", "stage": r["stage"], "mode": r["mode"], "status": r["status"],
             "parent": r["parent"] or "", "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"])), "step": last(r, "step"),
             "loss": last(r, "loss")}
            for r in reversed(rows)
        ],
        columns=["run", "name", "stage", "mode", "status", "parent", "created", "step", "loss"],
    )


def family_tree(run_id: str) -> str:
    """The picked run's family as a tree, from its first ancestor the store has down through everything built
    on it (base → instruct → aligned), the picked run in bold."""
    chain = runs.lineage(Run.open(run_id))
    children: dict[str, list[Run]] = {}
    for r in runs.list_runs():
        try:
            children.setdefault(r.parent or "", []).append(r)
        except FileNotFoundError:  # deleted while we looked
            continue

    def lines(r: Run, depth: int) -> list[str]:
        label = f"`{r.id}` · {r.stage} · {r.status}"
        own = [f"{'  ' * depth}- " + (f"**{label}** ← this run" if r.id == run_id else label)]
        return own + [line for child in children.get(r.id, []) for line in lines(child, depth + 1)]

    return "\n".join(lines(chain[0], 0))


def details(run_id: str | None) -> tuple[str, str, str]:
    """A run's card, its CLI command and the tail of its log."""
    if not run_id:
        return "pick a run", "", ""
    try:
        status = api.run_status(run_id)
        run = Run.open(run_id)
        info = run.info
        log = api.run_log(run_id, 200)
    except (gr.Error, FileNotFoundError) as e:
        return f"⚠️ {getattr(e, 'message', e)}", "", ""
    lines = [f"**{status['status']}** · stage `{info['stage']}` · name {info['name']}", "lineage:\n\n" + family_tree(run_id)]
    if status["step"]:
        lines.append(f"step {status['step']}" + (f" of {status['max_steps']}" if status["max_steps"] else ""))
    from_checkpoints = [str(r["step"]) for r in info.get("resumes") or [] if r.get("step") is not None]
    if from_checkpoints:
        lines.append("resumed from the checkpoint of step " + ", then of step ".join(from_checkpoints))
    elif info.get("resumes"):  # a lifecycle or experiment goes on from its first unfinished step
        lines.append(f"continued {len(info['resumes'])} time(s), reusing the steps that had finished")
    checkpoint = run.last_checkpoint()
    if checkpoint and status["status"] not in runs.ACTIVE:
        lines.append(f"Resume goes on from its checkpoint of step {checkpoint[0]}")
    if status["error"]:
        lines.append(f"⚠️ {status['error']}")
    if status["final_metrics"]:
        lines.append("final: " + " · ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in status["final_metrics"].items()))
    lines.append(f"folder: `{run.path}`")
    if info["stage"] == "lifecycle" and (run.path / "report.json").is_file():
        lines.append(evals.report_markdown(api.report_card(run_id)))
    elif (run.path / "eval.json").is_file():
        measured = evals.read(run).get("metrics", {})
        lines.append("eval.json: " + " · ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in measured.items()))
    return "\n\n".join(lines), info.get("command", ""), log


def on_refresh():
    rows = api.list_runs()
    ids = [r["id"] for r in reversed(rows)]
    return [table(rows), *[gr.Dropdown(choices=ids) for _ in range(PICKERS)]]


def on_row(evt: gr.SelectData):
    return evt.row_value[0] if evt.row_value else gr.skip()


def act(action, run_id, request):
    """Run an action on the picked run as the visitor of `request`, then show its outcome and the store as it is now."""
    if not run_id:
        return ["pick a run first", *on_refresh(), *details(run_id)]
    try:
        message = action(run_id, request)
    except gr.Error as e:
        message = warn(e)
    listing = on_refresh()
    if run_id not in [value for _, value in listing[1].choices]:  # deleted: nothing is picked now
        listing[1] = gr.Dropdown(choices=listing[1].choices, value=None)
        run_id = None
    return [message, *listing, *details(run_id)]


def on_stop(run_id, browser_id: str, request: gr.Request):
    return act(lambda r, q: f"`{r}`: {api.stop_run(r, q)}", run_id, visitor.of(browser_id, request))


def on_resume(run_id, browser_id: str, request: gr.Request):
    def resume(r, q):
        resumed = api.resume_run(r, q)
        if resumed == r:
            return f"`{r}` queued again, to go on from its last checkpoint; watch it on its stage's page"
        return f"resumed as a new run `{resumed}` (no checkpoint to go on from); watch it on its stage's page"

    return act(resume, run_id, visitor.of(browser_id, request))


def zipped(folder: str) -> str:
    """A zip of an exported model folder, in the temp folder that gradio serves files from (the run store may
    be anywhere), named after its run."""
    out = Path(tempfile.gettempdir()) / "lab-exports" / Path(folder).parent.name
    out.parent.mkdir(exist_ok=True)
    return shutil.make_archive(str(out), "zip", folder)


def on_export(run_id, browser_id: str, request: gr.Request):
    exported = []

    def export(r, q):
        exported.append(api.export_run(r, q))
        return f"exported to `{exported[0]}`: download it as a zip below"

    shown = act(export, run_id, visitor.of(browser_id, request))
    return [*shown, zipped(exported[0]) if exported else None]


def on_ask_delete(run_id):
    """The Delete button's question, asked in the page: what would go, the run and the runs that depend on it
    (a LoRA run whose base is gone cannot load, a lifecycle's report names its steps)."""
    hide = [gr.Group(visible=False), gr.skip(), gr.skip(), gr.skip()]
    if not run_id:
        return [*hide, "pick a run first", None]
    try:
        built_on = runs.dependents(Run.open(run_id))
    except LookupError as e:
        return [*hide, f"⚠️ {e}", None]
    if not built_on:
        question = f"Delete run **{run_id}** and all its files? This cannot be undone."
    else:
        question = (f"Run **{run_id}** cannot go alone: {len(built_on)} run(s) depend on it: "
                    + ", ".join(f"`{runs.named(r)}`" for r in built_on) + ". Delete it with them, or keep them all.")
    return [gr.Group(visible=True), question, gr.Button(visible=not built_on),
            gr.Button(f"Delete {run_id} and these {len(built_on)} run(s)", visible=bool(built_on)), "", run_id]


def on_pick_another(picked, asked):
    """A question about another run goes. The pick's change can be answered after the question it came before
    (a change waits for the previous one to finish), so the question about the run now picked stays."""
    return gr.Group(visible=False) if picked != asked else gr.skip()


def deleter(with_dependents: bool):
    def on_delete(run_id, browser_id: str, request: gr.Request):
        return [gr.Group(visible=False), *act(lambda r, q: api.delete_run(r, with_dependents, q), run_id, visitor.of(browser_id, request))]
    return on_delete


def on_overlay(run_ids, metric_name, smoothing):
    rows = {}
    for run_id in run_ids or []:
        try:
            rows[run_id] = Run.open(run_id).metrics()[0]
        except (LookupError, FileNotFoundError):
            continue
    names = list(dict.fromkeys(m for r in rows.values() for m in curves.metric_names(r)))
    if metric_name not in names:
        metric_name = next((m for m in ("loss", "eval_loss") if m in names), names[0] if names else None)
    return gr.Dropdown(choices=names, value=metric_name), curves.overlay_figure(rows, metric_name, smoothing)


def on_diff(a, b):
    if not (a and b):
        return pd.DataFrame(columns=["field", "A", "B"])
    try:
        rows = api.config_diff(a, b)
    except gr.Error as e:
        return pd.DataFrame({"field": [f"⚠️ {e.message}"]})
    if not rows:
        return pd.DataFrame({"field": ["the two configs are the same"]})
    return pd.DataFrame([{"field": r["field"], "A": str(r["a"]), "B": str(r["b"])} for r in rows])


def on_open(picked):
    """The tab opened: the store as it is now, on the newest run if none is picked yet (read here, not at the
    page load: each event costs the browser work, stage.HIDDEN)."""
    listing = on_refresh()
    if not picked:
        ids = listing[1].choices
        listing[1] = gr.Dropdown(choices=ids, value=ids[0][1] if ids else None)
    return listing


def build(demo: gr.Blocks) -> None:
    with gr.Tab("Runs", id="Runs") as tab:
        with gr.Row():
            gr.Markdown("Every run in the store, newest first. Click a row to open it.")
            refresh = gr.Button("↻ Refresh", size="sm", scale=0)
        runs_table = gr.Dataframe(interactive=False, wrap=True, max_height=360, elem_id="runs-table")
        asked = gr.State()  # the run the Delete question is about (inside the tab, as every State: see compare.py)
        with gr.Row(equal_height=False):
            with gr.Column():
                picked = gr.Dropdown(label="run", elem_id="runs-picked")
                card = gr.Markdown()
                with gr.Row():
                    stop = gr.Button("Stop", variant="stop", size="sm")
                    resume = gr.Button("Resume", size="sm")
                    export = gr.Button("Export (merge adapter)", size="sm")
                    delete = gr.Button("Delete", size="sm", elem_id="runs-delete")
                with gr.Group(visible=False, elem_id="runs-confirm") as confirm:
                    question = gr.Markdown(elem_id="runs-question")
                    with gr.Row():
                        delete_one = gr.Button("Yes, delete it", variant="stop", size="sm", elem_id="runs-delete-yes")
                        delete_all = gr.Button("Delete it and its dependents", variant="stop", size="sm", elem_id="runs-delete-all")
                        keep = gr.Button("Cancel", size="sm", elem_id="runs-delete-cancel")
                outcome = gr.Markdown(elem_id="runs-outcome")
                download = gr.File(label="exported model (zip)", interactive=False, height=80, elem_id="runs-download")
                gr.Markdown(RESUME_NOTE)
                command = gr.Code(label="CLI command", language="shell", lines=2, interactive=False)
            with gr.Column():
                log = gr.Textbox(label="log.txt (last 200 lines)", lines=18, max_lines=18, autoscroll=True, interactive=False)
        gr.Markdown("### Curves of several runs")
        with gr.Row():
            overlaid = gr.Dropdown(label="runs", multiselect=True, scale=3, elem_id="runs-overlaid")
            metric = gr.Dropdown(label="metric", scale=1, elem_id="runs-metric")
            smoothing = gr.Slider(0.0, 0.99, value=0.6, step=0.01, label="smoothing", scale=1)
        overlay = gr.Plot(show_label=False, elem_id="runs-overlay")
        gr.Markdown("### Config diff")
        with gr.Row():
            run_a = gr.Dropdown(label="run A", elem_id="runs-a")
            run_b = gr.Dropdown(label="run B", elem_id="runs-b")
        diff = gr.Dataframe(pd.DataFrame(columns=["field", "A", "B"]), interactive=False, wrap=True, elem_id="runs-diff")

    pickers = [picked, overlaid, run_a, run_b]

    listing = [runs_table, *pickers]
    refresh.click(on_refresh, outputs=listing, **HIDDEN)
    tab.select(on_open, inputs=picked, outputs=listing, **HIDDEN)
    runs_table.select(on_row, outputs=picked, **HIDDEN)
    picked.change(details, inputs=picked, outputs=[card, command, log], **HIDDEN)
    act_outputs = [outcome, *listing, card, command, log]
    for button, handler in ((stop, on_stop), (resume, on_resume)):
        button.click(handler, inputs=[picked, visitor.state()], outputs=act_outputs, api_visibility="private")
    export.click(on_export, inputs=[picked, visitor.state()], outputs=[*act_outputs, download], api_visibility="private")
    # A deleted run cannot come back: ask first, saying what would go with it.
    delete.click(on_ask_delete, inputs=picked, outputs=[confirm, question, delete_one, delete_all, outcome, asked], **HIDDEN)
    for button, with_dependents in ((delete_one, False), (delete_all, True)):
        button.click(deleter(with_dependents), inputs=[picked, visitor.state()], outputs=[confirm, *act_outputs], api_visibility="private")
    keep.click(lambda: (gr.Group(visible=False), "nothing deleted"), outputs=[confirm, outcome], **HIDDEN)
    picked.change(on_pick_another, inputs=[picked, asked], outputs=confirm, **HIDDEN)
    gr.on([overlaid.change, metric.input, smoothing.release], on_overlay, inputs=[overlaid, metric, smoothing], outputs=[metric, overlay], **HIDDEN)
    gr.on([run_a.change, run_b.change], on_diff, inputs=[run_a, run_b], outputs=diff, **HIDDEN)
