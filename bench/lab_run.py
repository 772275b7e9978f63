"""What the benches that drive the lab's own commands share: one `llm-lab train` in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def train(store: Path, *args: str) -> tuple[str, dict, list[dict]]:
    """`llm-lab train ARGS` on the run store `store`, offline: (its run id, its run.json, its metrics rows)."""
    env = {**os.environ, "LAB_CHECKPOINTS": str(store), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "lab", "train", *args], capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode:
        raise SystemExit(f"llm-lab train {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    run_id = proc.stdout.strip().splitlines()[-1]
    info = json.loads((store / run_id / "run.json").read_text())
    rows = [json.loads(line) for line in (store / run_id / "metrics.jsonl").read_text().splitlines()]
    return run_id, info, rows
