"""The lifecycle's stages. Each module exposes a `Config` dataclass (the single source of the CLI
flags, the UI form and run.json), `run(config, run) -> final metrics`, and `parent_of(config)`, the run
it builds on."""

from __future__ import annotations

import importlib
import json
import random

from lab.errors import UserError

STAGES = ("tokenizer", "pretrain", "sft", "reward", "ppo", "dpo", "grpo")


def get(stage: str):
    if stage not in STAGES:
        raise UserError(f"unknown stage '{stage}': choose one of {', '.join(STAGES)}")
    return importlib.import_module(f"lab.stages.{stage}")


def world_of(source: str):
    """The toy world a data source names ("world", or "world:SEED"), or None for user data."""
    if source != "world" and not source.startswith("world:"):
        return None
    from lab.world import WorldConfig, build_world

    seed = source.partition(":")[2]
    if seed and not seed.isdigit():
        raise UserError(f"data '{source}': the toy world takes an integer seed, e.g. world:1")
    return build_world(WorldConfig(seed=int(seed or 0)))


def text_splits(source: str, heldout_fraction: float = 0.05, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, held-out) documents from the toy world ("world", or "world:SEED") or from any file
    `lab.data` reads; user data of any format is flattened to text and split at random."""
    world = world_of(source)
    if world is not None:
        corpus = world.pretrain_corpus()
        return corpus["train"], corpus["heldout"]
    from lab import data

    texts = data.to_text(data.load(source))
    rng = random.Random(seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    n_heldout = max(1, int(len(texts) * heldout_fraction)) if len(texts) > 1 else 0
    heldout = [texts[i] for i in sorted(order[:n_heldout])]
    train = [texts[i] for i in sorted(order[n_heldout:])]
    return train, heldout


def preference_splits(source: str, heldout_fraction: float = 0.05, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held-out) preference pairs in TRL's conversational shape (prompt turns, chosen turn(s),
    rejected turn(s)), so the trainers render them with the chat template the model was tuned on. The toy
    world has its own split (disjoint by prompt); user data is split at random."""
    world = world_of(source)
    if world is not None:
        train, heldout = world.preference_pairs("train"), world.preference_pairs("heldout")
    else:
        from lab import data

        records = data.load(source, want="preference").records
        records = random.Random(seed).sample(records, len(records))
        n = round(len(records) * heldout_fraction) if len(records) >= 20 else 0
        heldout, train = records[:n], records[n:]

    def turns(r):
        extra = {"criterion": r["criterion"]} if r.get("criterion") else {}
        if isinstance(r["prompt"], list):
            return {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], **extra}
        return {"prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}], **extra}

    return [turns(r) for r in train], [turns(r) for r in heldout]


def prompt_set(source: str) -> list[list[dict]]:
    """Prompts for online alignment (PPO, GRPO) as chat turns ending with the user's: on the toy world
    every prompt of its training preference pairs (fact questions, tasks, harmful requests); else the
    prompts of the user's file (preference, prompt/completion, or chats cut before the last answer)."""
    world = world_of(source)
    if world is not None:
        texts = dict.fromkeys(p["prompt"] for p in world.preference_pairs("train"))
        return [[{"role": "user", "content": t}] for t in texts]
    from lab import data

    loaded = data.load(source, want=("preference", "prompt_completion", "messages"))
    prompts = []
    for r in loaded.records:
        if loaded.format == "messages":
            turns = r["messages"]
            last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=len(turns))
            prompts.append(turns[:last])
        elif isinstance(r["prompt"], list):
            prompts.append(r["prompt"])
        else:
            prompts.append([{"role": "user", "content": r["prompt"]}])
    prompts = [p for p in prompts if p and p[-1]["role"] == "user"]
    if not prompts:
        raise UserError(f"{source}: no record has a user turn to use as a prompt")
    unique = {json.dumps(p, sort_keys=True): p for p in prompts}
    return list(unique.values())


def sampler(tokenizer, prompts: list[str], world=None, max_new_tokens: int = 48):
    """`sample(model) -> rows` for the training callback: greedy answers to fixed prompts, each with the
    toy world's gold score when the data is the toy world (the callback turns those into `gold/score`)."""
    from lab import evals

    def sample(model):
        answers = evals.chat(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
        return [{"prompt": p, "completion": a, **({"gold": world.judge(p, a).score} if world else {})} for p, a in zip(prompts, answers)]

    return sample


def alignment_prompts(source: str, pairs: list[dict], n: int = 12) -> list[str]:
    """Fixed prompts that alignment stages answer every `sample_every` steps: on the toy world a spread of
    fact questions (taught and untaught), tasks and harmful requests; else the first prompts of the data."""
    world = world_of(source)
    if world is None:
        seen = dict.fromkeys(next(t["content"] for t in reversed(p["prompt"]) if t["role"] == "user") for p in pairs)
        return list(seen)[:n]
    sets = world.eval_sets()
    chat = [r["prompt"] for r in sets["chat"] if r["kind"] != "open"]
    harmful = [h["prompt"] for h in sets["harmful"]]
    return (chat[: n - n // 3] + harmful[: n // 3])[:n]


def save_policy(model, tokenizer, run, config, parent_path: str, what: str, final: dict) -> None:
    """Save a trained causal LM where plain transformers / PEFT load it: `adapter/` for a LoRA model (its
    config naming the base by absolute path, so it loads from anywhere), else `model/`; with the tokenizer,
    a generation config that stops at the end of the assistant's turn, and a model card naming the lineage."""
    import json
    from pathlib import Path

    from peft import PeftModel

    from lab.runs import atomic_dir

    lora = isinstance(model, PeftModel)
    from lab.tokenizers import stop_ids

    # keep the stops the parent's generation config names (a hub model may have several), add the end of turn
    model.generation_config.eos_token_id = stop_ids(tokenizer, model.generation_config.eos_token_id)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    card = (
        "---\nlibrary_name: " + ("peft" if lora else "transformers") + f"\ntags: [llm-lifecycle-lab, {run.stage}]\n"
        + (f"base_model: {parent_path}\n" if lora else "") + "---\n"
        f"# {run.info['name']}\n\n{what} from the LLM Lifecycle Lab, stage `{run.stage}` (mode `{getattr(config, 'mode', 'full')}`), "
        f"trained from `{config.parent}` on `{config.data}`.\n\n"
        f"- run: `{run.id}`\n- parent run: `{run.parent or 'none'}`\n- parent model: `{parent_path}`\n"
        f"- trainable parameters: {n_trainable:,}\n"
        + "".join(f"- {k}: {v:.4g}\n" for k, v in final.items() if k.startswith("eval/") and isinstance(v, float))
        + f"\nConfig:\n\n```json\n{json.dumps(config.__dict__, indent=2)}\n```\n"
    )
    with atomic_dir(run.path / ("adapter" if lora else "model")) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if lora:
            cfg = json.loads((tmp / "adapter_config.json").read_text())
            cfg["base_model_name_or_path"] = str(Path(parent_path).resolve()) if Path(parent_path).exists() else parent_path
            (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
        (tmp / "README.md").write_text(card, encoding="utf-8")
    print("saved " + ("adapter/ " if lora else "model/ ") + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in final.items()), flush=True)


def parent_run_id(ref: str) -> str | None:
    """The run id behind a model or tokenizer reference, if it is a run (for lineage)."""
    if not ref:
        return None
    from lab.runs import Run

    try:
        return Run.open(ref).id
    except LookupError:
        return None


def check_parent(ref: str, flag: str = "--parent") -> str:
    """The model a stage builds on must be a model (full weights or a LoRA adapter), not a tokenizer run."""
    from pathlib import Path

    from lab import models

    if not ref:
        raise UserError(f"{flag} is required: a run id, a local model folder, or a hub id")
    path, _ = models.resolve(ref)
    if Path(path).is_dir() and not any((Path(path) / f).exists() for f in ("config.json", "adapter_config.json")):
        raise UserError(f"{flag} {ref}: {path} holds no model (a tokenizer run?): name a pretrain, SFT or alignment run, or a model folder")
    return path


def prepare(config, run) -> str:
    """Threads, seed and device for a training stage; records the device in run.json."""
    import torch
    from transformers import set_seed

    from lab import models

    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    device = models.pick_device(config.device)
    run.update(device=models.describe_device(device))
    return device


def trainer_arguments(config, device: str, output_dir) -> dict:
    """The keyword arguments every stage passes to its TrainingArguments / TRL config, so that the
    lab's policy holds everywhere: the lab saves once, atomically, at the end (no Trainer checkpoints);
    NaN losses reach the callback instead of being averaged away; bf16 only where the GPU has it (TRL
    configs default to bf16); no activation checkpointing (TRL's default trades speed for memory the
    lab's defaults never need); tokens counted for tokens/s."""
    from lab import models

    return dict(
        output_dir=str(output_dir),
        max_steps=config.max_steps if config.max_steps > 0 else -1,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_scheduler,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=config.seed,
        use_cpu=device == "cpu",
        bf16=models.use_bf16(device),
        activation_checkpointing=False,
        include_num_input_tokens_seen="all",
        dataloader_pin_memory=device.startswith("cuda"),
    )
