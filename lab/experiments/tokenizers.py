"""tokenizers: BPE, WordPiece and Unigram tokenizers at two vocabulary sizes, each under a base model pretrained
with the same steps, batch and context. The claim: the tokenizer changes efficiency; more characters per token
means more text per step at the same compute, and it shows in what the model learns.
"""

from __future__ import annotations

from lab.experiments import num, pct, varied

QUESTION = "Does the tokenizer change efficiency: characters per token, and what a base model learns at equal compute?"
RUNS = "BPE, WordPiece and Unigram tokenizers of 512 and 2048 tokens, each under a base model pretrained with the same steps, batch and context; then characters per token, held-out bits per byte and fact completion"
SEEDS = 1
KINDS = ("bpe", "wordpiece", "unigram")
SIZES = (512, 2048)
STEPS = {"nano": 60, "default": 330}  # a fifth (nano) or half (default) of the lifecycle's pretraining, six times over


def _name(kind: str, size: int) -> str:
    return f"{kind} {size}"


def plan(base: dict, seeds: list[int], scale: str) -> list:
    steps = []
    extra = {"max_steps": STEPS[scale]} if scale in STEPS else {}
    for kind in KINDS:
        for size in SIZES:
            steps.append(varied(base, "tokenizer", f"tokenizer {_name(kind, size)}", kind=kind, vocab_size=size))
            steps.append(varied(base, "pretrain", f"pretrain {_name(kind, size)}", tokenizer=f"{{tokenizer {_name(kind, size)}}}", **extra))
    return steps


def measure(made: dict, device: str) -> dict:
    from lab import evals, inference
    from lab.experiments import world_of
    from lab.runs import Run

    rows = []
    for kind in KINDS:
        for size in SIZES:
            name = _name(kind, size)
            world = world_of(made[f"pretrain {name}"])
            heldout = world.pretrain_corpus()["heldout"]
            stats = Run.open(made[f"tokenizer {name}"]).info.get("final_metrics") or {}
            loaded = inference.load(made[f"pretrain {name}"], "causal", device)
            rows.append({"tokenizer": name, "kind": kind, "vocab_size": size, "tokenizer_run": made[f"tokenizer {name}"], "pretrain_run": made[f"pretrain {name}"],
                         "chars_per_token": stats.get("chars_per_token"), "vocab_used": stats.get("vocab_used"), "vocab_learnt": stats.get("vocab_size"),
                         **{k: v for k, v in evals.perplexity(loaded.model, loaded.tokenizer, heldout).items() if k in ("bits_per_byte", "perplexity")},
                         "fact_accuracy": evals.fact_completion(loaded.model, loaded.tokenizer, world.eval_sets()["pretrain_facts"])["fact_accuracy"]})
    return {"tokenizers": rows}


def conclude(m: dict) -> str:
    rows = m["tokenizers"]
    best = min(rows, key=lambda r: r["bits_per_byte"])
    worst = max(rows, key=lambda r: r["bits_per_byte"])
    dense = max(rows, key=lambda r: r["chars_per_token"] or 0)
    text = ("At equal pretraining compute: " + "; ".join(
        f"{r['tokenizer']}: {num(r['chars_per_token'])} characters per token, {num(r['bits_per_byte'], 3)} bits per byte, facts {pct(r['fact_accuracy'])}" for r in rows) + ".")
    text += (f" The lowest bits per byte was {best['tokenizer']}'s ({best['bits_per_byte']:.3f}), the highest {worst['tokenizer']}'s "
             f"({worst['bits_per_byte']:.3f}); the densest tokenizer was {dense['tokenizer']} ({dense['chars_per_token']:.2f} characters per token).")
    bigger = [(next(r for r in rows if r["kind"] == k and r["vocab_size"] == SIZES[0]), next(r for r in rows if r["kind"] == k and r["vocab_size"] == SIZES[-1])) for k in KINDS]
    denser = sum(b["chars_per_token"] > a["chars_per_token"] for a, b in bigger)
    better = sum(b["bits_per_byte"] < a["bits_per_byte"] for a, b in bigger)
    text += (f" A {SIZES[-1]}-token vocabulary was denser than a {SIZES[0]}-token one for {denser} of {len(KINDS)} algorithms and gave lower bits "
             f"per byte for {better} of {len(KINDS)}.")
    short = [r for r in rows if r.get("vocab_learnt") and r["vocab_learnt"] < r["vocab_size"]]
    if short:
        text += (" Not every vocabulary reached the size asked (the text had no more to learn): "
                 + ", ".join(f"{r['tokenizer']} learnt {r['vocab_learnt']}" for r in short) + ".")
    spread = worst["bits_per_byte"] - best["bits_per_byte"]
    text += (f" The tokenizer moved bits per byte by {spread:.3f} ({spread / best['bits_per_byte']:.0%} of the best): it does change efficiency."
             if spread / best["bits_per_byte"] >= 0.05 else
             f" The tokenizers were within {spread / best['bits_per_byte']:.0%} of each other in bits per byte (one seed): the expected effect did not appear clearly.")
    return text


def figure(m: dict):
    from plotly.subplots import make_subplots

    rows = m["tokenizers"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("characters per token", "held-out bits per byte (lower is better)", "fact completion"))
    for size in SIZES:
        part = [r for r in rows if r["vocab_size"] == size]
        for col, key in enumerate(("chars_per_token", "bits_per_byte", "fact_accuracy"), start=1):
            fig.add_bar(x=[r["kind"] for r in part], y=[r[key] for r in part], name=f"vocabulary {size}", legendgroup=str(size), showlegend=col == 1, row=1, col=col)
    fig.update_layout(barmode="group", title="tokenizers: efficiency and what the base model learns at equal compute", height=380,
                      margin=dict(l=40, r=10, t=70, b=110), legend=dict(orientation="h", y=-0.25, yanchor="top"))
    return fig
