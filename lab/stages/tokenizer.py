"""Stage 0, the tokenizer: train a byte-level BPE, WordPiece or Unigram tokenizer on text and measure it.

    llm-lab train tokenizer --kind bpe --vocab-size 2048 --data world

Saves `tokenizer/` (a Hugging Face tokenizer folder with the lab's chat template) and logs its
statistics on held-out text: characters and words per token, share of the vocabulary used, unknown rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.configs import DATA, MODEL, option
from lab.runs import atomic_dir
from lab.stages import Stage, text_splits, world_of
from lab.stages.base import DataArgs, RunArgs
from lab.tokenizers import KINDS, stats, train_tokenizer, vocab_shortfall

STAGE = Stage(label="Tokenizer", page="Data & tokenizer", data="text", produces="tokenizer", lineage=(), curves=())


@dataclass
class Config(DataArgs, RunArgs):
    kind: str = option("bpe", "tokenizer algorithm", choices=KINDS, order=MODEL)
    vocab_size: int = option(2048, "vocabulary size, special tokens included", order=MODEL, within="[16, 1048576]")
    data: str = option("world", "training text: 'world' (the built-in toy world) or a file/folder path", order=DATA)
    min_frequency: int = option(2, "merges/pieces must occur at least this often (BPE, WordPiece)", advanced=True, within="[1, 1000000]")


def check(config: Config) -> None:
    if world_of(config.data, config.columns) is None:
        from lab import data

        data.load(config.data, columns=config.columns)  # a bad file is named, with its line, before a run exists


def run(config: Config, run) -> dict:
    train, heldout = text_splits(config.data, columns=config.columns)
    print(f"training a {config.kind} tokenizer (vocab {config.vocab_size}) on {len(train)} documents", flush=True)
    tokenizer = train_tokenizer(train, kind=config.kind, vocab_size=config.vocab_size, min_frequency=config.min_frequency)
    with atomic_dir(run.path / "tokenizer") as tmp:
        tokenizer.save_pretrained(tmp)
    result = stats(tokenizer, heldout or train[:200])
    run.log_metrics({"step": 0, **result})
    print("held-out statistics: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()), flush=True)
    short = vocab_shortfall(tokenizer, config.vocab_size, config.min_frequency)
    if short:
        print(short, flush=True)
    return {**result, **({"note": short} if short else {})}
