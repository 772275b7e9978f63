"""Feedback as preference data: the Compare page's votes, the Feedback page's rankings and an AI labeler's
verdicts (lab.labeler), saved as prompt/chosen/rejected pairs in the run store, which the reward-model and DPO
stages take as data.

    checkpoints/feedback/<name>.jsonl    one pair per line, in TRL's conversational shape:
        {"prompt": [{"role": "user", "content": "..."}, ...], "chosen": [{"role": "assistant", "content": "..."}],
         "rejected": [{"role": "assistant", "content": "..."}], "ranking": "<id>", "source": "compare",
         "labeled_by": "human", ...}
    an AI labeler's pairs (lab.labeler) say which labeler and principle: "labeled_by": "<run or folder>",
    "principle": "polite", "margin": <its log-odds for the chosen answer>
    thumbs up or down on single answers are KTO's unpaired labels, in a dataset of their own (a file mixing
    pairs and labels is refused by `lab.data`):
        {"prompt": [...], "completion": [{"role": "assistant", "content": "..."}], "label": true, "ranking": "<id>", ...}

    llm-lab train reward --parent SFT_RUN --data checkpoints/feedback/feedback.jsonl
    llm-lab train kto --parent SFT_RUN --data checkpoints/feedback/feedback-labels.jsonl

Every record is conversational, even for a one-turn prompt: `lab.data` refuses a file that mixes the two
shapes, and a later prompt with history could only be saved as turns. A ranking of K answers saves every
pair it implies (K choose 2 when no two are ranked equal), all under one ranking id, so undo removes
exactly the last ranking. Writers append under a lock; undo rewrites the file atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from lab import runs
from lab.errors import UserError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HUMAN = "human"  # `labeled_by` of a person's ranking; an AI labeler's pairs name the labeler (lab.labeler)


def folder() -> Path:
    return runs.root() / "feedback"


def path_of(name: str) -> Path:
    name = (name or "").strip().removesuffix(".jsonl")
    if not NAME.fullmatch(name):
        raise UserError(f"dataset name '{name}': use letters, digits, '-', '_' or '.' (up to 64), e.g. feedback or compare-tiny")
    return folder() / f"{name}.jsonl"


def files() -> list[Path]:
    """The feedback datasets in the store, most recently written first."""
    if not folder().is_dir():
        return []
    return sorted((p for p in folder().glob("*.jsonl") if p.stat().st_size), key=lambda p: p.stat().st_mtime, reverse=True)


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _read(path: Path) -> list[dict]:
    return runs.read_jsonl_from(path)[0]


def labels_name(name: str) -> str:
    """The dataset that holds the thumbs given beside the rankings of dataset `name`."""
    return f"{(name or '').strip().removesuffix('.jsonl')}-labels"


def _holds(path: Path) -> str | None:
    """"pairs" or "labels": what a feedback dataset holds (None while it is empty)."""
    rows = _read(path)
    return None if not rows else "labels" if "label" in rows[0] else "pairs"


def _refuse_mixing(path: Path, adding: str) -> None:
    held = _holds(path) if path.exists() else None
    if held not in (None, adding):
        raise UserError(f"{path.name} holds {'answers labelled good or bad' if held == 'labels' else 'preference pairs'}; "
                        f"{'pairs' if adding == 'pairs' else 'labels'} go to a dataset of their own: give another dataset name")


def pairs_of(answers: list[str], ranks: list[int]) -> tuple[list[tuple[int, int]], int]:
    """(better, worse) index pairs a ranking implies (rank 1 = best; equal ranks: no preference), and how
    many pairs were left out because the two answers are the same text or one is empty (no training data
    can say which of two identical answers is better, and an empty turn is refused by the data loader)."""
    pairs, skipped = [], 0
    for i in range(len(answers)):
        for j in range(i + 1, len(answers)):
            if ranks[i] == ranks[j]:
                continue
            better, worse = (i, j) if ranks[i] < ranks[j] else (j, i)
            if not answers[i].strip() or not answers[j].strip() or answers[i].strip() == answers[j].strip():
                skipped += 1
                continue
            pairs.append((better, worse))
    return pairs, skipped


def add_ranking(name: str, prompt: list[dict], answers: list[str], ranks: list[int], source: str,
                models: list[str] | None = None, owner: str | None = None) -> dict:
    """Save the pairs a ranking of `answers` to the conversation `prompt` implies, as `owner`'s (the visitor
    who ranked, where there is one). Returns count(name) with `added` and `skipped`."""
    path_of(name)  # a bad dataset name is refused first
    if len(answers) < 2:
        raise UserError(f"{len(answers)} answer(s): a preference needs at least two")
    if len(ranks) != len(answers):
        raise UserError(f"{len(ranks)} ranks for {len(answers)} answers: give every answer a rank (1 = best)")
    try:
        ranks = [int(r) for r in ranks]
    except (TypeError, ValueError):
        raise UserError(f"ranks {ranks}: give every answer a whole-number rank, 1 = best") from None
    if any(r < 1 for r in ranks):
        raise UserError(f"ranks {ranks}: ranks start at 1 (the best answer)")
    if not prompt or prompt[-1]["role"] != "user":
        raise UserError("the prompt must end with the user's turn that the answers reply to")
    pairs, skipped = pairs_of(answers, ranks)
    if not pairs:
        why = "every answer has the same rank" if len(set(ranks)) == 1 else "the answers ranked apart are identical or empty"
        raise UserError(f"this ranking says nothing to learn from: {why}. Rank a better answer above a worse one (1 = best)")
    records = [{"chosen": answers[better], "rejected": answers[worse],
                **({"chosen_model": models[better], "rejected_model": models[worse]} if models else {})} for better, worse in pairs]
    return {**add_pairs(name, prompt, records, source, labeled_by=HUMAN, owner=owner), "skipped": skipped}


def add_pairs(name: str, prompt: list[dict], pairs: list[dict], source: str, labeled_by: str, model: str | None = None,
              owner: str | None = None) -> dict:
    """Save `pairs` ({"chosen": text, "rejected": text, and what else the labeler records}) of answers to the
    conversation `prompt` as one ranking, labeled by `labeled_by` (HUMAN, or the labeler model's run or path).
    Returns count(name) with `added`."""
    path = path_of(name)
    ranking, now = uuid.uuid4().hex[:12], time.time()
    lines = []
    for pair in pairs:
        chosen, rejected = pair["chosen"].strip(), pair["rejected"].strip()
        record = {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}], "rejected": [{"role": "assistant", "content": rejected}],
                  **{k: v for k, v in pair.items() if k not in ("chosen", "rejected")}, "ranking": ranking, "source": source,
                  "labeled_by": labeled_by, "time": now, **({"chosen_model": model, "rejected_model": model} if model else {}),
                  **({"owner": owner} if owner else {})}
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    _append(path, lines, "pairs")
    return {**count(name), "added": len(pairs)}


def add_labels(name: str, prompt: list[dict], answers: list[str], labels: list[bool | None], source: str, model: str | None = None,
               owner: str | None = None) -> dict:
    """Save a person's thumbs up (True) or down (False) on answers to the conversation `prompt` as KTO's unpaired
    labels, one record per labelled answer (None: no thumb given), under one ranking id, so undo removes them
    together. Returns count(name) with `added` and `skipped` (empty answers, which no loader takes)."""
    path = path_of(name)
    if len(labels) != len(answers):
        raise UserError(f"{len(labels)} labels for {len(answers)} answers: give each answer a thumb up, down, or none")
    if not prompt or prompt[-1]["role"] != "user":
        raise UserError("the prompt must end with the user's turn that the answers reply to")
    given = [(a.strip(), bool(g)) for a, g in zip(answers, labels) if g is not None]
    kept = [(a, g) for a, g in given if a]
    if not kept:
        raise UserError("no answer has a thumb up or down yet: mark at least one answer good (👍) or bad (👎)" if not given
                        else "the answers marked are empty: nothing to learn from")
    ranking, now = uuid.uuid4().hex[:12], time.time()
    lines = [json.dumps({"prompt": prompt, "completion": [{"role": "assistant", "content": a}], "label": g, "ranking": ranking,
                         "source": source, "labeled_by": HUMAN, "time": now, **({"model": model} if model else {}),
                         **({"owner": owner} if owner else {})}, ensure_ascii=False) + "\n" for a, g in kept]
    _append(path, lines, "labels")
    return {**count(name), "added": len(kept), "skipped": len(given) - len(kept)}


def _append(path: Path, lines: list[str], adding: str) -> None:
    with _locked(path):
        _refuse_mixing(path, adding)
        # One write of the whole ranking in append mode: a reader sees all of its pairs or none.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, "".join(lines).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


def human_pairs() -> list[dict]:
    """Every pair a person ranked or voted for, over the store's feedback datasets, oldest first (the pairs saved
    before the labeled_by field existed were all people's)."""
    rows = [r for path in files() for r in _read(path) if r.get("labeled_by", HUMAN) == HUMAN and "chosen" in r]
    return sorted(rows, key=lambda r: r.get("time", 0))


def count(name: str) -> dict:
    """{"file", "pairs", "labels", "rankings"} of a feedback dataset: its preference pairs or its labelled answers
    (a dataset holds one kind), and how many rankings (or sets of thumbs) saved them; all 0 before the first."""
    path = path_of(name)
    rows = _read(path)
    labels = sum("label" in r for r in rows)
    return {"file": str(path), "pairs": len(rows) - labels, "labels": labels, "rankings": len({r.get("ranking") for r in rows})}


def newest(names: list[str], owner: str | None = None) -> str:
    """Of the datasets `names`, the one whose last ranking (with `owner`, the last of theirs) was saved last:
    what an undo beside them takes back (the first name when none holds one)."""
    def last(name):
        rows = [r for r in _read(path_of(name)) if owner is None or r.get("owner") == owner]
        return rows[-1].get("time", 0) if rows else -1
    return max(names, key=last)


def undo(name: str, owner: str | None = None) -> dict:
    """Remove the pairs (or labels) of the last ranking (or vote, or thumbs) saved to a dataset; with `owner`, the last of theirs.
    Returns count(name) with `removed`."""
    path = path_of(name)
    with _locked(path):
        rows = _read(path)
        mine = [r for r in rows if owner is None or r.get("owner") == owner]
        if not mine:
            raise UserError(f"{path.name} has nothing of yours to undo: no ranking saved yet" if owner else f"{path.name} has nothing to undo: no ranking saved yet")
        last = mine[-1].get("ranking")
        kept = [r for r in rows if r.get("ranking") != last]
        if kept:
            runs.atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
        else:  # an empty file is no dataset: the data pickers should not offer it
            path.unlink()
    return {**count(name), "removed": len(rows) - len(kept)}
