"""The lab in a browser: every page in one gr.Blocks app, plus the API endpoints of `pages.api`.

    llm-lab                     # or `llm-lab app --host 0.0.0.0 --port 7860 --auth USER:PASS --share`

The stages' pages come from their declarations (`pages.stage.build_pages`); any other page is a module with
`build(demo)` that adds its tab, and adding one is one line in PAGES.
"""

from __future__ import annotations

import gradio as gr

from pages import api, compare, feedback, runs, stage

PAGES = [feedback, compare, runs]

HEADER = """# LLM Lifecycle Lab
**tokenizer → pretraining → supervised fine-tuning → alignment.** Every run is a job in its own process and a
folder in the run store: close the browser whenever you like, and come back to its curves."""


def build() -> gr.Blocks:
    with gr.Blocks(title="LLM Lifecycle Lab", analytics_enabled=False) as demo:
        gr.Markdown(HEADER)
        with gr.Tabs(overflow_behavior="wrap"):  # on a narrow screen every page stays in sight, on two rows
            stage.build_pages(demo)
            for page in PAGES:
                page.build(demo)
        api.register()
    # Jobs run elsewhere, so the app's own work is short reads and job submissions: many at once is fine.
    demo.queue(default_concurrency_limit=4)
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, share: bool = False, auth: tuple[str, str] | None = None) -> None:
    build().launch(server_name=host, server_port=port, share=share, auth=auth)
