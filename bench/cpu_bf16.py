"""bf16 autocast against fp32 on the CPU, for pretraining and SFT: tokens/s and the loss reached in the same
steps, with the ratio of each against fp32 measured in the same run. What `precision auto` picks on a CPU is
set from these figures (lab.models.use_bf16).

    python bench/cpu_bf16.py                         # tiny and small, pretrain and SFT
    python bench/cpu_bf16.py --presets tiny --steps 20

Each cell is `llm-lab train` in its own process, on the toy world, with its evaluations and samples off;
tokens/s is the mean of the logged rows after the first (warm-up). The SFT runs start from the fp32 pretrain
run of the same preset. CPUs without AVX512-BF16 or AMX run bf16 in emulation: the table says which this one has.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import lab_run  # bench/lab_run.py: this script's folder is on the path


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    return ", ".join(f for f in ("avx512_bf16", "amx_bf16") if f in flags) or "neither AVX512-BF16 nor AMX"


def train(store: Path, *args: str) -> dict:
    run_id, info, rows = lab_run.train(store, *args)
    trained = [r for r in rows if "loss" in r and r.get("tokens_per_second")]
    speeds = [r["tokens_per_second"] for r in trained[1:]] or [r["tokens_per_second"] for r in trained]
    return {"run": run_id, "tokens_per_second": sum(speeds) / len(speeds), "loss": trained[-1]["loss"],
            "parameters": info["final_metrics"].get("trainable_parameters")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps per cell (default: %(default)s)")
    args = parser.parse_args()
    quiet = ("--sample-every", "0", "--no-world-evals", "--save-steps", "0")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        for preset in args.presets:
            base = {}
            for precision in ("fp32", "bf16"):
                base[precision] = train(store, "pretrain", "--preset", preset, "--max-steps", str(args.steps), "--logging-steps", "4",
                                        "--eval-every", "0", "--precision", precision, *quiet)
                rows.append(("pretrain", preset, precision, base[precision]))
            for precision in ("fp32", "bf16"):
                sft = train(store, "sft", "--parent", base["fp32"]["run"], "--max-steps", str(args.steps), "--logging-steps", "4",
                            "--kl-every", "0", "--precision", precision, *quiet)
                rows.append(("sft", preset, precision, sft))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {cpu_flags()}; {args.steps} steps per cell\n")
    print("| stage | preset | parameters | precision | tokens/s | × fp32 | loss at the end |")
    print("|---|---|---:|---|---:|---:|---:|")
    for stage, preset, precision, r in rows:
        ref = next(x for s, p, q, x in rows if (s, p, q) == (stage, preset, "fp32"))
        print(f"| {stage} | {preset} | {r['parameters'] or 0:,} | {precision} | {r['tokens_per_second']:,.0f} | "
              f"{r['tokens_per_second'] / ref['tokens_per_second']:.2f} | {r['loss']:.3f} |")


if __name__ == "__main__":
    main()
