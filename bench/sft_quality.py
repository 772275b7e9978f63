"""Does the default SFT turn the default pretrain run into an assistant that answers in the chat format
and still knows what it learnt in pretraining?

    python bench/sft_quality.py                                   # default pretrain, then default SFT
    python bench/sft_quality.py --parent RUN                      # reuse a pretrain run
    python bench/sft_quality.py --parent RUN --sft "" --sft "--mode lora --learning-rate 3e-3"

Runs the real stages as subprocesses and reads each SFT run's end-of-run chat evals (the toy world's
gold judge): the share of answers in the chat format (non-empty, closing the assistant turn), and fact-QA
accuracy split into facts SFT taught and facts only pretraining saw. Goals: format ≥ 95%, pretrain-only
facts ≥ 70%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train(store: str, *args: str) -> tuple[Path, float]:
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "lab", "train", *args], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"llm-lab train {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return Path(store) / proc.stdout.strip().splitlines()[-1], time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--parent", help="a pretrain run to start from (default: train the default one)")
    ap.add_argument("--pretrain", default="", help="extra `train pretrain` flags, as one string")
    ap.add_argument("--sft", action="append", help="extra `train sft` flags, as one string; repeat for several variants")
    args = ap.parse_args()
    store = os.environ.setdefault("LAB_CHECKPOINTS", tempfile.mkdtemp(prefix="lab-bench-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores", flush=True)
    if args.parent:
        parent = args.parent
        card = Path(store) / parent / "run.json"
        pre = json.loads(card.read_text()) if card.exists() else None  # a model folder has no run card
    else:
        path, wall = train(store, "pretrain", *shlex.split(args.pretrain))
        parent, pre = path.name, json.loads((path / "run.json").read_text())
        print(f"pretrain {parent}: {wall:.0f} s", flush=True)
    if pre:
        f = pre["final_metrics"]
        print(f"parent {parent}: fact completion {f.get('eval/fact_accuracy', float('nan')):.1%} "
              f"(SFT-taught {f.get('eval/fact_accuracy_sft_taught', float('nan')):.1%}, "
              f"pretrain-only {f.get('eval/fact_accuracy_pretrain_only', float('nan')):.1%})", flush=True)
    print("| SFT flags | steps | wall | chat format | fact QA, SFT-taught | fact QA, pretrain-only | refusals | gold score | KL to parent |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for extra in args.sft or [""]:
        path, wall = train(store, "sft", "--parent", parent, *shlex.split(extra))
        final = json.loads((path / "run.json").read_text())["final_metrics"]
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        kl = [r["kl"] for r in rows if "kl" in r]
        print(f"| `{extra or '(defaults)'}` | {final['steps']} | {wall:.0f} s | {final['eval/chat_format']:.1%} | "
              f"{final['eval/fact_qa_sft_taught']:.1%} | {final['eval/fact_qa_pretrain_only']:.1%} | "
              f"{final['eval/refusal_rate']:.1%} | {final['eval/gold_score']:.2f} | {kl[-1] if kl else float('nan'):.3f} |", flush=True)


if __name__ == "__main__":
    main()
