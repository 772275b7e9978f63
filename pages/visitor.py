"""Who a browser is, for ownership in demo mode: an id kept in the browser's own storage (gr.BrowserState), so
a visitor keeps their runs and votes across reloads and tabs; their login instead where the app has one. The
API's callers are their gradio session (one gradio_client Client), as `api.visitor` reads it."""

from __future__ import annotations

import uuid

import gradio as gr

from pages import api

_state: gr.BrowserState | None = None


def add(demo: gr.Blocks) -> gr.BrowserState:
    """The browser's id, made at its first visit; call inside the Blocks, before the pages that read it."""
    global _state
    _state = gr.BrowserState("", storage_key="llm-lab-visitor")
    demo.load(lambda known: known or uuid.uuid4().hex, inputs=_state, outputs=_state, api_visibility="private", show_progress="hidden", show_progress_on=[])
    return _state


def state() -> gr.BrowserState:
    return _state


def of(browser_id: str, request: gr.Request | None) -> api.Caller:
    """The caller a page's handler acts as: the login, else the browser's id, else (before it loaded) the session."""
    return api.Caller(username=getattr(request, "username", None), session_hash=browser_id or getattr(request, "session_hash", None))
