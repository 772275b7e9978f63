"""Faults injected into real nano jobs, and the invariants checked after each (issue 18).

    python bench/faults.py [--faults 50] [--seed 0]

Each round queues a nano pretrain job (the real `python -m lab train` subprocess, through `jobs.submit`, in a
scratch run store) and injects one fault, drawn at random:
  stop       `jobs.stop` (SIGTERM, SIGKILL after its grace) at a random moment after submit: queued, starting,
             importing, training its tokenizer, training, saving
  kill       SIGKILL of the job's process at a random moment (what the kernel's OOM killer does)
  save-kill  SIGKILL the moment the job starts writing its model (its `.model.partial` folder appears)
then checks, once the store has been listed (which is when a dead job is found):
  final      the run is in a final status (completed, stopped, failed) within 120 s, never left active
  stop       a stopped job never reads failed
  error      a failed run says why
  leftovers  no `.NAME.partial`, `.NAME.old` or `trainer/` in the run's folder
  metrics    metrics.jsonl is strict JSON (no NaN, no half line)
  model      a run that reads completed has a whole model (config.json and model.safetensors)
It prints the faults injected by kind, the invariants checked, and each violation. Resume continuity is not
checked: resume starts a new run from the saved model (the exact resume is issue 18's part 3, not built).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import tempfile
import time
from collections import Counter


def strict(line: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=14.0, help="latest moment of a stop or a kill, in seconds after submit")
    args = parser.parse_args()

    os.environ["LAB_CHECKPOINTS"] = tempfile.mkdtemp(prefix="lab-faults-")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from lab import jobs, runs, stages

    config = stages.get("pretrain").Config(preset="nano", max_steps=30, batch_size=8, logging_steps=2, eval_every=0, sample_every=0, world_evals=False)
    rng = random.Random(args.seed)
    injected, checked, outcomes = Counter(), Counter(), Counter()
    violations: list[str] = []
    started = time.time()
    for i in range(args.faults):
        kind = rng.choice(["stop", "kill", "save-kill"])
        run = jobs.submit("pretrain", config)
        if kind == "save-kill":
            deadline = time.time() + 120
            while time.time() < deadline and not (run.path / ".model.partial").exists() and run.info["status"] in runs.ACTIVE:
                time.sleep(0.005)
            pid = run.info.get("pid")
            if (run.path / ".model.partial").exists() and pid:
                os.kill(pid, signal.SIGKILL)
            else:
                kind = "save-kill (missed: the save was over)"
        else:
            time.sleep(rng.uniform(0, args.max_delay))
            if kind == "stop":
                jobs.stop(run, grace=30, wait=False)
            else:
                pid = run.info.get("pid")
                if pid and run.alive():
                    os.kill(pid, signal.SIGKILL)
                else:
                    kind = "kill (missed: no process)"
        injected[kind] += 1

        deadline = time.time() + 120
        while time.time() < deadline:
            jobs.reap()
            if run.status not in runs.ACTIVE:
                break
            time.sleep(0.2)
        [runs.summary(r) for r in runs.list_runs()]  # a listing: what finds a dead job and clears its leftovers
        info, status = run.info, run.status
        outcomes[f"{kind} → {status}"] += 1

        def check(name: str, ok: bool, why: str) -> None:
            checked[name] += 1
            if not ok:
                violations.append(f"round {i} ({kind}, run {run.id}): {name}: {why}")

        check("final", status in ("completed", "stopped", "failed"), f"status {status} 120 s after the fault")
        if kind == "stop":
            check("stop", status != "failed", f"failed after a stop: {info.get('error')}")
        if status == "failed":
            check("error", bool(info.get("error")), "failed with no error")
        left = [p.name for p in run.path.iterdir() if p.name.endswith((".partial", ".old")) or p.name == "trainer"]
        check("leftovers", not left, f"left {left}")
        try:
            lines = (run.path / "metrics.jsonl").read_text().splitlines() if (run.path / "metrics.jsonl").exists() else []
            [strict(line) for line in lines]
            check("metrics", True, "")
        except ValueError as e:
            check("metrics", False, str(e))
        if status == "completed":
            model = run.path / "model"
            check("model", (model / "config.json").exists() and (model / "model.safetensors").exists(), "completed without a whole model")
        jobs.wait(run, timeout=60)
        print(f"round {i + 1}/{args.faults}: {kind} → {status}", flush=True)

    minutes = (time.time() - started) / 60
    print(f"\n{sum(injected.values())} faults injected in {minutes:.1f} min; {sum(checked.values())} invariants checked; {len(violations)} violations")
    print("| fault | injected |\n|---|---:|")
    for kind, n in sorted(injected.items()):
        print(f"| {kind} | {n} |")
    print("\n| fault → status | runs |\n|---|---:|")
    for outcome, n in sorted(outcomes.items()):
        print(f"| {outcome} | {n} |")
    print("\n| invariant | checked |\n|---|---:|")
    for name, n in sorted(checked.items()):
        print(f"| {name} | {n} |")
    for v in violations:
        print("VIOLATION", v)
    return 1 if violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
