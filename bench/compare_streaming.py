"""Compare page: what streaming three models side by side costs each of them. Time to first token and
tokens/s per pane when three models answer at once (`lab.inference.compare` with three models, as the
Compare page runs them), against each model answering alone (the reference), with the same prompt, sampling
settings and seed, measured in the same process.

    python bench/compare_streaming.py                          # builds a nano lifecycle in a scratch run store
    python bench/compare_streaming.py --preset tiny --repeats 7
    python bench/compare_streaming.py --models BASE_RUN SFT_RUN DPO_RUN   # runs of ./checkpoints (or LAB_CHECKPOINTS), or folders

Without --models the bench builds a small lifecycle with the lab's own commands, as subprocesses:
`python -m lab train pretrain --preset P --max-steps N`, then `train sft` on it, then `train dpo --mode lora`
on that (16 of the toy world's preference pairs, given as a file), in a scratch run store: base → instruct →
aligned, the aligned one a LoRA adapter that the inference cache merges into its base on loading.

All models are loaded (and generate once, unmeasured) before timing. Each repeat then runs every model
alone, one after another, and the three side by side, in an order that alternates between repeats. A seed
gives the same answer alone and side by side, so each pane writes the same tokens in both settings (the
bench checks). Per pane, from the pane's own result (what the page shows under each answer): TTFT = from
the start of its `generate` to its first new token (prefill included); tokens/s = tokens / seconds of its
whole `generate`. The last table row is the whole round: the three answers one after another (the sum of
the alone rounds' wall times) against side by side (the wall time of one `compare` call, until its last
pane is done).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def lab(env: dict, *args: str) -> str:
    """Runs `python -m lab ARGS` and returns the last line it printed (a train command's run id)."""
    proc = subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"python -m lab {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def build_lifecycle(preset: str, steps: int, sft_steps: int, work: Path) -> list[str]:
    """base → instruct → aligned, trained by the lab's CLI in the run store LAB_CHECKPOINTS points at."""
    from lab.world import build_world

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    pretrain = lab(env, "train", "pretrain", "--preset", preset, "--max-steps", str(steps), "--logging-steps", "10", "--sample-every", "0",
                   "--eval-every", "0")
    sft = lab(env, "train", "sft", "--parent", pretrain, "--max-steps", str(sft_steps), "--batch-size", "4", "--kl-every", "0", "--sample-every", "0")
    pairs = work / "pairs.jsonl"  # a file rather than `world`: the run then skips the toy world's end-of-run evals
    pairs.write_text("".join(json.dumps(p) + "\n" for p in build_world().preference_pairs()[:16]))
    dpo = lab(env, "train", "dpo", "--parent", sft, "--data", str(pairs), "--mode", "lora", "--max-steps", "2", "--batch-size", "4",
              "--kl-every", "0", "--sample-every", "0")
    print(f"built {pretrain} (pretrain, {preset}, {steps} steps) → {sft} (sft, {sft_steps} steps) → {dpo} (dpo, LoRA, 2 steps) "
          f"in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return [pretrain, sft, dpo]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", metavar="MODEL", help="2-4 runs or model folders (default: build a lifecycle)")
    parser.add_argument("--preset", default="nano", help="the built lifecycle's model size (nano, tiny, ...)")
    parser.add_argument("--pretrain-steps", type=int, default=30, help="the built base model's pretraining steps")
    parser.add_argument("--sft-steps", type=int, default=10, help="the built instruct model's SFT steps")
    parser.add_argument("--prompt", default="", help="default: the toy world's first fact question")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (each: every model alone, and all side by side)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", default="auto", choices=["auto", "chat", "raw"])
    parser.add_argument("--device", default="auto", help="auto (a free GPU, else the CPU), cpu, cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lab-compare-bench-"))
    if not args.models:
        os.environ["LAB_CHECKPOINTS"] = str(work / "checkpoints")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from lab import inference

    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models or build_lifecycle(args.preset, args.pretrain_steps, args.sft_steps, work)
    if not 2 <= len(models) <= inference.MAX_PANES:
        sys.exit(f"--models: give 2 to {inference.MAX_PANES} models")
    if args.prompt:
        prompt = args.prompt
    else:
        from lab.world import build_world

        prompt = build_world().facts[0].question
    settings = inference.Settings(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed)
    cache = inference.ModelCache()
    load_average_before = os.getloadavg()

    def round_of(refs: list[str]) -> tuple[float, list[dict]]:
        start = time.perf_counter()
        panes = inference.complete(refs, prompt, settings=settings, mode=args.mode, device=args.device, cache=cache)
        return time.perf_counter() - start, panes

    round_of(models)  # loads every model into the cache, and warms up each one's first generate
    for m in models:
        round_of([m])

    alone: dict[str, list[dict]] = {m: [] for m in models}
    together: dict[str, list[dict]] = {m: [] for m in models}
    alone_walls, together_walls = [], []
    for r in range(args.repeats):
        def run_alone():
            wall = 0.0
            for m in models:
                seconds, (pane,) = round_of([m])
                alone[m].append(pane)
                wall += seconds
            alone_walls.append(wall)

        def run_together():
            seconds, panes = round_of(models)
            together_walls.append(seconds)
            for m, pane in zip(models, panes):
                together[m].append(pane)

        for step in ((run_alone, run_together) if r % 2 == 0 else (run_together, run_alone)):
            step()

    p50 = statistics.median
    notes = []
    device = alone[models[0]][0]["device"]
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable); device {device}"
          + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else "")
          + f"; torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {torch.get_num_interop_threads()} inter-op; "
          f"load average before {load_average_before[0]:.1f}, after {os.getloadavg()[0]:.1f}")
    print(f"prompt {prompt!r}; temperature {settings.temperature}, top-p {settings.top_p}, max {settings.max_new_tokens} new tokens, seed "
          f"{settings.seed}, mode {args.mode}; {args.repeats} repeats, p50s")
    print()
    print(f"| model | stage, mode | tokens | TTFT alone (ms) | TTFT {len(models)} at once (ms) | ratio | tokens/s alone | tokens/s {len(models)} at once | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for m in models:
        a, t = alone[m], together[m]
        if [p["answer"] for p in a] != [p["answer"] for p in t]:
            notes.append(f"{m}: its answers alone and side by side differ (the seed should make them the same)")
        tokens = sorted({p["tokens"] for p in a + t})
        ttft_a, ttft_t = p50([p["ttft"] for p in a]) * 1000, p50([p["ttft"] for p in t]) * 1000
        tps_a, tps_t = p50([p["tokens_per_second"] for p in a]), p50([p["tokens_per_second"] for p in t])
        print(f"| `{m}` | {a[0]['stage'] or 'folder'}, {a[0]['mode']} | {'/'.join(map(str, tokens))} | {ttft_a:.1f} | {ttft_t:.1f} | "
              f"{ttft_t / ttft_a:.2f} | {tps_a:.1f} | {tps_t:.1f} | **{tps_t / tps_a:.2f}** |")
    wall_a, wall_t = p50(alone_walls), p50(together_walls)
    total = sum(p50([p["tokens"] for p in alone[m]]) for m in models)
    print(f"| the round: {len(models)} answers | one after another vs side by side | {total:.0f} | | | | "
          f"{total / wall_a:.1f} (in {wall_a:.2f} s) | {total / wall_t:.1f} (in {wall_t:.2f} s) | **{wall_a / wall_t:.2f}** |")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
