"""The lab in a browser: every page in one gr.Blocks app, plus the API endpoints of `pages.api`.

    llm-lab                     # or `llm-lab app --host 0.0.0.0 --port 7860 --auth USER:PASS --share`

Home comes first (`pages.home`), then the stages' pages, which come from their declarations
(`pages.stage.build_pages`); any other page is a module with `build(demo)` that adds its tab, and adding one
is one line in PAGES. Home links into the others (a stage's box opens its page, Compare is filled in).
"""

from __future__ import annotations

import os
import subprocess
import sys

import gradio as gr

from pages import api, compare, feedback, home, runs, stage, tokens, visitor

PAGES = [feedback, compare, runs]

HEADER = """# LLM Lifecycle Lab
**tokenizer → pretraining → supervised fine-tuning → alignment.** Every run is a job in its own process and a
folder in the run store: close the browser whenever you like, and come back to its curves."""


def build() -> gr.Blocks:
    with gr.Blocks(title="LLM Lifecycle Lab", analytics_enabled=False) as demo:
        gr.Markdown(HEADER)
        visitor.add(demo)
        kept = stage.kept_forms(pages=("compare",))
        with gr.Tabs(overflow_behavior="wrap") as tabs:  # on a narrow screen every page stays in sight, on two rows
            first = home.Home()
            first.build(demo)
            opened = stage.build_pages(demo, kept, extras={"Data & tokenizer": tokens.build})
            built = {page: page.build(demo, kept["compare"]) if page is compare else page.build(demo) for page in PAGES}
        first.link(tabs, opened, built[compare])
        api.register()
    # Jobs run elsewhere, so the app's own work is short reads and job submissions: many at once is fine.
    demo.queue(default_concurrency_limit=4)
    return demo


def max_upload() -> str:
    """The largest file a visitor may upload (LAB_MAX_UPLOAD_MB; a demo's default is smaller)."""
    from lab import demo

    return f"{float(os.environ.get('LAB_MAX_UPLOAD_MB', demo.MAX_UPLOAD_MB if demo.on() else 500)):g}mb"


def auth_from_env() -> tuple[str, str] | None:
    """LAB_AUTH=user:pass: the login a Space (or a server) sets as a secret, never in code."""
    user, sep, password = os.environ.get("LAB_AUTH", "").partition(":")
    return (user, password) if sep and user and password else None


def seed_if_empty() -> subprocess.Popen | None:
    """A demo opens ready to compare: in an empty store, a nano lifecycle is built in the background
    (`llm-lab seed`, its log in the store's seed.log; LAB_DEMO_SEED=0 turns it off)."""
    from lab import demo, runs

    if not demo.on() or os.environ.get("LAB_DEMO_SEED", "1") == "0" or runs.list_runs():
        return None
    runs.root().mkdir(parents=True, exist_ok=True)
    with open(runs.root() / "seed.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "lab", "seed"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def launch(host: str | None = "127.0.0.1", port: int | None = 7860, share: bool = False, auth: tuple[str, str] | None = None) -> None:
    """Serve the lab (host and port None: gradio's defaults, which a Space sets through GRADIO_SERVER_NAME/PORT)."""
    from lab import errors

    errors.SURFACE = "page"
    seed_if_empty()
    build().launch(server_name=host, server_port=port, share=share, auth=auth or auth_from_env(), max_file_size=max_upload())
