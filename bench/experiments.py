"""Every experiment at one scale, one after the other in one store: the wall time of each (the first trains the
shared base; later ones reuse it, as on a user's machine), the runs it trained and reused, and its conclusion.

    python bench/experiments.py                       # the default scale, every experiment
    python bench/experiments.py --scale nano
    python bench/experiments.py --only kl-zero,dpo-vs-ppo --store /tmp/store   # some of them, in a store you keep

Prints a markdown table and each conclusion, and writes them (with every measured value) to --out.
The load average at the start and at the end is printed: on a busy machine the times are not the lab's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab import experiments  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default="default", choices=("nano", "default"))
    ap.add_argument("--only", default="", help="comma-separated experiment names (default: all, in the registry's order)")
    ap.add_argument("--store", default="", help="the run store to use (default: a fresh temporary one)")
    ap.add_argument("--out", default="experiments-bench.json")
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(experiments.names())
    store = Path(args.store or tempfile.mkdtemp(prefix="lab-experiments-"))
    env = {**os.environ, "LAB_CHECKPOINTS": str(store), "HF_HUB_OFFLINE": "1"}
    print(f"store {store}; load average at the start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    rows = []
    for name in names:
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "lab", "experiment", name, "--scale", args.scale], capture_output=True, text=True, env=env)
        wall = time.time() - t0
        if proc.returncode != 0:
            print(f"{name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            rows.append({"name": name, "wall_seconds": wall, "failed": True})
            continue
        rid = proc.stdout.strip().splitlines()[-1]
        info = json.loads((store / rid / "run.json").read_text())
        result = json.loads((store / rid / "result.json").read_text())
        steps = info.get("steps") or {}
        trained = [s for s, v in steps.items() if s != "measure" and not v.get("shared")]
        reused = [s for s, v in steps.items() if v.get("shared")]
        measure = steps.get("measure", {})
        rows.append({"name": name, "run": rid, "wall_seconds": wall, "trained": trained, "reused": reused,
                     "measure_seconds": (measure.get("ended") or 0) - (measure.get("started") or 0), "conclusion": result["conclusion"],
                     "measured": result["measured"]})
        print(f"{name}: {wall:.0f} s", flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}\n")
    print("| experiment | wall time | runs trained | runs reused | measuring |\n|---|---:|---|---|---:|")
    for r in rows:
        if r.get("failed"):
            print(f"| {r['name']} | {r['wall_seconds']:.0f} s | failed | | |")
            continue
        print(f"| {r['name']} | {r['wall_seconds'] / 60:.1f} min | {', '.join(r['trained']) or '–'} | {', '.join(r['reused']) or '–'} | {r['measure_seconds']:.0f} s |")
    print()
    for r in rows:
        if not r.get("failed"):
            print(f"**{r['name']}**: {r['conclusion']}\n")
    Path(args.out).write_text(json.dumps({"scale": args.scale, "store": str(store), "rows": rows}, indent=2, default=float) + "\n")
    return 0 if not any(r.get("failed") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
