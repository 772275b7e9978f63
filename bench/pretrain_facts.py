"""Does the default `tiny` model learn the toy world's facts within three minutes on this machine?

    python bench/pretrain_facts.py                 # the default config, as `llm-lab train pretrain` runs it
    python bench/pretrain_facts.py --max-minutes 3 # a hard time budget on top

Runs the real stage as a subprocess, then reads the run's own figures: training time, steps, tokens/s,
held-out perplexity and the share of facts completed correctly ("The capital of Zorbia is" → "Velmora"),
split into facts that SFT will teach later and facts only pretraining sees. Goal: ≥ 80% in ≤ 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--max-minutes", type=float, default=0.0)
    ap.add_argument("extra", nargs="*", help="more `train pretrain` flags, after --")
    args = ap.parse_args()
    store = os.environ.setdefault("LAB_CHECKPOINTS", tempfile.mkdtemp(prefix="lab-bench-"))
    cmd = [sys.executable, "-m", "lab", "train", "pretrain", "--preset", args.preset, *args.extra]
    if args.max_minutes:
        cmd += ["--max-minutes", str(args.max_minutes)]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    run_dir = Path(store) / proc.stdout.strip().splitlines()[-1]
    info = json.loads((run_dir / "run.json").read_text())
    final = info["final_metrics"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tps = [r["tokens_per_second"] for r in rows if "tokens_per_second" in r]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; device {info['device']}")
    print(f"command: {' '.join(cmd[1:])}")
    print("| preset | parameters | steps | training time | whole command | tokens/s | held-out ppl | facts | SFT-taught facts | pretrain-only facts |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.preset} | {final['parameters']:,} | {final['steps']} | {final['train_runtime']:.0f} s | {wall:.0f} s | "
          f"{sorted(tps)[len(tps) // 2]:,.0f} | {final.get('eval_perplexity', float('nan')):.2f} | "
          f"{final['eval/fact_accuracy']:.1%} | {final.get('eval/fact_accuracy_sft_taught', float('nan')):.1%} | "
          f"{final.get('eval/fact_accuracy_pretrain_only', float('nan')):.1%} |")


if __name__ == "__main__":
    main()
