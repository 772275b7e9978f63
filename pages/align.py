"""Align: the reward model, then PPO, DPO and GRPO, one sub-tab per alignment stage the engine has."""

from __future__ import annotations

import gradio as gr

from lab.stages import STAGES
from pages import stage

LABELS = {"reward": "Reward model", "ppo": "PPO", "dpo": "DPO", "grpo": "GRPO"}


def build(demo: gr.Blocks) -> None:
    present = [s for s in LABELS if s in STAGES]
    if not present:  # no alignment stage in this engine yet: no empty tab
        return
    with gr.Tab("Align"):
        with gr.Tabs():
            for name in present:
                with gr.Tab(LABELS[name]) as tab:
                    stage.build(name, demo, tab)
