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

from pages import api, compare, experiments, feedback, home, runs, stage, tokens, visitor

PAGES = [feedback, compare, runs, experiments]

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
        handle_first(demo, tick_only_when_shown(tabs))
        api.register()
    # Jobs run elsewhere, so the app's own work is short reads and job submissions: many at once is fine.
    demo.queue(default_concurrency_limit=4)
    # Gradio's queue looks for new events every 1 ms and for progress every 10 ms while it has none, which
    # kept an idle app at 9% of a core (5.5 CPU s/min, bare gradio the same; bench/RESULTS.md). 100 ms and
    # 500 ms (0.3 s/min) cost an event at most 100 ms before it starts; the answers of a running event (a stage
    # page following its run) go out as they come.
    if hasattr(demo._queue, "sleep_when_free"):
        demo._queue.sleep_when_free, demo._queue.progress_update_sleep_when_free = 0.1, 0.5
    return demo


def timers_in(block) -> list[gr.Timer]:
    found = []
    for child in getattr(block, "children", []):
        found += [child] if isinstance(child, gr.Timer) else timers_in(child)
    return found


def handle_first(demo: gr.Blocks, dependencies: list) -> None:
    """The browser runs the handlers of one event one after the other, in the order they were declared. The
    handlers of `dependencies` go first: a tab's timers must be set before its page's reads, or the Home
    tab's select at the page load (which stops every other page's timers) can end after a page opened in the
    meantime has started its own, and leave that page's run unwatched."""
    ids = {d["id"] for d in dependencies}
    for fn_id in [i for i in demo.fns if i not in ids]:
        demo.fns[fn_id] = demo.fns.pop(fn_id)  # to the end, in their order; in place: the Blocks holds the dict


def tick_only_when_shown(tabs: gr.Tabs, shown: bool = True, outside: tuple = ()) -> list:
    """Every page's timers tick only while its tab is shown: each timer of a hidden page polled the app and
    made the browser redraw its outputs, in every open browser tab (on a finished run, 25 s of Chromium's
    CPU a minute: bench/RESULTS.md). A tab's select (which a link that opens the tab fires too) starts its
    timers and stops every other. Where a tab holds sub-tabs, only the shown sub-tab's timers start, from a
    State its sub-tabs' selects keep; a page's select leaves its other sub-tabs' timers as they are, since a
    link selects the page and a sub-tab at once and the sub-tab's select may have run first. Returns the
    handlers it adds, which must run first (handle_first)."""
    pages = [tab for tab in tabs.children if isinstance(tab, gr.Tab)]
    first = next((tab for tab in pages if tabs.selected is not None and tab.id == tabs.selected), pages[0] if pages else None)
    every, added = timers_in(tabs), []
    # Cheap handlers: they need not wait in the queue behind the pages' reads.
    quick = dict(**stage.HIDDEN, concurrency_limit=None)
    for tab in pages:
        mine = timers_in(tab)
        others = [t for t in [*every, *outside] if t not in mine]
        inner = next((c for c in tab.children if isinstance(c, gr.Tabs)), None)
        subs = {sub.id: timers_in(sub) for sub in inner.children if isinstance(sub, gr.Tab)} if inner else {}
        own = [t for t in mine if all(t not in ts for ts in subs.values())]
        for t in mine:
            t.active = shown and tab is first and t in own  # a sub-tab's timers: set by the nested call below
        if not subs:
            added.append(tab.select(lambda mine=mine, others=others: [gr.Timer(active=True)] * len(mine) + [gr.Timer(active=False)] * len(others),
                                    outputs=[*mine, *others], **quick))
            continue
        sub_shown = gr.State(next(iter(subs)))
        nested = [t for ts in subs.values() for t in ts]

        def on_page(sub, subs=subs, own=own, nested=nested, others=others):
            return ([gr.Timer(active=True)] * len(own) + [gr.Timer(active=True) if t in subs[sub] else gr.skip() for t in nested]
                    + [gr.Timer(active=False)] * len(others))

        added.append(tab.select(on_page, inputs=sub_shown, outputs=[*own, *nested, *others], **quick))
        for sub_id in subs:
            inner_tab = next(c for c in inner.children if isinstance(c, gr.Tab) and c.id == sub_id)
            added.append(inner_tab.select(lambda sub_id=sub_id: sub_id, outputs=sub_shown, **quick))
        added += tick_only_when_shown(inner, shown=shown and tab is first, outside=tuple(others))
    return added


# Gradio's status tracker times a pending event in a requestAnimationFrame loop, and the one of the app's
# "Loading..." screen is destroyed while pending, so its loop never ends: every open tab drew 60 frames a second
# for nothing, about 5 CPU s/min of Chromium's renderer for a bare gr.Blocks on 2 cores (bench/RESULTS.md). The
# loop takes window.requestAnimationFrame when its module loads, before gradio's own `head` is inserted, so this
# script goes first into the page's HTML (FirstInHead). While no status tracker is shown, a tracker's frame comes
# from a timer instead: it only counts the seconds of a timer nobody sees.
TRACKERS_IDLE = b"""<script>(() => {
  const frame = window.requestAnimationFrame.bind(window);
  const shown = ".wrap.full:not(.hide), .wrap.minimal:not(.hide)";
  window.requestAnimationFrame = (callback) =>
    (new Error().stack || "").includes("statustracker") && !document.querySelector(shown)
      ? -setTimeout(() => callback(performance.now()), 1000) : frame(callback);
})();</script>"""


class FirstInHead:
    """ASGI middleware: TRACKERS_IDLE at the top of the HTML page the app serves at its root, ahead of gradio's
    scripts. Inside gradio's compression (gradio adds that later, outside), so the page is still plain text here."""

    def __init__(self, app, script: bytes = TRACKERS_IDLE):
        self.app, self.script = app, script

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != "/":
            return await self.app(scope, receive, send)
        start, body = {}, []

        async def rewrite(message):
            if message["type"] == "http.response.start":
                start.update(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            page, headers = b"".join(body), dict(start.get("headers") or [])
            if headers.get(b"content-type", b"").startswith(b"text/html") and b"content-encoding" not in headers:
                page = page.replace(b"<head>", b"<head>" + self.script, 1)
                start["headers"] = [(k, v) for k, v in start["headers"] if k != b"content-length"] + [(b"content-length", str(len(page)).encode())]
            await send(start)
            await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, rewrite)


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
    from starlette.middleware import Middleware

    build().launch(server_name=host, server_port=port, share=share, auth=auth or auth_from_env(), max_file_size=max_upload(),
                   app_kwargs={"middleware": [Middleware(FirstInHead)]})
