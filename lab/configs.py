"""One config dataclass per stage is the single source of truth for the CLI flags, the UI form,
run.json and the "copy CLI command" box. This module turns a config dataclass into each of those.

A field's metadata may carry: `help` (one line), `choices`, `advanced=True` (the UI folds it into an
accordion; the CLI lists it all the same), `order` (where the form and `--help` show it: fields are listed by
order, then as declared, so the fields a stage inherits can stand among its own), `runs` (the field names
a model or tokenizer: the stages whose runs its picker offers, the first stage's newest completed run pre-selected
where the field's default is "" and not advanced: the model a stage builds on), `offers` ((value, label) pairs
its picker offers beside the runs, such as the toy world's gold judge as a reward) and `within` (a number
field's bounds as an interval, each end included with [ ] or not with ( ): "[1, 65536]", "(0, 1]", "[0, inf)").
Every value is checked against its field's type, choices and bounds before a run exists (`from_dict`), so the
CLI, the API and the page's form refuse the same values with the same one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import shlex
from pathlib import Path
from typing import Any, get_type_hints

from lab import errors
from lab.errors import ConfigError

# Where a field stands in the form: what is trained and from what, on which data, for how long, then the
# stage's own knobs; folded away: LoRA, the schedule, the run's housekeeping.
MODEL, DATA, TRAINING, STAGE, LORA, SCHEDULE, RUN, SCALE = 10, 20, 30, 40, 50, 60, 70, 80


def option(default, help: str, choices: tuple | None = None, advanced: bool = False, order: int = STAGE, runs: tuple | None = None,
           offers: tuple = (), within: str = ""):
    if within:
        interval(within)  # a typo in a declaration fails at import, not at the first user's value
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "advanced": advanced, "order": order, "runs": runs,
                                                        "offers": offers, "within": within})


def interval(spec: str) -> tuple[float, bool, float, bool]:
    """'[1, 65536]' -> (low, low excluded, high, high excluded)."""
    m = re.fullmatch(r"\s*([\[(])\s*(-?inf|-?[\d.]+(?:e-?\d+)?)\s*,\s*(inf|-?[\d.]+(?:e-?\d+)?)\s*([\])])\s*", spec)
    if not m:
        raise ValueError(f"bounds {spec!r}: write an interval such as '[1, 1024]', '(0, 1]' or '[0, inf)'")
    return float(m[2]), m[1] == "(", float(m[3]), m[4] == ")"


def _number(x: float) -> str:
    return f"{int(x):,}" if x.is_integer() and abs(x) < 1e15 else f"{x:g}"


def allowed(f: dataclasses.Field) -> str:
    """A number field's bounds in words ("at least 1", "above 0 and at most 1"); "" where it has none."""
    if not f.metadata.get("within"):
        return ""
    low, low_out, high, high_out = interval(f.metadata["within"])
    lower = f"above {_number(low)}" if low_out else f"at least {_number(low)}"
    upper = f"below {_number(high)}" if high_out else f"at most {_number(high)}"
    if math.isinf(high):
        return lower
    if math.isinf(low):
        return upper
    return f"from {_number(low)} to {_number(high)}" if not (low_out or high_out) else f"{lower} and {upper}"


def out_of_bounds(f: dataclasses.Field, value) -> bool:
    low, low_out, high, high_out = interval(f.metadata["within"])
    return value < low or value > high or (low_out and value == low) or (high_out and value == high)


def inherit(cls, name: str, default, **changes):
    """A field of the dataclass `cls` with another default (and, optionally, other metadata): how a stage's
    config overrides a shared field, as TRL's DPOConfig overrides TrainingArguments' learning rate."""
    base = cls.__dataclass_fields__[name]
    return dataclasses.field(default=default, metadata={**base.metadata, **changes})


def fields(cls) -> list[dataclasses.Field]:
    """The fields of a config dataclass in the order the form and the CLI show them."""
    declared = dataclasses.fields(cls)
    return sorted(declared, key=lambda f: f.metadata.get("order", STAGE))


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _types(cls) -> dict[str, type]:
    return get_type_hints(cls)


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field; defaults are left to the dataclass so a flag the user did not type
    never overrides what --config gave."""
    types = _types(cls)
    for f in fields(cls):
        t = types[f.name]
        bounds = f"; {allowed(f)}" if allowed(f) else ""
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": f"{f.metadata.get('help', '')} (default: {f.default!r}{bounds})"}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if t is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = t
            if not f.metadata.get("choices"):  # with choices, argparse shows {a,b,c} instead
                kwargs["metavar"] = f.name.upper()
        parser.add_argument(flag(f.name), dest=f.name, **kwargs)


def _at(source: str) -> str:
    return f"{source}: " if source else ""


def from_dict(cls, values: dict, source: str = "config"):
    """Build `cls` from a dict, naming any key it does not know and any value of the wrong type."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{_at(source)}unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(names))}")
    types = _types(cls)
    clean = {}
    for k, v in values.items():
        t = types[k]
        if t is bool and not isinstance(v, bool):
            raise ConfigError(f"{_at(source)}{errors.flag(k)} must be true or false, got {v!r}")
        # int(20.7) is 20 and int(True) is 1: a number that is not whole, or a yes/no, is refused, not rounded
        if t is int and (isinstance(v, bool) or (isinstance(v, float) and not v.is_integer())):
            raise ConfigError(f"{_at(source)}{errors.flag(k)} must be a whole number, got {v!r}")
        try:
            clean[k] = t(v) if not isinstance(v, t) and not (t is float and isinstance(v, int)) else v
        except (TypeError, ValueError, OverflowError):
            kind = {int: "a whole number", float: "a number", str: "text"}.get(t, t.__name__)
            raise ConfigError(f"{_at(source)}{errors.flag(k)} must be {kind}, got {v!r}") from None
    config = cls(**clean)
    validate(config, source)
    return config


def validate(config, source: str = "config") -> None:
    """Each field's choices and bounds: one line naming the field, the value and what is allowed."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{_at(source)}{errors.flag(f.name)} {value!r} is not one of {', '.join(map(str, choices))}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{_at(source)}{errors.flag(f.name)} {value!r} is not a number: give a finite value" + (f" ({allowed(f)})" if allowed(f) else ""))
        if f.metadata.get("within") and isinstance(value, (int, float)) and out_of_bounds(f, value):
            raise ConfigError(f"{_at(source)}{errors.flag(f.name)} {value!r} is out of range: it must be {allowed(f)}")


def from_args(cls, ns: argparse.Namespace, config_file: str | None = None):
    values: dict = {}
    if config_file:
        path = Path(config_file)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"--config {config_file}: no such file") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config {config_file}: not valid JSON (line {e.lineno}: {e.msg})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"--config {config_file}: must hold one JSON object of config fields")
        values = values.get("config", values)  # a run.json works as a config file too
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(ns).items() if k in names})
    return from_dict(cls, values, source=config_file or "")  # a flag names itself


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def cli_command(stage: str, config) -> str:
    """The `llm-lab train` command that reproduces `config` (fields left at their default are omitted)."""
    parts = ["llm-lab", "train", stage]
    for f in fields(type(config)):
        value = getattr(config, f.name)
        if value == f.default:
            continue
        if isinstance(value, bool):
            parts.append(flag(f.name) if value else "--no-" + f.name.replace("_", "-"))
        else:
            parts += [flag(f.name), str(value)]
    return shlex.join(parts)

