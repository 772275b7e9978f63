"""SFT: peak memory of each mode, and the lab's tokens/s against a plain TRL script, in one run.

    python bench/sft_memory_throughput.py --preset base --steps 6

A decoder of the chosen preset is built from its config (random weights: speed and memory do not
depend on them) with a toy-world tokenizer and saved as the parent. Then, each in its own process so
that peak memory is its own:
- `llm-lab train sft --mode full|lora|lora-8bit` on the toy world's chats: peak resident memory of the
  process, and tokens/s from the run's own metrics;
- a plain TRL script (SFTTrainer + SFTConfig with the same batch, length, steps, dtype; nothing else):
  tokens/s, the reference for the lab's ratio (goal ≥ 0.95).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

PLAIN_TRL = textwrap.dedent('''
    import json, sys, time, torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    from lab.world import build_world
    parent, steps, batch, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(parent, dtype=torch.bfloat16 if cuda else torch.float32)
    tok = AutoTokenizer.from_pretrained(parent)
    args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-3, logging_steps=1,
                     report_to="none", save_strategy="no", bf16=cuda, use_cpu=not cuda, activation_checkpointing=False,
                     assistant_only_loss=True, max_length=256, include_num_input_tokens_seen="all", disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(build_world().sft_chats()), processing_class=tok)
    trainer.train()
    rows = [h for h in trainer.state.log_history if "loss" in h]
    print(json.dumps({"rows": rows}))
''')


# Runs a command and reports its peak resident memory: each mode measured in a process of its own.
PEAK = "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"


def measured(cmd: list[str], env: dict) -> tuple[str, float]:
    proc = subprocess.run([sys.executable, "-c", PEAK, *cmd], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    peak_kb = int(proc.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    return proc.stdout, peak_kb / 1024


def steady_tokens_per_second(rows: list[dict], skip: int = 2) -> float:
    """Tokens/s between the log of step `skip` and the last, from the trainer's own counters."""
    rows = [r for r in rows if "num_input_tokens_seen" in r and "loss" in r and "train_runtime" in r]
    a, b = rows[skip], rows[-1]
    return (b["num_input_tokens_seen"] - a["num_input_tokens_seen"]) / (b["train_runtime"] - a["train_runtime"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="base")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lab-sft-bench-"))
    env = {**os.environ, "LAB_CHECKPOINTS": str(work / "checkpoints"), "PYTHONUNBUFFERED": "1"}

    from lab.models import PRESETS, build_from_scratch, count_parameters
    from lab.stages import text_splits
    from lab.tokenizers import train_tokenizer

    train, _ = text_splits("world")
    tokenizer = train_tokenizer(train, vocab_size=PRESETS[args.preset].vocab)
    model = build_from_scratch(args.preset, "clm", tokenizer, 256)
    n_params = count_parameters(model)
    parent = work / "parent"
    model.save_pretrained(parent)
    tokenizer.save_pretrained(parent)
    del model

    results = []
    for mode in ("lora-8bit", "lora", "full"):
        cmd = [sys.executable, "-m", "lab", "train", "sft", "--parent", str(parent), "--mode", mode, "--max-steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--logging-steps", "1", "--kl-every", "0", "--sample-every", "0"]
        out, peak = measured(cmd, env)
        run_dir = work / "checkpoints" / out.strip().splitlines()[-1]
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        results.append((f"lab sft --mode {mode}", peak, steady_tokens_per_second(rows)))

    out, peak = measured([sys.executable, "-c", PLAIN_TRL, str(parent), str(args.steps), str(args.batch_size), str(work / "plain")], env)
    plain = steady_tokens_per_second(json.loads(out.strip().splitlines()[-1])["rows"])
    results.append(("plain TRL script (full)", peak, plain))

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU {platform.machine()}, {os.cpu_count()} cores"
    print(f"device: {device}; torch {torch.__version__}; model: {args.preset} decoder from config ({n_params:,} parameters, random weights)")
    print(f"batch {args.batch_size} chats, max length 256, {args.steps} steps (tokens/s from step 3 on)")
    print("| run | peak RSS (MiB) | tokens/s | vs plain TRL |")
    print("|---|---:|---:|---:|")
    for name, mem, tps in results:
        print(f"| {name} | {mem:,.0f} | {tps:,.0f} | {tps / plain:.3f} |")


if __name__ == "__main__":
    main()
