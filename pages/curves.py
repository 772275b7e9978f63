"""Plotly figures of metrics rows: one subplot per family of metrics, and one metric of several runs overlaid.

Metrics keep the trainers' own names (loss, eval_loss, kl, objective/kl, rewards/margins, ...), so the
families are found by words in the names rather than by a list per stage: a stage added tomorrow gets
sensible plots without a change here.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

# Counters and bookkeeping that every row carries or that the trainer logs once at the end: not curves.
NOT_CURVES = {"step", "time", "elapsed", "epoch", "num_input_tokens_seen", "num_tokens", "total_flos", "parameters",
              "train_tokens", "trainable_parameters", "steps", "train_loss", "train_runtime"}
# (family, words that put a metric in it), first match wins: "rewards/accuracies" is an accuracy, not a reward.
FAMILIES = [
    ("accuracy", ("accurac",)),
    ("margin", ("margin",)),
    ("kl", ("kl",)),
    ("perplexity", ("perplexity",)),
    ("loss", ("loss",)),
    ("reward", ("reward", "score")),
    ("entropy", ("entropy",)),
    ("learning rate", ("learning_rate",)),
    ("gradient norm", ("grad_norm",)),
    ("tokens/s", ("tokens_per_second",)),
]
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def is_curve(key: str, value) -> bool:
    if key in NOT_CURVES or not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    # The trainer's per-call timings (eval_runtime, train_samples_per_second, ...) say nothing about learning.
    return key == "tokens_per_second" or not (key.endswith("_runtime") or key.endswith("_per_second"))


def family(key: str) -> str:
    words = key.lower().replace("-", "_").replace("/", "_").split("_")
    for name, markers in FAMILIES:
        for m in markers:
            # "kl" must be a whole word (not "kl" inside another word); the others may be parts of one.
            if (m in words) if m == "kl" else (m in key.lower()):
                return name
    # Otherwise TRL's prefixes group alike metrics (logps/chosen with logps/rejected).
    return key.split("/")[0] if "/" in key else key


def ema(values: list[float], smoothing: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the start is not pulled to 0."""
    if not smoothing:
        return values
    out, avg, weight = [], 0.0, 0.0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        avg = smoothing * avg + (1 - smoothing) * v
        weight = smoothing * weight + (1 - smoothing)
        out.append(avg / weight)
    return out


def series(rows: list[dict]) -> dict[str, tuple[list, list]]:
    """{metric: (steps, values)} of every curve-worthy key, in the order first seen."""
    out: dict[str, tuple[list, list]] = {}
    for row in rows:
        for key, value in row.items():
            if is_curve(key, value):
                xs, ys = out.setdefault(key, ([], []))
                xs.append(row.get("step", 0))
                ys.append(float(value))
    return out


def _trace(xs, ys, name, smoothing, color=None, legend=True):
    """The smoothed line, over the raw values drawn faintly (a lone point is drawn as a marker)."""
    mode = "lines+markers" if len(xs) < 3 else "lines"
    traces = []
    if smoothing and len(xs) > 2:
        traces.append(go.Scatter(x=xs, y=ys, mode="lines", line=dict(width=1, color=color), opacity=0.25, name=name, legendgroup=name, showlegend=False, hoverinfo="skip"))
    traces.append(go.Scatter(x=xs, y=ema(ys, smoothing) if len(xs) > 2 else ys, mode=mode, line=dict(width=2, color=color), name=name, legendgroup=name, showlegend=legend))
    return traces


def empty(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=14))
    fig.update_layout(height=240, xaxis=dict(visible=False), yaxis=dict(visible=False), margin=dict(l=10, r=10, t=10, b=10))
    return fig


def families(data: dict[str, tuple[list, list]]) -> dict[str, list[str]]:
    """{family: its metrics} of the curves in `data` (as `series` gives them). A metric logged once (an end-of-run
    evaluation, a tokenizer's statistics) is no curve: its one-point panel said nothing, and the run's figures show it."""
    groups: dict[str, list[str]] = {}
    for key, (xs, _) in data.items():
        if len(xs) > 1:
            groups.setdefault(family(key), []).append(key)
    return groups


def metrics_figure(rows: list[dict], smoothing: float = 0.0, only: tuple[str, ...] | None = None, besides: tuple[str, ...] = ()) -> go.Figure:
    """One subplot per family of the metrics in `rows`, against the step: the families in `only` (in its order),
    or every family but those in `besides`."""
    data = series(rows)
    found = families(data)
    groups = {name: found[name] for name in only if name in found} if only is not None else {k: v for k, v in found.items() if k not in besides}
    if not groups:
        return empty("no curves yet")
    cols = 1 if len(groups) == 1 else 2
    nrows = math.ceil(len(groups) / cols)
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=list(groups), vertical_spacing=min(0.12, 0.5 / nrows), horizontal_spacing=0.08)
    for i, (name, keys) in enumerate(groups.items()):
        r, c = i // cols + 1, i % cols + 1
        for j, key in enumerate(keys):
            xs, ys = data[key]
            # Only subplots of several metrics need the legend to say which line is which.
            for t in _trace(xs, ys, key, smoothing, PALETTE[j % len(PALETTE)], legend=len(keys) > 1):
                t.hovertemplate = f"{key}<br>step %{{x}}: %{{y:.4g}}<extra></extra>"
                fig.add_trace(t, row=r, col=c)
    fig.update_annotations(font_size=12)
    fig.update_layout(height=max(260, 230 * nrows) + 40, margin=dict(l=40, r=15, t=35, b=30), uirevision="keep",
                      legend=dict(orientation="h", yanchor="top", y=-0.06, font=dict(size=11)))
    return fig


def overlay_figure(runs_rows: dict[str, list[dict]], metric: str, smoothing: float = 0.0) -> go.Figure:
    """One metric of several runs on one plot."""
    fig = go.Figure()
    for i, (run_id, rows) in enumerate(runs_rows.items()):
        xs, ys = series(rows).get(metric, ([], []))
        if xs:
            for t in _trace(xs, ys, run_id, smoothing, PALETTE[i % len(PALETTE)]):
                fig.add_trace(t)
    if not fig.data:
        return empty(f"none of these runs logged {metric}" if metric else "pick runs and a metric")
    fig.update_layout(height=380, xaxis_title="step", yaxis_title=metric, margin=dict(l=50, r=15, t=20, b=40), legend=dict(orientation="h", y=-0.2))
    return fig


def metric_names(rows: list[dict]) -> list[str]:
    return list(series(rows))
