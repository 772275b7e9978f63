"""bench/gpu.py, the GPU path's benchmark, at tiny sizes on whatever device runs the tests: every row of it runs,
so the script is ready the day a GPU is lent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gpu.py"


def test_the_gpu_bench_runs_every_row_at_smoke_size(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("| what |"):]
    for row in ("pretrain `nano`", "pretrain Qwen2-shaped", "SFT full", "SFT lora ", "SFT lora-8bit", "SFT lora-4bit", "DPO step", "PPO rollout batch"):
        assert f"| {row}" in table, table
    assert "s/step" in table and "memory × full" in table
