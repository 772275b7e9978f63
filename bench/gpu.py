"""The GPU path, measured on whatever device this machine has, through the lab's own commands (`llm-lab train`):

(a) pretraining in bf16 of the `base` preset and of a decoder of about 0.54B parameters built from Qwen2's
    architecture (random weights, no download): tokens/s, and MFU against the device's dense bf16 peak;
(b) SFT of that decoder in full, LoRA, 8-bit LoRA and 4-bit LoRA: tokens/s and peak memory (goal: 8-bit LoRA
    ≤ 0.35× full), each mode against full fine-tuning in the same run;
(c) a DPO step and a PPO rollout batch of it: seconds and peak memory.

    python bench/gpu.py                 # on a GPU: the sizes above
    python bench/gpu.py --smoke         # any machine, tiny sizes: that every row runs (CI runs it on the CPU)

Every cell is its own `llm-lab train` process on the toy world, so its peak memory is its own: on CUDA
`torch.cuda.max_memory_allocated` (the job records it in run.json), on the CPU the process's peak resident
memory. tokens/s is the mean of the logged rows after the first (warm-up). MFU counts 6 FLOPs per parameter and
token (the embeddings' lookup excluded) plus attention's 12 × layers × hidden × sequence, as nanochat does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import lab_run  # bench/lab_run.py: this script's folder is on the path

# Dense bf16 peak FLOP/s by device name (vendors' datasheets, without sparsity).
PEAK_BF16 = {"H200": 989e12, "H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12,
             "L40S": 362e12, "L4": 121e12, "A10G": 125e12, "RTX 4090": 165e12}
# A decoder of Qwen2-0.5B's shape, its vocabulary the toy world's tokenizer's (so ~0.54B of its weights are layers).
HALF_B = dict(hidden_size=1152, intermediate_size=4608, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=4)
SMOKE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def device_name() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)", None
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return name, peak


def train(store: Path, *args: str) -> dict:
    run_id, info, rows = lab_run.train(store, *args)
    speeds = [r["tokens_per_second"] for r in rows if r.get("tokens_per_second")]
    final = info["final_metrics"]
    return {"run": run_id, "path": store / run_id, "tokens_per_second": sum(speeds[1:]) / len(speeds[1:]) if len(speeds) > 1 else (speeds or [None])[0],
            "memory_mb": info.get("cuda_peak_memory_mb") or info.get("peak_memory_mb"), "seconds": final.get("train_runtime"),
            "steps": final.get("steps"), "rows": rows, "device": info.get("device")}


def decoder(folder: Path, tokenizer_dir: Path, shape: dict, seq_len: int) -> int:
    """A Qwen2-shaped decoder with random weights and the toy world's tokenizer, saved to `folder`; its parameter count."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(vocab_size=len(tokenizer), max_position_embeddings=max(seq_len, 512), tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shape)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def flops_per_token(parameters: int, embedding: int, layers: int, hidden: int, seq_len: int) -> float:
    return 6 * (parameters - embedding) + 12 * layers * hidden * seq_len


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and a few steps: that every row runs, on any machine")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps per cell (default: 30, smoke 3)")
    args = parser.parse_args()
    steps = str(args.steps or (3 if args.smoke else 30))
    name, peak = device_name()
    shape, preset = (SMOKE, "nano") if args.smoke else (HALF_B, "base")
    seq_len, batch = (64, 4) if args.smoke else (1024, 8)
    quiet = ("--sample-every", "0", "--no-world-evals", "--save-steps", "0", "--logging-steps", "1" if args.smoke else "5")
    rows: list[tuple[str, str, str, str]] = []  # (what, tokens/s, memory, more)

    def memory(r) -> str:
        return f"{r['memory_mb']:,.0f} MB" if r["memory_mb"] else "-"

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        # (a) pretraining: the preset, then the 0.5B decoder continued from its random weights
        base = train(store, "pretrain", "--preset", preset, "--max-steps", steps, "--batch-size", str(batch), "--seq-len", str(seq_len),
                     "--eval-every", "0", "--precision", "bf16", *quiet)
        half = store / "decoder"
        n = decoder(half, base["path"] / "model", shape, seq_len)
        embedding = shape["hidden_size"] * json.loads((half / "config.json").read_text())["vocab_size"]
        for what, r, params, layers, hidden in (
                (f"pretrain `{preset}`", base, None, None, None),
                (f"pretrain Qwen2-shaped {n / 1e6:,.1f}M", train(store, "pretrain", "--init-from", str(half), "--max-steps", steps, "--batch-size", str(batch),
                                                                 "--seq-len", str(seq_len), "--eval-every", "0", "--precision", "bf16", *quiet), n,
                 shape["num_hidden_layers"], shape["hidden_size"])):
            mfu = "-"
            if peak and params and r["tokens_per_second"]:
                mfu = f"MFU {r['tokens_per_second'] * flops_per_token(params, embedding, layers, hidden, seq_len) / peak:.1%}"
            rows.append((what, f"{r['tokens_per_second']:,.0f}", memory(r), mfu))
        # (b) SFT in each mode, against full fine-tuning
        full = None
        for mode in ("full", "lora", "lora-8bit", "lora-4bit"):
            r = train(store, "sft", "--parent", str(half), "--mode", mode, "--max-steps", steps, "--batch-size", str(batch), "--max-length", str(seq_len),
                      "--kl-every", "0", "--precision", "bf16", *quiet)
            full = full or r
            ratio = f"memory × full {r['memory_mb'] / full['memory_mb']:.2f}" if r["memory_mb"] and full["memory_mb"] else "-"
            rows.append((f"SFT {mode}", f"{r['tokens_per_second']:,.0f}", memory(r), ratio))
        # (c) one DPO step and one PPO rollout batch, each after one of warm-up
        sft = full["run"]
        dpo = train(store, "dpo", "--parent", sft, "--max-steps", "2", "--batch-size", str(batch), "--max-length", str(seq_len),
                    "--kl-every", "0", "--precision", "bf16", *quiet)
        rows.append(("DPO step", "-", memory(dpo), f"{dpo['seconds'] / max(dpo['steps'], 1):.2f} s/step"))
        ppo = train(store, "ppo", "--parent", sft, "--reward", "gold", "--max-steps", "2", "--batch-size", str(batch), "--mini-batch-size", str(batch // 2),
                    "--sample-every", "0", "--no-world-evals", "--save-steps", "0", "--logging-steps", "1")
        last = [x for x in ppo["rows"] if "time/rollout" in x][-1]
        rows.append(("PPO rollout batch", "-", memory(ppo), f"{last['time/rollout'] + last['time/update']:.2f} s (rollout {last['time/rollout']:.2f} s)"))
    print(f"device: {name}{f', dense bf16 peak {peak / 1e12:,.0f} TFLOP/s' if peak else ''}; {steps} steps per cell, batch {batch} × {seq_len} tokens\n")
    print("| what | tokens/s | peak memory | |")
    print("|---|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
