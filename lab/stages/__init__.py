"""The lifecycle's stages. A stage is one module of this package, and it declares itself there:

    STAGE = Stage(label="SFT", data="chats", produces="chat")   # what the CLI, the pages, the API, the
                                                                # job queue and inference need to know
    @dataclass
    class Config(LoraArgs, TrainerArgs): ...   # its fields: the CLI flags, the UI form, run.json (lab.stages.base)
    def check(config) -> None: ...             # optional: refuse bad input before a run folder exists
    def run(config, run) -> dict: ...          # train; returns the final metrics

REGISTRY lists the modules in lifecycle order: adding a stage is its module and one line there. Nothing
else names a stage: the CLI builds `llm-lab train NAME`, the app a tab, the API its config fields and
data preview from these declarations. So a stage's module is imported to be read far more often than to train:
what only its training needs (TRL, transformers' Trainer and lab.telemetry, its callbacks, which bring peft and
bitsandbytes) is imported inside `run`, or the app and every evaluation would load it (bench/RESULTS.md).
"""

from __future__ import annotations

import importlib
import json
import random
from dataclasses import dataclass

from lab.errors import UserError, flag

REGISTRY = {
    "tokenizer": "lab.stages.tokenizer",
    "pretrain": "lab.stages.pretrain",
    "sft": "lab.stages.sft",
    "reward": "lab.stages.reward",
    "ppo": "lab.stages.ppo",
    "dpo": "lab.stages.dpo",
    "kto": "lab.stages.kto",
    "grpo": "lab.stages.grpo",
    "lifecycle": "lab.stages.lifecycle",  # the others in order, as one run (`llm-lab quickstart`)
    "experiment": "lab.stages.experiment",  # runs of the others that measure one claim (`llm-lab experiment`)
}

# What a stage reads from its `data` field, and how lab.data names the formats accepted for it:
# text (any format, flattened), chats (SFT), preference pairs (reward model, DPO), prompts (online RL,
# which samples its own answers: prompts alone, or any record with a user turn).
DATA_FORMATS = {
    "text": None,
    "chats": ("messages", "prompt_completion"),
    "preference": ("preference",),
    "prompts": ("preference", "prompt_completion", "messages", "prompt"),
    "labels": ("unpaired", "preference"),  # answers labelled good or bad (KTO); a pair is one of each
}
# What a stage's run leaves: a tokenizer, a base model that continues text, a model to chat with, a reward model,
# a report card (of the runs it started).
PRODUCES = ("tokenizer", "base", "chat", "reward", "report")


@dataclass(frozen=True)
class Stage:
    label: str  # its tab (or sub-tab) and its name in tables
    data: str  # a key of DATA_FORMATS ("": it reads no data of its own)
    produces: str  # one of PRODUCES
    page: str = ""  # the top-level tab it sits in, beside other stages of that page (empty: a tab of its own)
    lineage: tuple[str, ...] = ("parent",)  # config fields naming the run it builds on, first found wins
    resume_from: str = ""  # the field through which a stopped run continues from its saved model ("": cannot)
    notes: str = ""  # markdown under its form
    # False: it trains nothing itself but starts jobs of other stages, which need the job slots; it waits its
    # turn in the queue like any job, then holds no slot (it takes one only while it computes itself)
    slot: bool = True
    # The families of curves (pages.curves.FAMILIES, or a metric's prefix) its page shows first, large; the rest
    # fold away. Empty: it logs its figures once, not curves.
    curves: tuple[str, ...] = ("loss",)

    def __post_init__(self):
        if (self.data and self.data not in DATA_FORMATS) or self.produces not in PRODUCES:
            raise TypeError(f"Stage(data={self.data!r}, produces={self.produces!r}): data is one of {list(DATA_FORMATS)}, produces one of {list(PRODUCES)}")


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(stage: str):
    """The module of a stage."""
    if stage not in REGISTRY:
        raise UserError(f"unknown stage '{stage}': choose one of {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[stage])


def spec(stage: str) -> Stage:
    """A stage's declaration."""
    return get(stage).STAGE


def produces(stage: str) -> str | None:
    """What a run of `stage` leaves, or None for a stage this lab no longer has (an old run)."""
    return spec(stage).produces if stage in REGISTRY else None


def parent_of(stage: str, config) -> str | None:
    """The run a config builds on, for the lineage: the first of the stage's lineage fields that names a run."""
    for field in spec(stage).lineage:
        run_id = parent_run_id(getattr(config, field, ""))
        if run_id:
            return run_id
    return None


def read(stage: str, source: str, limit: int | None = None, columns: str = "") -> tuple[list[dict], str, str, str]:
    """What `stage` reads from `source`, as it will read it: (records, the source's format, what it was detected
    from, how its columns were mapped, in words). The data preview shows exactly these records, so what it shows
    is what the stage trains on, and a file the stage would refuse is refused here too. `limit`: read at most
    that many records of a user's file. `columns`: the user's column mapping (lab.data.parse_columns)."""
    kind = spec(stage).data
    world = world_of(source, columns)
    if world is not None:
        if kind == "text":
            corpus = world.pretrain_corpus()
            return [{"text": d} for d in corpus["train"]], "text", f"toy world pretraining corpus (+{len(corpus['heldout'])} held-out documents)", ""
        if kind == "chats":
            return world.sft_chats(), "messages", "toy world SFT chats", ""
        if kind == "preference":
            return world.preference_pairs(), "preference", "toy world preference pairs", ""
        if kind == "labels":
            return unpair(world.preference_pairs()), "preference", "toy world preference pairs, each as a good and a bad answer", ""
        return ([{"prompt": p} for p in prompt_set(source, rollouts=True)], "prompts",
                "toy world prompts (of its preference pairs; some after a turn in the SFT data's tone)", "")
    from lab import data

    loaded = data.load(source, want=DATA_FORMATS[kind], limit=limit, columns=columns)
    fmt, detected, how = loaded.format, loaded.detected_from, loaded.how
    if kind == "text":
        return [{"text": t} for t in data.to_text(loaded)], fmt, detected, how
    if kind == "chats":
        return data.as_messages(loaded), fmt, detected, how
    if kind == "preference":
        return loaded.records, fmt, detected, how
    if kind == "labels":
        return (loaded.records if fmt == "unpaired" else unpair(loaded.records)), fmt, detected, how
    return [{"prompt": p} for p in prompt_set(source, limit, columns)], fmt, detected, how


def world_of(source: str, columns: str = ""):
    """The toy world a data source names ("world", or "world:SEED"), or None for user data. `columns`, a column
    mapping, is refused with the toy world, whose records have the lab's columns already."""
    if source != "world" and not source.startswith("world:"):
        return None
    from lab.world import WorldConfig, build_world

    if columns.strip():
        raise UserError(f"{flag('columns')} {columns!r} maps the columns of your own file; the toy world's records have the lab's "
                        f"columns already: clear {flag('columns')}, or set {flag('data')} to your file")
    seed = source.partition(":")[2]
    if seed and not seed.isdigit():
        raise UserError(f"data '{source}': the toy world takes an integer seed, e.g. world:1")
    return build_world(WorldConfig(seed=int(seed or 0)))


def world_of_lineage(run):
    """The toy world a run's model learnt: the newest toy-world `data` along its lineage ("world:3" → seed 3),
    past the user's own data of later stages; None when no run of the chain trained on the toy world."""
    from lab import runs

    for r in reversed(runs.lineage(run)):
        world = world_of(str(r.config.get("data", "")))
        if world is not None:
            return world
    return None


def text_splits(source: str, heldout_fraction: float = 0.05, seed: int = 0, columns: str = "") -> tuple[list[str], list[str]]:
    """(train, held-out) documents from the toy world ("world", or "world:SEED") or from any file
    `lab.data` reads (its columns mapped by `columns`); user data of any format is flattened to text and split at random."""
    world = world_of(source, columns)
    if world is not None:
        corpus = world.pretrain_corpus()
        return corpus["train"], corpus["heldout"]
    from lab import data

    texts = data.to_text(data.load(source, columns=columns))
    rng = random.Random(seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    n_heldout = max(1, int(len(texts) * heldout_fraction)) if len(texts) > 1 else 0
    heldout = [texts[i] for i in sorted(order[:n_heldout])]
    train = [texts[i] for i in sorted(order[n_heldout:])]
    return train, heldout


def preference_splits(source: str, heldout_fraction: float = 0.05, seed: int = 0, columns: str = "", max_pairs: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held-out) preference pairs in TRL's conversational shape (prompt turns, chosen turn(s),
    rejected turn(s)), so the trainers render them with the chat template the model was tuned on. The toy
    world has its own split (disjoint by prompt); user data is split at random. `max_pairs`: at most that many
    training pairs, drawn at random from `seed` (0: all); the held-out pairs stay whole."""
    world = world_of(source, columns)
    if world is not None:
        train, heldout = world.preference_pairs("train"), world.preference_pairs("heldout")
    else:
        from lab import data

        records = data.load(source, want="preference", columns=columns).records
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

    if 0 < max_pairs < len(train):
        train = random.Random(f"pairs/{seed}").sample(train, max_pairs)
    return [turns(r) for r in train], [turns(r) for r in heldout]


def unpair(pairs: list[dict]) -> list[dict]:
    """Preference pairs as labelled answers (KTO's unpaired shape): the chosen answer good, the rejected one bad."""
    return [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen", **({"criterion": p["criterion"]} if p.get("criterion") else {})}
            for p in pairs for side in ("chosen", "rejected")]


def labelled_splits(source: str, heldout_fraction: float = 0.05, seed: int = 0, columns: str = "") -> tuple[list[dict], list[dict]]:
    """(train, held-out) answers labelled good or bad, in TRL's conversational unpaired shape (prompt turns, the
    answer's turn, label): a file of labelled answers, or preference pairs unpaired (the toy world's too)."""
    world = world_of(source, columns)
    if world is not None or data_format(source, ("unpaired", "preference"), columns) == "preference":
        train, heldout = preference_splits(source, heldout_fraction, seed, columns)
        return unpair(train), unpair(heldout)
    from lab import data

    records = data.load(source, want="unpaired", columns=columns).records
    records = random.Random(seed).sample(records, len(records))
    n = round(len(records) * heldout_fraction) if len(records) >= 20 else 0

    def turns(r):
        if isinstance(r["prompt"], list):
            return dict(r)
        return {"prompt": [{"role": "user", "content": r["prompt"]}], "completion": [{"role": "assistant", "content": r["completion"]}], "label": r["label"]}

    return [turns(r) for r in records[n:]], [turns(r) for r in records[:n]]


def data_format(source: str, want: tuple, columns: str = "") -> str:
    """The format a user's file holds, of those `want` names (its first rows read)."""
    from lab import data

    return data.load(source, want=want, limit=50, columns=columns).format


def prompt_set(source: str, limit: int | None = None, columns: str = "", rollouts: bool = False) -> list[list[dict]]:
    """Prompts for online alignment (PPO, GRPO), AI feedback and revisions, as chat turns ending with the user's:
    on the toy world every prompt of its training preference pairs (fact questions, tasks, harmful requests),
    and for `rollouts` (PPO's, GRPO's) half of them again after a turn in the SFT data's mixed tone
    (`World.conversations`: only the policy's last answer is trained on, never a turn of that tone, which SFT
    chats made from these prompts would teach); else the prompts of the user's file (preference,
    prompt/completion, or chats cut before the last answer)."""
    world = world_of(source, columns)
    if world is not None:
        texts = dict.fromkeys(p["prompt"] for p in world.preference_pairs("train"))
        return [[{"role": "user", "content": t}] for t in texts] + (world.conversations() if rollouts else [])
    from lab import data

    loaded = data.load(source, want=DATA_FORMATS["prompts"], limit=limit, columns=columns)
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


def parent_run_id(ref: str) -> str | None:
    """The run id behind a model or tokenizer reference, if it is a run of the store (for lineage)."""
    if not ref:
        return None
    from pathlib import Path

    from lab import runs

    folder = Path(ref).expanduser()
    if (folder / "run.json").is_file():
        return folder.resolve().name if runs.in_store(folder) else None
    try:
        return runs.Run.open(ref).id
    except LookupError:
        return None


def check_parent(ref: str, field: str = "parent") -> str:
    """The model a stage builds on must be a model (full weights or a LoRA adapter), not a tokenizer run."""
    from pathlib import Path

    from lab import models
    from lab.errors import flag as flag_of

    flag = flag_of(field)
    if not ref:
        raise UserError(f"{flag} is required: a run id, a local model folder, or a hub id")
    path, _ = models.resolve(ref)
    if Path(path).is_dir() and not any((Path(path) / f).exists() for f in ("config.json", "adapter_config.json")):
        raise UserError(f"{flag} {ref}: {path} holds no model (a tokenizer run?): name a pretrain, SFT or alignment run, or a model folder")
    return path
