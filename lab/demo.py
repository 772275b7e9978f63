"""Demo mode: the lab as a public Hugging Face Space, where every visitor is a stranger.

    LAB_DEMO_MODE=1 llm-lab app          # on by itself where SPACE_ID is set (a Space); LAB_DEMO_MODE=0 turns it off

What it changes, and nothing else:
- what a field may name: data is the toy world, an upload or a feedback dataset of the store; a model is a
  run of the store. No server path, no folder walk, no hub id (no network attempt; LAB_ALLOW_HUB=1 allows them);
- caps on what one visitor can ask for (presets up to `tiny`, steps, batch size, sequence lengths, uploads,
  generation length, one training job at a time and one queued per visitor), each refused with a message that
  names the cap and how to lift it;
- ownership: a visitor stops, deletes and resumes only the runs they started, and undoes only their own votes.

In every mode a run id resolves only inside the store (`lab.runs.Run.open`).
"""

from __future__ import annotations

import os
from pathlib import Path

from lab import runs
from lab.errors import UserError, flag

LIFT = "run the lab on your own machine (LAB_DEMO_MODE=0) to lift it"
PRESETS = ("nano", "tiny")  # the sizes a 2-core Space trains in minutes
MAX_STEPS = int(os.environ.get("LAB_DEMO_MAX_STEPS", "500"))
MAX_NEW_TOKENS = int(os.environ.get("LAB_DEMO_MAX_NEW_TOKENS", "256"))
MAX_UPLOAD_MB = float(os.environ.get("LAB_DEMO_MAX_UPLOAD_MB", "10"))
MAX_BATCH = int(os.environ.get("LAB_DEMO_MAX_BATCH", "32"))
MAX_LENGTH = 512  # tokens of a sequence, a chat or an answer: what a tiny model's context holds
MAX_CHECKPOINTS = 2  # kept per run: a stopped run keeps them on the Space's disk until it is resumed or deleted
LENGTHS = ("seq_len", "max_length", "max_completion_length", "response_length", "max_prompt_length")


def on() -> bool:
    value = os.environ.get("LAB_DEMO_MODE", "").strip().lower()
    if value:
        return value in ("1", "true", "yes", "on")
    return bool(os.environ.get("SPACE_ID"))


def hub_allowed() -> bool:
    return os.environ.get("LAB_ALLOW_HUB", "").strip().lower() in ("1", "true", "yes", "on")


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def check_data(source: str, what: str = "data") -> None:
    """In demo mode, `source` must be the toy world, an upload or a feedback dataset of the store."""
    if not on():
        return
    source = str(source or "").strip()
    if source == "world" or source.startswith("world:"):
        return
    path = Path(source)
    if path.is_file() and any(_inside(path, runs.root() / sub) for sub in ("uploads", "feedback")):
        return
    raise UserError(f"{what} '{source[:80]}': this demo reads only the toy world ('world'), your uploads and the feedback "
                    f"datasets of the Compare and Feedback pages; {LIFT} and read your own files")


def check_model(ref: str, what: str = "model") -> None:
    """In demo mode, a model is a run of the store (or a folder inside it); a hub id only with LAB_ALLOW_HUB=1."""
    if not on():
        return
    ref = str(ref or "").strip()
    if runs.RUN_ID.fullmatch(ref) and (runs.root() / ref / "run.json").is_file():
        return
    path = Path(ref)
    if path.exists() and _inside(path, runs.root()):
        return
    looks_like_hub = ref.count("/") == 1 and not ref.startswith((".", "/", "~"))
    if looks_like_hub and hub_allowed():
        return
    if looks_like_hub:
        raise UserError(f"{what} '{ref}': hub models are off in this demo (the Space would download them for every visitor); "
                        "pick a run of the lab, or set LAB_ALLOW_HUB=1 where you run it")
    raise UserError(f"{what} '{ref[:80]}': this demo takes only the lab's runs as models (see the Runs page); {LIFT} and use your own folders")


def check_config(stage: str, config) -> None:
    """A config a visitor may queue: what it names (checked above) and the demo's caps."""
    if not on():
        return
    from lab import configs

    for f in configs.fields(type(config)):
        value = getattr(config, f.name)
        if not isinstance(value, str) or not value:
            continue
        if f.name == "data":
            check_data(value)
        elif f.metadata.get("runs") and value != "gold":
            check_model(value, flag(f.name))
    preset = getattr(config, "preset", None)
    if preset is not None and preset not in PRESETS and not getattr(config, "init_from", ""):
        raise UserError(f"{flag('preset')} {preset}: this demo trains models up to `tiny` ({', '.join(PRESETS)}); {LIFT}")
    steps = getattr(config, "max_steps", None)
    if steps is not None and not 0 < steps <= MAX_STEPS:
        raise UserError(f"{flag('max_steps')} {steps}: this demo runs 1 to {MAX_STEPS} steps (LAB_DEMO_MAX_STEPS); {LIFT}")
    batch = getattr(config, "batch_size", None)
    if batch is not None and batch > MAX_BATCH:
        raise UserError(f"{flag('batch_size')} {batch}: this demo takes batches of up to {MAX_BATCH} (LAB_DEMO_MAX_BATCH); {LIFT}")
    keep = getattr(config, "save_total_limit", None)
    if keep is not None and keep > MAX_CHECKPOINTS:
        raise UserError(f"{flag('save_total_limit')} {keep}: this demo keeps up to {MAX_CHECKPOINTS} checkpoints per run; {LIFT}")
    for name in LENGTHS:
        if getattr(config, name, 0) > MAX_LENGTH:
            raise UserError(f"{flag(name)} {getattr(config, name)}: this demo takes up to {MAX_LENGTH} tokens; {LIFT}")


def check_generation(max_new_tokens: int) -> None:
    if on() and int(max_new_tokens) > MAX_NEW_TOKENS:
        raise UserError(f"max new tokens {max_new_tokens}: this demo writes at most {MAX_NEW_TOKENS} (LAB_DEMO_MAX_NEW_TOKENS); {LIFT}")


def check_owner(run, owner: str | None, action: str) -> None:
    """In demo mode only the visitor who started a run may stop, delete or resume it."""
    if on() and run.info.get("owner") != owner:
        raise UserError(f"run {run.id} was started by another visitor: you can watch it, but only they can {action} it. "
                        "Start a run of your own (its buttons are yours)")
