"""PPO: rollout and update throughput (samples/s) and peak memory of the lab's PPO stage, per preset,
against TRL 1.12's PPOTrainer (the last TRL with one) on the same models and settings.

    python bench/ppo_throughput.py                                   # nano and tiny, 6 rollout batches each
    python bench/ppo_throughput.py --presets tiny --steps 8 --threads 2
    python bench/ppo_throughput.py --trl-python /tmp/trl112/bin/python   # the TRL 1.12 comparison rows
    python bench/ppo_throughput.py --profile                          # and where each loop spends a rollout batch

Both loops run with the environment this script is started with; the lab's job sets its own OpenMP spin
(lab/__init__.py). Each loop runs `--repeats` times, the two alternating, and the table gives the medians
(single runs on a shared 2-core VM moved by up to a third, the lab's and TRL's at different moments); the ratio
is that of the medians, printed only when the load average stayed under the number of cores.

TRL 1.12 cannot live in the lab's environment (the lab needs TRL ≥ 1.16), so it runs from its own venv:
    python3 -m venv /tmp/trl112 && /tmp/trl112/bin/pip install torch==2.13.0 trl==1.12.0
and is skipped with a note when that interpreter is missing.

Per preset, a decoder is built from its config (random weights: speed and memory do not depend on them)
with a toy-world tokenizer and saved as the policy's parent; the reward model (and so the critic) is the
same backbone with a fresh one-output head. Each run is its own process, so peak resident memory is its
own. Random weights never close their turn: every answer is `response_length` tokens, in both loops.
- lab: `llm-lab train ppo` on the toy world's prompts; rollout samples/s = batch / time of sampling, scoring
  and the log-prob/value passes; update samples/s = batch / time of the PPO epochs; from the logged
  `time/rollout` and `time/update` of every rollout batch after the first (warm-up); whole-step samples/s
  from the time between its step logs, as for TRL.
- TRL 1.12: `trl.experimental.ppo.PPOTrainer`, one optimizer step per mini-batch as the lab does
  (per_device_train_batch_size = batch, num_mini_batches = batch / mini_batch), no gradient checkpointing,
  fp32 on CPU; whole-step samples/s from the time between its step ends, after the first.
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
import textwrap
from pathlib import Path

TRL_112 = textwrap.dedent('''
    import json, sys, time, torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    parent, reward, prompts_file, out = sys.argv[1:5]
    steps, batch, mini, epochs, length, threads, stop_id = map(int, sys.argv[5:12])
    if threads:
        torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(parent, padding_side="left")
    prompts = json.loads(open(prompts_file).read())
    ids = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"] for p in prompts]
    data = Dataset.from_dict({"input_ids": ids})
    args = PPOConfig(output_dir=out, per_device_train_batch_size=batch, gradient_accumulation_steps=1, num_mini_batches=batch // mini,
                     num_ppo_epochs=epochs, response_length=length, temperature=0.7, kl_coef=0.05, learning_rate=3e-5,
                     total_episodes=steps * batch, local_rollout_forward_batch_size=batch, stop_token_id=stop_id,
                     num_sample_generations=0, gradient_checkpointing=False, bf16=False, use_cpu=True, report_to="none",
                     save_strategy="no", logging_steps=1, seed=0, disable_tqdm=True)
    times = []
    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            times.append(time.time())
    trainer = PPOTrainer(args=args, processing_class=tok, model=AutoModelForCausalLM.from_pretrained(parent),
                         ref_model=AutoModelForCausalLM.from_pretrained(parent),
                         reward_model=AutoModelForSequenceClassification.from_pretrained(reward, num_labels=1),
                         value_model=AutoModelForSequenceClassification.from_pretrained(reward, num_labels=1),
                         train_dataset=data, eval_dataset=data.select(range(batch)), callbacks=[Clock()])
    trainer.train()
    print(json.dumps({"step_times": [b - a for a, b in zip(times, times[1:])]}))
''')

# `--profile`: run before either loop, in its process. It times the phases of a rollout batch where both loops
# call the same library code: generate (sampling), the decoder forwards without gradients (the reference's
# log-probs, the critic's values and the reward model's scores), the forwards with them and the backward passes
# (the PPO epochs'; one phase, as the lab runs the policy's beside the critic's), the optimizer's steps, and
# explicit garbage collections (TRL's loop calls gc.collect() twice a batch); what is left of a batch is each loop's own Python and tensor math.
# A nested call counts in the outer one (generate's own forwards are sampling). The window runs from the second
# generate call to the last, so it holds whole batches after the first (warm-up) and none of the model's saving.
PROFILE = textwrap.dedent('''
    import atexit, json, os, sys, time
    if os.environ.get("PPO_PROFILE_LAB"):  # the lab's job: lab/__init__ must see `train` first, before torch loads
        sys.argv = ["lab", *sys.argv[1:]]
        import lab  # noqa: F401
    import torch, transformers
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
    from transformers.models.llama import modeling_llama
    totals, marks, inside = {}, [], []
    def timed(phase_of, fn):
        def wrapper(*args, **kwargs):
            if inside:
                return fn(*args, **kwargs)
            inside.append(phase_of())
            if inside[0] == "sampling (generate)":
                marks.append((time.perf_counter(), dict(totals)))
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[inside[0]] = totals.get(inside[0], 0.0) + time.perf_counter() - t0
                inside.clear()
        return wrapper
    transformers.GenerationMixin.generate = timed(lambda: "sampling (generate)", transformers.GenerationMixin.generate)
    UPDATES = "PPO epochs: forwards and backward"
    def forwards():
        return UPDATES if torch.is_grad_enabled() else "reference, values, scores: forwards"
    for cls in (modeling_llama.LlamaModel, modeling_llama.LlamaForCausalLM):
        cls.forward = timed(forwards, cls.forward)
    torch.Tensor.backward = timed(lambda: UPDATES, torch.Tensor.backward)
    import gc
    gc.collect = timed(lambda: "garbage collection (gc.collect)", gc.collect)
    if os.environ.get("PPO_PROFILE_LAB"):  # its policy's and critic's passes run side by side, in two threads: timed as one
        from lab.stages import ppo
        ppo.side_by_side = timed(lambda: UPDATES, ppo.side_by_side)
    started = []
    register_optimizer_step_pre_hook(lambda *a: started.append(time.perf_counter()))
    def stepped(*a):
        totals["PPO epochs: optimizer steps"] = totals.get("PPO epochs: optimizer steps", 0.0) + time.perf_counter() - started.pop()
    register_optimizer_step_post_hook(stepped)
    def report():
        (t0, a), (t1, b) = marks[1], marks[-1]
        phases = {k: (b.get(k, 0.0) - a.get(k, 0.0)) / (len(marks) - 2) for k in b}
        phases["own Python and tensor math"] = (t1 - t0) / (len(marks) - 2) - sum(phases.values())
        with open(os.environ["PPO_PROFILE_OUT"], "w") as f:
            json.dump(phases, f)
    atexit.register(report)
''')

# Runs a command and reports its peak resident memory: each run measured in a process of its own.
PEAK = "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"


def measured(cmd: list[str], env: dict) -> tuple[str, float]:
    proc = subprocess.run([sys.executable, "-c", PEAK, *cmd], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    peak_kb = int(proc.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    return proc.stdout, peak_kb / 1024


def build(preset: str, work: Path, tokenizer) -> tuple[Path, Path, int]:
    """A random-weight parent of the preset and a reward model on the same backbone."""
    from transformers import AutoModelForSequenceClassification

    from lab.models import build_from_scratch, count_parameters

    parent, reward = work / f"{preset}-parent", work / f"{preset}-reward"
    model = build_from_scratch(preset, "clm", tokenizer, 256)
    n_params = count_parameters(model)
    model.save_pretrained(parent)
    tokenizer.save_pretrained(parent)
    rm = AutoModelForSequenceClassification.from_pretrained(parent, num_labels=1)
    rm.config.pad_token_id = tokenizer.pad_token_id
    rm.save_pretrained(reward)
    tokenizer.save_pretrained(reward)
    return parent, reward, n_params


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="nano,tiny")
    ap.add_argument("--steps", type=int, default=6, help="rollout batches per run (the first is warm-up)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--mini-batch-size", type=int, default=4)
    ap.add_argument("--ppo-epochs", type=int, default=4)
    ap.add_argument("--response-length", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in every run (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each loop, alternating; the table gives medians (and the range)")
    ap.add_argument("--profile", action="store_true", help="also time each loop's phases (see PROFILE) and print where a batch goes")
    ap.add_argument("--trl-python", default="/tmp/trl112/bin/python", help="an interpreter with trl==1.12.0 (empty: skip)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lab-ppo-bench-"))
    env = {**os.environ, "LAB_CHECKPOINTS": str(work / "checkpoints"), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}

    from lab.models import PRESETS
    from lab.stages import prompt_set, text_splits
    from lab.tokenizers import end_of_turn_id, train_tokenizer

    texts = [p[-1]["content"] for p in prompt_set("world")]
    prompts_file = work / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": t, "completion": "."}) + "\n" for t in texts))
    (work / "prompts.json").write_text(json.dumps(texts))
    train, _ = text_splits("world")
    tokenizers = {}
    trl_python = args.trl_python if args.trl_python and Path(args.trl_python).exists() else None
    b = args.batch_size
    notes = []
    # per preset and loop, one entry per repeat: (peak MiB, rollout samples/s, update samples/s, samples/s, phases)
    measures: dict[tuple[str, str], list] = {}
    params = {}
    for preset in args.presets.split(","):
        vocab = PRESETS[preset].vocab
        tokenizer = tokenizers.setdefault(vocab, train_tokenizer(train, vocab_size=vocab))
        parent, reward, params[preset] = build(preset, work, tokenizer)

        def lab(repeat: int):
            lab_python = [sys.executable, "-c", PROFILE + "import runpy; runpy.run_module('lab', run_name='__main__')"] if args.profile else [sys.executable, "-m", "lab"]
            cmd = [*lab_python, "train", "ppo", "--parent", str(parent), "--reward", str(reward), "--data", str(prompts_file),
                   "--max-steps", str(args.steps), "--batch-size", str(b), "--mini-batch-size", str(args.mini_batch_size),
                   "--ppo-epochs", str(args.ppo_epochs), "--response-length", str(args.response_length), "--logging-steps", "1",
                   "--sample-every", "0", "--threads", str(args.threads)]
            profile = work / f"profile-lab-{preset}-{repeat}.json"
            out, peak = measured(cmd, {**env, "PPO_PROFILE_LAB": "1", "PPO_PROFILE_OUT": str(profile)})
            run_dir = work / "checkpoints" / out.strip().splitlines()[-1]
            rows = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "time/rollout" in r]
            rollout = sum(r["time/rollout"] for r in rows[1:]) / len(rows[1:])
            update = sum(r["time/update"] for r in rows[1:]) / len(rows[1:])
            # whole steps timed as TRL's are: from one step's end (its log) to the next
            total = b * (len(rows) - 1) / (rows[-1]["time"] - rows[0]["time"])
            return peak, b / rollout, b / update, total, json.loads(profile.read_text()) if args.profile else None

        def trl(repeat: int):
            profile = work / f"profile-trl-{preset}-{repeat}.json"
            out, peak = measured([trl_python, "-c", (PROFILE if args.profile else "") + TRL_112, str(parent), str(reward), str(work / "prompts.json"),
                                  str(work / f"trl-{preset}"), str(args.steps), str(b), str(args.mini_batch_size), str(args.ppo_epochs),
                                  str(args.response_length), str(args.threads), str(end_of_turn_id(tokenizer))], {**env, "PPO_PROFILE_OUT": str(profile)})
            times = json.loads(out.strip().splitlines()[-1])["step_times"][1:]
            return peak, None, None, b / (sum(times) / len(times)), json.loads(profile.read_text()) if args.profile else None

        loops = [("lab ppo (full)", lab)] + ([("TRL 1.12 PPOTrainer", trl)] if trl_python else [])
        for repeat in range(args.repeats):
            # the order alternates, so that a drift of the machine's speed during the runs falls on both loops alike
            for name, loop in loops[::-1] if repeat % 2 else loops:
                measures.setdefault((preset, name), []).append(loop(repeat))
    if not trl_python:
        notes.append(f"TRL 1.12 rows skipped: no interpreter at {args.trl_python!r} (see the docstring to make one)")

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU {platform.machine()}, {os.cpu_count()} cores"
    print(f"device: {device}; torch {torch.__version__}; threads: {args.threads or torch.get_num_threads()}; load average at the end: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"batch {b} prompts, mini-batch {args.mini_batch_size}, {args.ppo_epochs} PPO epochs, answers of {args.response_length} tokens, "
          f"{args.steps} rollout batches (the first is warm-up); random weights, fp32")
    print(f"medians of {args.repeats} runs of each loop, alternating; peak RSS: the largest")
    print("| preset (params) | run | peak RSS (MiB) | rollout samples/s | update samples/s | samples/s (range) | lab / TRL |")
    print("|---|---|---:|---:|---:|---:|---:|")
    fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    busy = max(os.getloadavg()[:2]) > (os.cpu_count() or 1)
    if busy:  # the two loops then ran on cores shared with someone else, each to its own degree
        notes.append(f"no ratio: the load average ({' '.join(f'{x:.1f}' for x in os.getloadavg())}) was above the {os.cpu_count()} cores, "
                     "so other processes shared the cores with these runs; rerun on a quiet machine")
    median = statistics.median
    for (preset, name), runs in measures.items():
        total = median(r[3] for r in runs)
        lab_total = median(r[3] for r in measures[(preset, "lab ppo (full)")])
        ratio = None if busy or name == "lab ppo (full)" else lab_total / total
        rollout, update = (None, None) if runs[0][1] is None else (median(r[1] for r in runs), median(r[2] for r in runs))
        spread = f" ({min(r[3] for r in runs):.2f}-{max(r[3] for r in runs):.2f})" if len(runs) > 1 else ""
        print(f"| {preset} ({params[preset] / 1e6:.2f}M) | {name} | {max(r[0] for r in runs):,.0f} | {fmt(rollout, '.2f')} | {fmt(update, '.2f')} | "
              f"{total:.2f}{spread} | {fmt(ratio, '.2f')} |")
    for note in notes:
        print(note)
    for preset in dict.fromkeys(p for p, _ in measures):
        loops = [(name, runs) for (p, name), runs in measures.items() if p == preset and runs[0][4] is not None]
        if not loops:
            continue
        # each phase's median over the repeats
        phases = [(name, {k: median(r[4].get(k, 0.0) for r in runs) for k in runs[0][4]}) for name, runs in loops]
        print(f"\n{preset}: seconds per rollout batch, by phase (medians over {args.repeats} runs of each loop)")
        print("| phase | " + " | ".join(name for name, _ in phases) + " |")
        print("|---|" + "---:|" * len(phases))
        for phase in dict.fromkeys(k for _, ph in phases for k in ph):
            print(f"| {phase} | " + " | ".join(f"{ph.get(phase, 0.0):.3f}" for _, ph in phases) + " |")
        print("| whole batch | " + " | ".join(f"{sum(ph.values()):.3f}" for _, ph in phases) + " |")

if __name__ == "__main__":
    main()
