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

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from lab import distributed, evals, models
from lab.configs import DATA, MODEL, SCHEDULE, TRAINING, inherit, option
from lab.errors import UserError, flag, hint
from lab.stages import Stage, text_splits, world_of
from lab.stages.base import DataArgs, TrainerArgs, check_training, fit, prepare, save_model, trainer_arguments

STAGE = Stage(
    label="Pretrain", data="text", produces="base", lineage=("init_from", "tokenizer"), resume_from="init_from", curves=("loss", "perplexity"),
    notes="Presets: " + " · ".join(f"**{name}** {p.about}" for name, p in models.PRESETS.items()) + " (`llm-lab presets` counts them exactly).",
)


@dataclass
class Config(DataArgs, TrainerArgs):
    preset: str = option("tiny", "model size for a model trained from scratch", choices=tuple(models.PRESETS), order=MODEL)
    objective: str = option("clm", "clm: causal LM (decoder); mlm: masked LM (encoder)", choices=("clm", "mlm"), order=MODEL)
    data: str = option("world", "training text: 'world' (the built-in toy world) or a file/folder path", order=DATA)
    tokenizer: str = option("", "a tokenizer run or folder; empty: train a BPE tokenizer on the data first", order=DATA, runs=("tokenizer",))
    max_steps: int = inherit(TrainerArgs, "max_steps", 440)
    # 16, not 32: twice the updates for the same tokens learnt the toy world's facts far more surely (bench/RESULTS.md)
    batch_size: int = inherit(TrainerArgs, "batch_size", 16, help="sequences per step (per device)")
    seq_len: int = option(128, "tokens per sequence", order=TRAINING, within="[2, 1048576]")
    learning_rate: float = inherit(TrainerArgs, "learning_rate", 3e-3, help="peak learning rate (AdamW)")
    init_from: str = option("", "continue pretraining this model (run id, folder or hub id) instead of a fresh preset", advanced=True, order=MODEL, runs=("pretrain", "sft"))
    warmup_steps: int = inherit(TrainerArgs, "warmup_steps", 50)
    weight_decay: float = inherit(TrainerArgs, "weight_decay", 0.1)
    save_steps: int = inherit(TrainerArgs, "save_steps", 100)
    grad_accum: int = option(1, "gradient accumulation steps", advanced=True, order=SCHEDULE, within="[1, 4096]")
    max_grad_norm: float = option(1.0, "gradient clipping (0: off)", advanced=True, order=SCHEDULE, within="[0, 1000000]")
    mlm_probability: float = option(0.15, "share of tokens masked (mlm only)", advanced=True, within="(0, 1)")
    vocab_size: int = option(0, "vocabulary of the tokenizer trained here (0: the preset's)", advanced=True, within="[0, 1048576]")
    eval_every: int = option(200, "held-out loss every N steps (0: only at the end)", advanced=True, within="[0, 10000000]")
    sample_every: int = option(100, "complete the fixed prompts every N steps (0: never)", advanced=True, within="[0, 10000000]")


def check(config: Config) -> None:
    """Cheap checks of what the user named, before a run is created for it."""
    check_training(config)
    if config.tokenizer:
        models.resolve(config.tokenizer)
    if config.init_from:
        path, _ = models.resolve(config.init_from)
        if Path(path).is_dir() and not (Path(path) / "config.json").exists():
            raise UserError(f"{flag('init_from')} {config.init_from}: {path} holds no model (no config.json); a tokenizer run goes in {flag('tokenizer')}")
    if world_of(config.data, config.columns) is None:
        from lab import data

        data.load(config.data, columns=config.columns)  # a bad file is named, with its line, now rather than minutes into a job


def load_tokenizer(config: Config, train: list[str], trained: Path | None = None):
    """The tokenizer named, else one trained on the data here, unless a resumed run's checkpoint (`trained`) holds
    the one trained when the run began."""
    from transformers import AutoTokenizer

    from lab.tokenizers import ensure_chat_template, train_tokenizer

    ref = config.tokenizer or config.init_from
    if ref or trained:
        path = models.resolve(ref)[0] if ref else trained
        tokenizer = models.load_pretrained(AutoTokenizer, path)
    else:
        vocab = config.vocab_size or models.PRESETS[config.preset].vocab
        print(f"training a BPE tokenizer (vocab {vocab}) on the data", flush=True)
        tokenizer = train_tokenizer(train, kind="bpe", vocab_size=vocab)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.objective == "mlm" and tokenizer.mask_token is None:
        raise UserError(f"masked-LM pretraining needs a tokenizer with a mask token, and '{ref}' has none: train one ({hint(cli='llm-lab train tokenizer', page='Data & tokenizer')}: it has <|mask|>) or use {flag('objective')} clm")
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


def run(config: Config, run) -> dict:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from lab import telemetry

    device = prepare(config, run)

    train_texts, heldout_texts = text_splits(config.data, seed=config.seed, columns=config.columns)
    resumed = run.last_checkpoint()
    tokenizer = load_tokenizer(config, train_texts, trained=resumed[1] if resumed else None)
    parent_path = models.resolve(config.init_from)[0] if config.init_from else None
    if parent_path:
        auto = AutoModelForCausalLM if config.objective == "clm" else AutoModelForMaskedLM
        model = models.load_pretrained(auto, parent_path)
    else:
        model = models.build_from_scratch(config.preset, config.objective, tokenizer, config.seq_len)
    n_params = models.count_parameters(model)
    train_blocks = pack(tokenizer, train_texts, config.seq_len)
    if len(train_blocks) < config.batch_size:
        raise UserError(f"the data makes {len(train_blocks)} sequences of {config.seq_len} tokens, fewer than one batch of {config.batch_size}: add text, or lower {flag('batch_size')} or {flag('seq_len')}")
    eval_blocks = pack(tokenizer, heldout_texts, config.seq_len) if heldout_texts else None
    if eval_blocks is not None and len(eval_blocks):  # whole batches only (loaders drop a ragged one), two at most
        eval_batch = min(config.batch_size, len(eval_blocks))
        eval_blocks = eval_blocks[: min(2 * eval_batch, len(eval_blocks) // eval_batch * eval_batch)]
    else:
        eval_blocks = None
        print("held-out text is shorter than one sequence: no held-out loss for this run", flush=True)
    print(f"{n_params:,} parameters on {device}; {train_blocks.numel():,} training tokens in {len(train_blocks)} sequences", flush=True)
    if not resumed:
        run.log_metrics({"step": 0, "parameters": n_params, "train_tokens": train_blocks.numel()})

    collate = causal_collate if config.objective == "clm" else DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=config.mlm_probability)
    scratch = run.path / "trainer"
    args = TrainingArguments(
        **trainer_arguments(config, device, scratch, model=model),
        # the held-out blocks split over the ranks of a multi-process run, each rank's share one batch
        per_device_eval_batch_size=max(1, eval_batch // distributed.ranks()) if eval_blocks is not None else config.batch_size,
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
    world = world_of(config.data)

    def evaluate(model) -> dict:
        out = {}
        if eval_blocks is not None:
            step = trainer.state.global_step
            done = [h for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == step]
            metrics = done[-1] if done else trainer.evaluate()  # the schedule may have just evaluated this step
            out = {"eval_loss": metrics["eval_loss"], "eval_perplexity": math.exp(min(metrics["eval_loss"], 50))}
        if config.objective == "clm" and world is not None and config.world_evals:
            out.update({f"eval/{k}": v for k, v in evals.fact_completion(model, tokenizer, world.eval_sets()["pretrain_facts"]).items()})
        return out

    final = {"parameters": n_params, **fit(trainer, callback, run, evaluate)}
    lineage = f"continued from `{config.init_from}`" if config.init_from else f"preset `{config.preset}`"
    what = f"{'Causal' if config.objective == 'clm' else 'Masked'} LM ({lineage})"
    save_model(trainer.model, tokenizer, run, config, what, final, parent_path)
    return final
