"""Faults injected into real nano jobs, and the invariants checked after each (issue 18).

    python bench/faults.py [--faults 50] [--seed 0]

Each round queues a nano pretrain job (the real `python -m lab train` subprocess, through `jobs.submit`, in a
scratch run store; 30 steps, a checkpoint every 5) and injects one fault, drawn at random:
  stop       `jobs.stop` (SIGTERM, SIGKILL after its grace) at a random moment after submit: queued, starting,
             importing, training its tokenizer, training, saving
  kill       SIGKILL of the job's process at a random moment (what the kernel's OOM killer does)
  save-kill  SIGKILL the moment the job starts writing its model (its `.model.partial` folder appears)
  ckpt-kill  SIGKILL while the job writes one of its checkpoints, drawn at random (a `trainer/checkpoint-N` not
             yet marked whole): the one before it must stay whole and resumable
then checks, once the store has been listed (which is when a dead job is found):
  final      the run is in a final status (completed, stopped, failed) within 120 s, never left active
  stop       a stopped job never reads failed
  error      a failed run says why
  leftovers  no `.NAME.partial` or `.NAME.old` in the run's folder, no half-written checkpoint, and no
             checkpoint at all once completed
  metrics    metrics.jsonl is strict JSON (no NaN, no half line)
  model      a run that reads completed has a whole model (config.json and model.safetensors)
and, for a run that stopped or failed with a checkpoint, resumes it (`jobs.resume`, in place) and checks:
  resumed    it completes
  continuous its loss rows are logged at each logging step exactly once, 1 to 30 (and at the step of a stop)
  exact      its final weights, and its losses after the first row past the checkpoint, are those of an
             uninterrupted run of the same config (to 1e-6: the CPU is deterministic; that first row averages
             only the steps since the checkpoint, as the Trainer starts its loss window again at a resume)
It prints the faults injected by kind, the invariants checked, and each violation.
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


def losses(run) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(strict, (run.path / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def max_weight_difference(a, b) -> float:
    from safetensors.torch import load_file

    wa, wb = (load_file(r.path / "model" / "model.safetensors") for r in (a, b))
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def half_written(run) -> list:
    """Checkpoint folders not (yet) marked whole."""
    from lab import runs

    return [p for p in (run.path / "trainer").glob("checkpoint-*") if not (p / runs.COMPLETE).exists()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=14.0, help="latest moment of a stop or a kill, in seconds after submit")
    args = parser.parse_args()

    os.environ["LAB_CHECKPOINTS"] = tempfile.mkdtemp(prefix="lab-faults-")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from lab import jobs, runs, stages

    config = stages.get("pretrain").Config(preset="nano", max_steps=30, batch_size=8, logging_steps=2, save_steps=5, eval_every=0, sample_every=0,
                                           world_evals=False)
    reference = jobs.submit("pretrain", config)
    assert jobs.wait(reference, timeout=300) == "completed", reference.info.get("error")
    expected = losses(reference)
    rng = random.Random(args.seed)
    injected, checked, outcomes = Counter(), Counter(), Counter()
    violations: list[str] = []
    started = time.time()
    for i in range(args.faults):
        kind = rng.choice(["stop", "kill", "save-kill", "ckpt-kill"])
        run = jobs.submit("pretrain", config)
        if kind == "ckpt-kill":  # in the middle of one of its checkpoints after the first, drawn at random
            after = rng.choice(range(0, config.max_steps - config.save_steps, config.save_steps))  # none at the last step
            deadline = time.time() + 120
            while time.time() < deadline and not [p for p in half_written(run) if int(p.name.split("-")[1]) > after] and run.info["status"] in runs.ACTIVE:
                time.sleep(0.002)
            pid = run.info.get("pid")
            if half_written(run) and pid:
                os.kill(pid, signal.SIGKILL)
            else:
                kind = "ckpt-kill (missed: no checkpoint being written)"
        elif kind == "save-kill":
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
        left = [p.name for p in run.path.iterdir() if p.name.endswith((".partial", ".old"))] + [f"trainer/{p.name}" for p in half_written(run)]
        if status == "completed" and (run.path / "trainer").exists():
            left.append("trainer/ of a completed run")
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
        resumed = ""
        if status in ("stopped", "failed") and run.last_checkpoint():
            step = run.last_checkpoint()[0]
            jobs.resume(run)
            final = jobs.wait(run, timeout=300)
            check("resumed", final == "completed", f"resumed from step {step}: {final} ({run.info.get('error')})")
            got = losses(run)
            steps, want = [s for s, _ in got], dict(expected)
            # The stop's own row (a partial logging window) may add the step it stopped at, and nothing else.
            check("continuous", steps == sorted(set(steps)) and set(want) <= set(steps) and set(steps) - set(want) <= {step},
                  f"steps {steps} (resumed from {step})")
            # The first row after the checkpoint averages only the steps since it (the Trainer's loss window starts
            # again at a resume); every later row, and the weights, are the uninterrupted run's.
            later = [(s, v) for s, v in got if s > min((t for t in want if t > step), default=step) and s in want]
            check("exact", all(abs(v - want[s]) <= 1e-6 for s, v in later) and max_weight_difference(run, reference) <= 1e-6,
                  f"losses {got} against {expected}; weights differ by {max_weight_difference(run, reference):.3g}")
            outcomes[f"{status}, resumed from a checkpoint → {final}"] += 1
            resumed = f"; resumed from step {step} → {final}"
        print(f"round {i + 1}/{args.faults}: {kind} → {status}{resumed}", flush=True)

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
