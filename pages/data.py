"""Data & tokenizer: pick or upload data, preview what the lab reads from it, and train a tokenizer on it."""

from __future__ import annotations

import gradio as gr

from pages import stage


def build(demo: gr.Blocks) -> None:
    with gr.Tab("Data & tokenizer") as tab:
        stage.build("tokenizer", demo, tab)
