"""Stage 1, pretraining: a language model learns the world from raw text with transformers' Trainer.

    llm-lab train pretrain --preset tiny                       # Llama-style decoder on the toy world
    llm-lab train pretrain --preset nano --max-steps 30        # the test-sized model
    llm-lab train pretrain --objective mlm                     # BERT-style encoder, masked LM
    llm-lab train pretrain --init-from RUN|DIR --data my.txt   # continued pretraining

Documents are tokenized (each starts with the <|endoftext|> separator), concatenated and cut into
blocks of `seq_len` tokens, so no compute is spent on padding. Every `sample_every` steps the model
completes fixed prompts into samples.jsonl; at the end it is scored on held-out text (perplexity) and,
on the toy world, on completing its facts ("The capital of Zorbia is" → "Velmora").
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from lab import evals, models, telemetry
from lab.configs import option
from lab.errors import UserError
from lab.runs import atomic_dir
from lab.stages import parent_run_id, prepare, text_splits, trainer_arguments, world_of


@dataclass
class Config:
    preset: str = option("tiny", "model size for a model trained from scratch", choices=tuple(models.PRESETS))
    objective: str = option("clm", "clm: causal LM (decoder); mlm: masked LM (encoder)", choices=("clm", "mlm"))
    data: str = option("world", "training text: 'world' (the built-in toy world) or a file/folder path")
    tokenizer: str = option("", "a tokenizer run or folder; empty: train a BPE tokenizer on the data first")
    max_steps: int = option(440, "optimizer steps (0: train for `epochs` instead); 440 x 16 x 128 tokens fit the toy world in 3 CPU minutes")
    # 16, not 32: the toy world is read 16 times over, and twice the updates for the same tokens learnt its
    # facts far more surely (120-scene world: 94-95% at 16 x 440 against 47-73% at 32 x 220; bench/RESULTS.md)
    batch_size: int = option(16, "sequences per step (per device)")
    seq_len: int = option(128, "tokens per sequence")
    learning_rate: float = option(3e-3, "peak learning rate (AdamW)")
    init_from: str = option("", "continue pretraining this model (run id, folder or hub id) instead of a fresh preset", advanced=True)
    epochs: float = option(1.0, "passes over the data when max_steps is 0", advanced=True)
    warmup_steps: int = option(50, "linear warm-up steps", advanced=True)
    lr_scheduler: str = option("cosine", "learning-rate schedule after warm-up", choices=("cosine", "linear", "constant_with_warmup"), advanced=True)
    weight_decay: float = option(0.1, "AdamW weight decay", advanced=True)
    grad_accum: int = option(1, "gradient accumulation steps", advanced=True)
    max_grad_norm: float = option(1.0, "gradient clipping (0: off)", advanced=True)
    mlm_probability: float = option(0.15, "share of tokens masked (mlm only)", advanced=True)
    vocab_size: int = option(0, "vocabulary of the tokenizer trained here (0: the preset's)", advanced=True)
    logging_steps: int = option(10, "log metrics every N steps", advanced=True)
    eval_every: int = option(200, "held-out loss every N steps (0: only at the end)", advanced=True)
    sample_every: int = option(100, "complete the fixed prompts every N steps (0: never)", advanced=True)
    max_minutes: float = option(0.0, "stop (and save) after this many minutes of training (0: no limit)", advanced=True)
    seed: int = option(0, "random seed", advanced=True)
    device: str = option("auto", "auto (cuda > mps > cpu), cpu, cuda, mps", advanced=True)
    threads: int = option(0, "CPU threads for torch (0: torch's default)", advanced=True)
    name: str = option("", "a name for the run (default: its id)", advanced=True)


def parent_of(config: Config) -> str | None:
    # A continued pretraining builds on a model; a fresh one only borrows a tokenizer, which is
    # still its parent in the lineage because the model cannot be used without it.
    return parent_run_id(config.init_from) or parent_run_id(config.tokenizer)


def check(config: Config) -> None:
    """Cheap checks of what the user named, before a run is created for it."""
    if config.max_steps <= 0 and config.epochs <= 0:
        raise UserError("nothing to train: set --max-steps or --epochs above 0")
    models.pick_device(config.device)
    if config.tokenizer:
        models.resolve(config.tokenizer)
    if config.init_from:
        path, _ = models.resolve(config.init_from)
        if Path(path).is_dir() and not (Path(path) / "config.json").exists():
            raise UserError(f"--init-from {config.init_from}: {path} holds no model (no config.json); a tokenizer run goes in --tokenizer")
    if world_of(config.data) is None:
        from lab import data

        data.load(config.data)  # a bad file is named, with its line, now rather than minutes into a job


def load_tokenizer(config: Config, train: list[str]):
    from transformers import AutoTokenizer

    from lab.tokenizers import ensure_chat_template, train_tokenizer

    ref = config.tokenizer or config.init_from
    if ref:
        path, _ = models.resolve(ref)
        tokenizer = models.load_pretrained(AutoTokenizer, path)
    else:
        vocab = config.vocab_size or models.PRESETS[config.preset].vocab
        print(f"training a BPE tokenizer (vocab {vocab}) on the data", flush=True)
        tokenizer = train_tokenizer(train, kind="bpe", vocab_size=vocab)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.objective == "mlm" and tokenizer.mask_token is None:
        raise UserError(f"masked-LM pretraining needs a tokenizer with a mask token, and '{ref}' has none: train one with `llm-lab train tokenizer` (it has <|mask|>) or use --objective clm")
    ensure_chat_template(tokenizer)
    return tokenizer


def pack(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """All documents end to end, cut into rows of seq_len tokens (the ragged tail is dropped)."""
    ids: list[int] = []
    for i in range(0, len(texts), 1000):
        for row in tokenizer(texts[i : i + 1000], add_special_tokens=True)["input_ids"]:
            ids.extend(row)
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


class Blocks(torch.utils.data.Dataset):
    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, i):
        return {"input_ids": self.blocks[i]}


def causal_collate(rows):
    input_ids = torch.stack([r["input_ids"] for r in rows])
    return {"input_ids": input_ids, "labels": input_ids.clone()}


def sampler(config: Config, tokenizer, heldout: list[str]):
    """What the model writes for fixed prompts as it learns: completions (clm) or mask fills (mlm)."""
    world = world_of(config.data)
    if world is not None:
        prompts = list(world.sample_prompts)
    else:
        prompts = [" ".join(t.split()[:6]) for t in heldout[:4] if t.split()]
    if config.objective == "clm":
        return lambda model: [{"prompt": p, "completion": c} for p, c in zip(prompts, evals.complete(model, tokenizer, prompts, max_new_tokens=24))]
    masked = [f"{p} {tokenizer.mask_token}." for p in prompts]
    return lambda model: [{"prompt": m, "completion": fill} for m, fill in zip(masked, fill_mask(model, tokenizer, masked))]


@torch.no_grad()
def fill_mask(model, tokenizer, texts: list[str]) -> list[str]:
    was_training = model.training
    model.eval()
    out = []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt").to(model.device)
        pos = (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero()
        if len(pos) == 0:
            out.append("")
            continue
        logits = model(**enc).logits[0, pos[0, 0]]
        out.append(tokenizer.decode([int(logits.argmax())]).strip())
    model.train(was_training)
    return out


def model_card(config: Config, run, n_params: int) -> str:
    lineage = f"continued from `{config.init_from}`" if config.init_from else f"trained from scratch (preset `{config.preset}`)"
    return (
        "---\nlibrary_name: transformers\ntags: [llm-lifecycle-lab, pretrain]\n---\n"
        f"# {run.info['name']}\n\n"
        f"Pretrained with the LLM Lifecycle Lab, stage `pretrain` ({'causal' if config.objective == 'clm' else 'masked'} LM), "
        f"{lineage}, on `{config.data}`.\n\n"
        f"- run: `{run.id}`\n- parent run: `{run.parent or 'none'}`\n- parameters: {n_params:,}\n\n"
        f"Config:\n\n```json\n{json.dumps(config.__dict__, indent=2)}\n```\n"
    )


def run(config: Config, run) -> dict:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, DataCollatorForLanguageModeling, GenerationConfig, Trainer, TrainingArguments

    device = prepare(config, run)

    train_texts, heldout_texts = text_splits(config.data, seed=config.seed)
    tokenizer = load_tokenizer(config, train_texts)
    if config.init_from:
        path, _ = models.resolve(config.init_from)
        auto = AutoModelForCausalLM if config.objective == "clm" else AutoModelForMaskedLM
        model = models.load_pretrained(auto, path)
    else:
        model = models.build_from_scratch(config.preset, config.objective, tokenizer, config.seq_len)
    n_params = models.count_parameters(model)
    train_blocks = pack(tokenizer, train_texts, config.seq_len)
    if len(train_blocks) < config.batch_size:
        raise UserError(f"the data makes {len(train_blocks)} sequences of {config.seq_len} tokens, fewer than one batch of {config.batch_size}: add text, or lower --batch-size or --seq-len")
    eval_blocks = pack(tokenizer, heldout_texts, config.seq_len) if heldout_texts else None
    if eval_blocks is not None and len(eval_blocks):  # whole batches only (loaders drop a ragged one), two at most
        eval_batch = min(config.batch_size, len(eval_blocks))
        eval_blocks = eval_blocks[: min(2 * eval_batch, len(eval_blocks) // eval_batch * eval_batch)]
    else:
        eval_blocks = None
        print("held-out text is shorter than one sequence: no held-out loss for this run", flush=True)
    print(f"{n_params:,} parameters on {device}; {train_blocks.numel():,} training tokens in {len(train_blocks)} sequences", flush=True)
    run.log_metrics({"step": 0, "parameters": n_params, "train_tokens": train_blocks.numel()})

    collate = causal_collate if config.objective == "clm" else DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=config.mlm_probability)
    scratch = run.path / "trainer"
    args = TrainingArguments(
        **trainer_arguments(config, device, scratch),
        per_device_eval_batch_size=eval_batch if eval_blocks is not None else config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        max_grad_norm=config.max_grad_norm,
        adam_beta2=0.95,
        eval_strategy="steps" if config.eval_every and eval_blocks is not None else "no",
        eval_steps=config.eval_every or None,
        dataloader_drop_last=True,  # every step a full batch: steady throughput and loss scale
    )
    callback = telemetry.LabCallback(run, sample=sampler(config, tokenizer, heldout_texts), sample_every=config.sample_every, max_minutes=config.max_minutes)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Blocks(train_blocks),
        eval_dataset=Blocks(eval_blocks) if eval_blocks is not None else None,
        data_collator=collate,
        processing_class=tokenizer,
        callbacks=[callback],
    )
    output = trainer.train()
    callback.raise_if_diverged()

    final = {"train_loss": output.training_loss, "steps": trainer.state.global_step, "parameters": n_params, "train_runtime": output.metrics.get("train_runtime")}
    stopped = telemetry.stop_requested()  # a stopped run saves at once: the evals could outlast the stop's grace
    if eval_blocks is not None and not stopped:
        step = trainer.state.global_step
        done = [h for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == step]
        metrics = done[-1] if done else trainer.evaluate()  # the schedule may have just evaluated this step
        callback.raise_if_diverged()
        final["eval_loss"] = metrics["eval_loss"]
        final["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50))
    world = world_of(config.data)
    if config.objective == "clm" and world is not None and not stopped:
        facts = world.eval_sets()["pretrain_facts"]
        final.update({f"eval/{k}": v for k, v in evals.fact_completion(model, tokenizer, facts).items()})
        run.log_metrics({"step": trainer.state.global_step, **{k: v for k, v in final.items() if k.startswith("eval/")}})

    model = trainer.model
    if config.objective == "clm":
        from lab.tokenizers import stop_ids

        model.generation_config = GenerationConfig(eos_token_id=stop_ids(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    with atomic_dir(run.path / "model") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(config, run, n_params), encoding="utf-8")
    shutil.rmtree(scratch, ignore_errors=True)
    print("saved model/ " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in final.items()), flush=True)
    return final
