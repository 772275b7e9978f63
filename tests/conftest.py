"""Shared fixtures: a private run store per test session, and the `llm-lab` command run for real as
a subprocess, the way a user (or the UI) starts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoints")
    os.environ["LAB_CHECKPOINTS"] = str(path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield path
    # A test that failed half-way may leave a long job behind: it must not outlive the session.
    from lab import jobs, runs

    for run in runs.list_runs():
        if run.status in runs.ACTIVE:
            jobs.stop(run, grace=5, wait=True)


def lab(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    if check and proc.returncode != 0:
        raise AssertionError(f"llm-lab {' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
    return proc


def last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.strip().splitlines()[-1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def nano_run(store) -> Path:
    """A nano causal LM pretrained for 30 steps on the toy world: the parent of later stages' tests."""
    proc = lab("train", "pretrain", "--preset", "nano", "--max-steps", "30", "--logging-steps", "5", "--sample-every", "10", "--eval-every", "15")
    return store / last_line(proc)
