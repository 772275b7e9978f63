"""Shared fixtures: a private run store per test session, and the `llm-lab` command run for real as
a subprocess, the way a user (or the UI) starts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

# The workers of `pytest -n N` share the machine's cores, and so do the jobs they start: torch's default of
# one thread per core in each of them oversubscribed the cores: two jobs side by side at 2 threads each took about
# twice as long as at 1 thread each (bench/RESULTS.md, "The test suite's time"). Set before anything imports torch; the
# jobs inherit it.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))

import lab  # noqa: E402, F401  (first of the lab: it sets OpenMP's passive waiting before any test imports torch)

# The slowest test files, slowest first (their minutes: bench/RESULTS.md, "The test suite's time"). xdist
# hands each worker whole files (`--dist loadfile`) in collection order (`--no-loadscope-reorder`, pyproject.toml):
# the long ones start first and the short ones fill in beside them, instead of a 25-minute file starting last.
SLOWEST_FIRST = ("test_experiments", "test_faults", "test_lifecycle", "test_align", "test_labeler", "test_docker",
                 "test_distributed", "test_browser_home", "test_sft", "test_browser_pages")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(rank)))  # stable: the rest keep their order


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


def llm_lab(*args: str, timeout: float = 300, check: bool = True, store: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`llm-lab ARGS` as a user runs it, in a subprocess; on `store` with one job at a time, when given, instead of
    the session's store; with `env` over the environment."""
    env = {**(os.environ if store is None else {**os.environ, "LAB_CHECKPOINTS": str(store), "LAB_MAX_JOBS": "1", "HF_HUB_OFFLINE": "1"}), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"llm-lab {' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
    return proc


def refused(*argv: str) -> str:
    """`llm-lab train STAGE FLAGS` checked in this process, as the CLI checks it before a job starts: the
    user error it is refused with (its one-line message), after asserting that no run folder was made.
    Cheaper than a subprocess (no torch import per case); one CLI test per kind of error runs it for real."""
    from lab import cli, configs, jobs, runs, stages
    from lab.errors import UserError

    before = set(runs.root().iterdir()) if runs.root().exists() else set()
    args = cli.build_parser(list(argv)).parse_args(list(argv))
    with pytest.raises(UserError) as refusal:
        jobs.create(args.stage, configs.from_args(stages.get(args.stage).Config, args, args.config))
    assert (set(runs.root().iterdir()) if runs.root().exists() else set()) == before, "a run folder was made for a refused config"
    return str(refusal.value)


def wait_for(predicate, timeout: float = 120, what: str = "a condition", shown=None, poll: float = 0.25):
    """Poll `predicate` until it returns something true, and return that. `shown()`, when given, says what
    was there instead, for the failure message."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f"; found {shown()!r}" if shown else ""))


def run_info(store: Path, run_id: str) -> dict:
    return json.loads((store / run_id / "run.json").read_text())


def run_steps(store: Path, run_id: str) -> dict:
    """The steps of a run made of other runs (a lifecycle, an experiment), as its run.json records them."""
    return run_info(store, run_id).get("steps") or {}


def last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.strip().splitlines()[-1]


def read_jsonl(path: Path) -> list[dict]:
    """A JSON-lines file the lab wrote, read as strict JSON: a NaN or Infinity in it fails the test (the run
    store writes a value that is not finite as null)."""
    def refuse(constant):
        raise AssertionError(f"{constant} in {path}")

    return [json.loads(line, parse_constant=refuse) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def nano_run(store) -> Path:
    """A nano causal LM pretrained for 30 steps on the toy world: the parent of later stages' tests."""
    proc = llm_lab("train", "pretrain", "--preset", "nano", "--max-steps", "30", "--logging-steps", "5", "--sample-every", "10", "--eval-every", "15")
    return store / last_line(proc)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(store: Path, log_path: Path, **env: str):
    """`python -m lab app` launched for real on `store`, with `env` on top of this process's; yields its URL."""
    import urllib.request

    port = free_port()
    env = {**os.environ, "LAB_CHECKPOINTS": str(store), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **env}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "lab", "app", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "config", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"the app did not come up on {url}:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def lab_app(store, tmp_path_factory):
    """The Gradio lab launched for real (`python -m lab app`) on the session's run store; yields its URL."""
    with running_app(store, tmp_path_factory.mktemp("app") / "app.log") as url:
        yield url


@pytest.fixture(scope="session")
def nano_sft_run(nano_run, store) -> Path:
    """A nano instruct model: 3 SFT steps on the nano pretrain run (the parent of alignment tests)."""
    proc = llm_lab("train", "sft", "--parent", nano_run.name, "--max-steps", "3", "--batch-size", "4", "--kl-every", "0", "--sample-every", "0")
    return store / last_line(proc)


@pytest.fixture(scope="session")
def nano_dpo_run(nano_sft_run, store, tmp_path_factory) -> Path:
    """A nano aligned model: 2 LoRA DPO steps on the nano SFT run, from 16 of the toy world's pairs given as a
    file (so the run skips the toy world's end-of-run evals), saved as an adapter/ on the SFT model."""
    from lab.world import build_world

    pairs = tmp_path_factory.mktemp("dpo") / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in build_world().preference_pairs()[:16]))
    proc = llm_lab("train", "dpo", "--parent", nano_sft_run.name, "--data", str(pairs), "--mode", "lora", "--max-steps", "2",
               "--batch-size", "4", "--kl-every", "0", "--sample-every", "0")
    return store / last_line(proc)
