"""How tokenizers cut a text, side by side: a section of the Data & tokenizer page. Any text, coloured token
by token for each tokenizer picked (a kind trained on the toy world, a tokenizer run, any model run's
tokenizer, a folder), with its characters per token, tokens per word, unknown rate and vocabulary, through
`api.tokenize`."""

from __future__ import annotations

import html

import gradio as gr

from lab import tokenizers
from pages import api
from pages.stage import HIDDEN, run_choices, warn

EXAMPLE = "The capital of Desur is Pirena. Tokenizers cut unseen words like Zürich into smaller pieces."


def choices() -> list[tuple[str, str]]:
    kinds = [(f"{kind} · trained on the toy world", kind) for kind in tokenizers.KINDS]
    return kinds + run_choices(None, saved_only=True)


def column(view: dict) -> str:
    """One tokenizer's column: its name and figures, then the text with a background per token (alternating,
    so neighbours stand apart; an unknown token red and struck through), its id on hover. What falls between
    tokens (WordPiece drops spaces) shows uncoloured."""
    st = view["stats"]
    figures = (f"{st['tokens']} tokens · {st['chars_per_token']:.2f} chars/token · {st['tokens_per_word']:.2f} tokens/word · "
               f"unknown {st['unknown_rate']:.0%} · vocabulary {st['vocab_size']:,} ({st['distinct_tokens']} distinct here)")
    # Tokens over the same characters (byte-level BPE cuts a 'ü' into two bytes) show as one piece with both ids.
    pieces: list[dict] = []
    for t in view["tokens"]:
        if pieces and t["start"] < pieces[-1]["end"]:
            pieces[-1].update(ids=pieces[-1]["ids"] + [t["id"]], end=max(pieces[-1]["end"], t["end"]), unknown=pieces[-1]["unknown"] or t["unknown"])
        else:
            pieces.append({"ids": [t["id"]], "start": t["start"], "end": t["end"], "unknown": t["unknown"]})
    text, spans, at = view["text"], [], 0
    for i, p in enumerate(pieces):
        spans.append(html.escape(text[at:p["start"]]))
        style = ("background:#fca5a5;text-decoration:line-through" if p["unknown"]
                 else f"background:{('#bfdbfe', '#fde68a', '#bbf7d0', '#fbcfe8')[i % 4]}")
        spans.append(f'<span class="token" title="id {", ".join(map(str, p["ids"]))}" style="{style};border-radius:3px;padding:1px 0;'
                     f'color:#111">{html.escape(text[p["start"]:p["end"]]) or "∅"}</span>')
        at = p["end"]
    spans.append(html.escape(text[at:]))
    return (f'<div class="tokenizer-view" style="flex:1;min-width:260px"><b>{html.escape(view["tokenizer"])}</b>'
            f'<div style="font-size:0.85em;opacity:0.8;margin:2px 0 6px">{figures}</div>'
            f'<div style="white-space:pre-wrap;line-height:2;font-family:monospace">{"".join(spans)}</div></div>')


def on_tokenize(text, picked):
    try:
        views = api.tokenize(text, list(picked or []))
    except gr.Error as e:
        return warn(e)
    return '<div style="display:flex;gap:16px;flex-wrap:wrap">' + "".join(column({**v, "text": text}) for v in views) + "</div>"


def build(demo: gr.Blocks, tab) -> None:
    """The section, inside the page's tab."""
    gr.Markdown("### How tokenizers cut a text\nType any text and pick up to four tokenizers: each shows the text cut "
                "into its tokens (hover one for its id), and what that costs: more tokens per word means a longer "
                "sequence for the same text, and an unknown token is text the model cannot read.")
    with gr.Row(equal_height=True):
        text = gr.Textbox(EXAMPLE, label="text", lines=3, scale=3, elem_id="tokens-text")
        picked = gr.Dropdown(choices(), value=["bpe", "wordpiece"], multiselect=True, max_choices=4, allow_custom_value=True,
                             label="tokenizers (1-4): a kind, a run, or a typed folder", scale=2, elem_id="tokens-picked")
        show = gr.Button("Tokenize", scale=0, elem_id="tokens-show")
    view = gr.HTML(elem_id="tokens-view")
    gr.on([show.click, text.submit, picked.change], on_tokenize, inputs=[text, picked], outputs=view, **HIDDEN)
    # Drawn when the page is first opened, not at every browser's load (it trains two tokenizers the first time).
    tab.select(lambda: gr.Dropdown(choices=choices()), outputs=picked, **HIDDEN).then(on_tokenize, inputs=[text, picked], outputs=view, **HIDDEN)
