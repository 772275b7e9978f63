"""Tokens/s of the lab's pretraining (transformers Trainer + the lab's callback, as `llm-lab train
pretrain` runs it) against a bare PyTorch loop on the same model, batch, sequence length, dtype and
threads, measured in one process, one after the other, alternating; best of `--rounds`, and the
ratio of medians beside it.

    python bench/pretrain_throughput.py --preset tiny --steps 60

The bare loop does what any training loop must: forward, backward, gradient clipping, AdamW,
learning-rate schedule. Goal: lab / bare ≥ 0.95.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch


def bare_loop(model, blocks, batch_size, steps, warmup, lr):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model.train()
    g = torch.Generator().manual_seed(0)
    t0 = None
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        idx = torch.randint(len(blocks), (batch_size,), generator=g)
        x = blocks[idx]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return steps * batch_size * blocks.shape[1] / (time.perf_counter() - t0)


def lab_run(preset, batch_size, seq_len, steps, warmup, lr, threads):
    """The real stage, in this process; tokens/s from its own metrics after the warm-up steps."""
    from lab import jobs
    from lab.stages.pretrain import Config

    logging = 10
    config = Config(preset=preset, max_steps=warmup + steps, batch_size=batch_size, seq_len=seq_len, learning_rate=lr,
                    logging_steps=logging, eval_every=0, sample_every=0, threads=threads)
    run = jobs.create("pretrain", config)
    status = jobs.execute(run)
    assert status == "completed", run.info["error"]
    rows = [r for r in run.metrics()[0] if "loss" in r and "elapsed" in r]
    first = next(r for r in rows if r["step"] >= warmup)
    last = rows[-1]
    return (last["num_input_tokens_seen"] - first["num_input_tokens_seen"]) / (last["elapsed"] - first["elapsed"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    os.environ.setdefault("LAB_CHECKPOINTS", tempfile.mkdtemp(prefix="lab-bench-"))
    torch.set_num_threads(args.threads)

    from lab.models import PRESETS, build_from_scratch, count_parameters
    from lab.stages import text_splits
    from lab.stages.pretrain import pack
    from lab.tokenizers import train_tokenizer

    train, _ = text_splits("world")
    tokenizer = train_tokenizer(train, vocab_size=PRESETS[args.preset].vocab)
    blocks = pack(tokenizer, train, args.seq_len)

    bare, lab = [], []
    for _ in range(args.rounds):
        torch.manual_seed(0)
        model = build_from_scratch(args.preset, "clm", tokenizer, args.seq_len)
        n_params = count_parameters(model)
        bare.append(bare_loop(model, blocks, args.batch_size, args.steps, args.warmup, 3e-3))
        lab.append(lab_run(args.preset, args.batch_size, args.seq_len, args.steps, args.warmup, 3e-3, args.threads))

    b, best = max(bare), max(lab)
    median = lambda xs: sorted(xs)[len(xs) // 2]
    print()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads, fp32")
    print(f"model: {args.preset} ({n_params:,} parameters), batch {args.batch_size} x {args.seq_len} tokens, {args.steps} timed steps after {args.warmup}, best of {args.rounds}")
    print("| loop | tokens/s | ratio |")
    print("|---|---:|---:|")
    print(f"| bare PyTorch | {b:,.0f} | 1.00 |")
    print(f"| lab (Trainer + callback) | {best:,.0f} | {best / b:.3f} |")
    print(f"all rounds: bare {[round(x) for x in bare]}, lab {[round(x) for x in lab]}; "
          f"ratio of medians {median(lab) / median(bare):.3f}")


if __name__ == "__main__":
    main()
