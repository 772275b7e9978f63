"""SFT: a pretrained model learns the assistant's format from chats, fully or with LoRA (8-bit, 4-bit)."""

from __future__ import annotations

import gradio as gr

from pages import stage


def build(demo: gr.Blocks) -> None:
    with gr.Tab("SFT") as tab:
        stage.build("sft", demo, tab)
