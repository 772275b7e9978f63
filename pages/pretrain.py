"""Pretrain: a model learns the world from raw text; pick a size preset, start, and watch the loss fall."""

from __future__ import annotations

import gradio as gr

from pages import stage


def build(demo: gr.Blocks) -> None:
    from lab.models import PRESETS

    with gr.Tab("Pretrain") as tab:
        stage.build("pretrain", demo, tab)
        gr.Markdown("Presets: " + " · ".join(f"**{name}** {p.about}" for name, p in PRESETS.items()) + " (`llm-lab presets` counts them exactly).")
