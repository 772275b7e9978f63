"""Every action of the lab's pages, as plain functions of JSON-able values.

Each one is both an API endpoint (same name; see README "API") and what a button calls, so a script
driving the lab with gradio_client and a person clicking through it take the same path into `lab`.
What a user got wrong (a bad file, an unknown run, a missing parent) comes back as `gr.Error(message)`:
gradio_client raises it with the message, and the pages show it; anything else is a bug of ours and
keeps its traceback in the server's log.

Training never happens here: `start_run` spawns a job (`lab.jobs.submit`), and `export_run` runs
`llm-lab export` in its own process. The one place the app itself loads models is generation for the
Compare and Feedback pages (`compare`), through `lab.inference` and its memory-bounded cache.
"""

import functools
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from lab import configs, data, demo, distributed, feedback, inference, jobs, labeler, models, runs, stages
from lab.errors import UserError
from lab.runs import Run


def user_errors(fn):
    """Turn the errors a user causes into gr.Error with the engine's message (which says what to do).
    A generator (a streaming endpoint) raises them as it is read, so it is wrapped as one."""

    def translate(e: Exception):
        if isinstance(e, gr.Error):
            return e
        return gr.Error(str(e), print_exception=False) if isinstance(e, UserError) else None

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:
                error = translate(e)
                if error is None:
                    raise
                raise error from None

        return streaming

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            error = translate(e)
            if error is None:
                raise
            raise error from None

    return wrapper


@dataclass
class Caller:
    """Who a page's handler acts for (pages.visitor): read like a gr.Request's username and session_hash."""

    username: str | None = None
    session_hash: str | None = None


def visitor(request: gr.Request | Caller | None) -> str | None:
    """Who is calling: their login where the app has one (auth, a Space's OAuth), else their session (a
    browser tab, or one gradio_client Client). None for calls from this process (tests, the CLI)."""
    if request is None:
        return None
    return getattr(request, "username", None) or getattr(request, "session_hash", None)


def _run(run_id: str) -> Run:
    if not isinstance(run_id, str) or not run_id.strip():
        raise UserError(f"no run given ({run_id!r}): pass a run id (see list_runs)")
    return Run.open(run_id.strip())


def _real(value, name: str) -> float:
    """A number argument, or one line saying it is not one (never a ValueError from deep inside)."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise UserError(f"{name} {value!r} is not a number: give a finite one")
    return number


def _whole(value, name: str, low: int = 0, high: int | None = None) -> int:
    """A whole-number argument within [low, high], checked as config fields are (`lab.configs`)."""
    number = _real(value, name)
    if not number.is_integer():
        raise UserError(f"{name} {value!r} must be a whole number")
    if number < low or (high is not None and number > high):
        raise UserError(f"{name} {value!r} is out of range: it must be " + (f"from {low:,} to {high:,}" if high is not None else f"at least {low:,}"))
    return int(number)


def _config(stage: str, config_json: str):
    module = stages.get(stage)
    try:
        values = json.loads(config_json or "{}")
    except json.JSONDecodeError as e:
        raise UserError(f"config_json is not valid JSON ({e.msg} at column {e.colno}); give an object of config fields, e.g. {{\"max_steps\": 50}}") from None
    if not isinstance(values, dict):
        raise UserError("config_json must be one JSON object of config fields, e.g. {\"max_steps\": 50}")
    return configs.from_dict(module.Config, values, source=f"{stage} config")


# -- runs ---------------------------------------------------------------------------------------------


@user_errors
def list_runs() -> list[dict]:
    """Every run in the store, oldest first: id, stage, name, status, parent, mode (full, lora, lora-8bit, lora-4bit; a pretrain run's preset, a tokenizer's kind), created, error, last and final metrics."""
    jobs.reap()
    return [runs.summary(r) for r in runs.list_runs()]


@user_errors
def run_status(run_id: str) -> dict:
    """A run's status and progress: status, queue_position (1 = next to start), step, max_steps, elapsed, eta (s), tokens_per_second, error."""
    jobs.reap()
    run = _run(run_id)
    status = run.status
    out = runs.progress(run.info, status, run.metrics()[0])
    out["queue_position"] = jobs.queue_position(run) if status == "queued" else None
    return out


@user_errors
def run_metrics(run_id: str, offset: int = 0) -> dict:
    """Rows of a run's metrics.jsonl from byte `offset`: {"rows": [...], "offset": next}. Pass `offset` back to get only new rows."""
    rows, nxt = _run(run_id).metrics(_whole(offset or 0, "offset"))
    return {"rows": rows, "offset": nxt}


@user_errors
def run_samples(run_id: str, offset: int = 0) -> dict:
    """Rows of a run's samples.jsonl (what the model wrote for fixed prompts) from byte `offset`: {"rows": [...], "offset": next}."""
    rows, nxt = runs.read_jsonl_from(_run(run_id).path / "samples.jsonl", _whole(offset or 0, "offset"))
    return {"rows": rows, "offset": nxt}


@user_errors
def run_log(run_id: str, lines: int = 200) -> str:
    """The last `lines` lines of a run's log.txt (the job's stdout and stderr)."""
    path = _run(run_id).path / "log.txt"
    lines = _whole(lines, "lines", 1, 100_000)
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 200 * lines))  # lines of log are rarely longer
        tail = f.read().decode("utf-8", errors="replace")
    return "\n".join(tail.splitlines()[-lines:])


@user_errors
def config_diff(run_a: str, run_b: str) -> list[dict]:
    """The config fields (and stage and parent) where two runs differ: [{"field", "a", "b"}]."""
    a, b = _run(run_a).info, _run(run_b).info
    left = {"stage": a["stage"], "parent": a.get("parent"), **a["config"]}
    right = {"stage": b["stage"], "parent": b.get("parent"), **b["config"]}
    missing = "(not a field)"
    return [{"field": k, "a": left.get(k, missing), "b": right.get(k, missing)} for k in dict.fromkeys([*left, *right]) if left.get(k, missing) != right.get(k, missing)]


# -- actions ------------------------------------------------------------------------------------------


@user_errors
def start_run(stage: str, config_json: str = "{}", request: gr.Request = None) -> str:
    """Queue a run of `stage` with the config fields in `config_json` (a JSON object; missing fields take their defaults). Returns the run id; the job runs in its own process."""
    return jobs.submit(stage, _config(stage, config_json), owner=visitor(request)).id


@user_errors
def stop_run(run_id: str, request: gr.Request = None) -> str:
    """Ask a queued or running job to stop: it saves what it has and ends `stopped`. Returns "stopping", or the status of a run that was not active."""
    run = _run(run_id)
    demo.check_owner(run, visitor(request), "stop")
    return jobs.stop(run, wait=False)


@user_errors
def resume_run(run_id: str, request: gr.Request = None) -> str:
    """Continue a stopped or failed run from its last checkpoint, in place: the same step numbering, optimizer, schedule, data order and random state; returns its own id. A run with no checkpoint (saving off, or killed before its first) continues as a new run from its saved model for the steps it had left (pretrain and full SFT only; returns the new id). A lifecycle carries on in place from its first unfinished step."""
    run = _run(run_id)
    demo.check_owner(run, visitor(request), "resume")
    return jobs.resume(run, owner=visitor(request)).id


@user_errors
def delete_run(run_id: str, with_dependents: bool = False, request: gr.Request = None) -> str:
    """Delete a run's folder. Refused while it, or a run built on it, is active, and while runs depend on it (built on it, or a lifecycle that lists it), naming them, unless with_dependents, which deletes them too. Returns a confirmation."""
    run = _run(run_id)
    for r in [run, *(runs.dependents(run) if with_dependents else [])]:
        demo.check_owner(r, visitor(request), "delete")
    gone = runs.delete(run, with_dependents=bool(with_dependents))
    return f"deleted {run.id}" + (f" and the {len(gone) - 1} run(s) built on it: {', '.join(gone[:-1])}" if len(gone) > 1 else "")


@user_errors
def export_run(run_id: str, request: gr.Request = None) -> str:
    """A standalone model folder of a run, with a LoRA adapter merged into its base (`llm-lab export RUN --merge`). Returns the folder's path."""
    run = _run(run_id)
    demo.check_owner(run, visitor(request), "export")
    # Its own process: merging loads the base model, which the app never does.
    proc = subprocess.run([sys.executable, "-m", "lab", "export", run.id, "--merge"], capture_output=True, text=True, env={**os.environ, "LAB_CHECKPOINTS": str(runs.root())})
    if proc.returncode == 2:  # the CLI's one-line user error
        raise gr.Error(proc.stderr.strip().removeprefix("error: "), print_exception=False)
    if proc.returncode != 0:
        raise RuntimeError(f"llm-lab export {run.id} --merge exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


# -- configs and data ---------------------------------------------------------------------------------


@user_errors
def config_fields(stage: str) -> list[dict]:
    """The config fields of a stage: name, type, default, help, choices, advanced."""
    from typing import get_type_hints

    cls = stages.get(stage).Config
    types = get_type_hints(cls)
    return [{"name": f.name, "type": types[f.name].__name__, "default": f.default, "help": f.metadata.get("help", ""),
             "choices": list(f.metadata.get("choices") or []) or None, "advanced": bool(f.metadata.get("advanced"))} for f in configs.fields(cls)]


@user_errors
def cli_command(stage: str, config_json: str = "{}") -> str:
    """The `llm-lab train` command that runs the same config from a terminal; for several processes, with what it
    launches (and what the other machines run)."""
    config = _config(stage, config_json)
    return configs.cli_command(stage, config) + distributed.explained(config)


# What a preview reads and shows: enough records to count a usual file, the first `n` of them, long texts cut.
PREVIEW_READ, PREVIEW_SHOW, PREVIEW_CHARS = 10_000, 20, 500


def _shorten(value):
    if isinstance(value, str):
        return value if len(value) <= PREVIEW_CHARS else value[:PREVIEW_CHARS] + f"… ({len(value):,} characters)"
    if isinstance(value, dict):
        return {k: _shorten(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v) for v in value]
    return value


@user_errors
def preview_data(stage: str, source: str = "world", n: int = 5, columns: str = "") -> dict:
    """What `stage` reads from `source`, as it will read it: {"source", "format", "detected_from", "how" (how the columns became the lab's records, in words), "records", "more", "bytes", "preview": the first n (at most 20) records, long texts cut}. `records` counts up to 10,000 (`more`: there are more). `source` is "world" (the toy world), "world:SEED", a file or folder path, or a hub id; `columns` maps a file's columns onto the lab's names, e.g. "prompt=question,completion=answer"."""
    source = (source or "world").strip()
    stages.get(stage)  # an unknown stage is named before the data is read
    records, fmt, detected, how = stages.read(stage, source, limit=PREVIEW_READ + 1, columns=columns or "")
    size = None
    if stages.world_of(source) is None:
        path = Path(source).expanduser()
        size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else None
    shown = [_shorten(r) for r in records[: _whole(n, "n", 0, PREVIEW_SHOW)]]
    return {"source": source, "format": fmt, "detected_from": detected, "how": how, "records": min(len(records), PREVIEW_READ),
            "more": len(records) > PREVIEW_READ, "bytes": size, "preview": shown}


def uploads() -> list[str]:
    """Files uploaded through the pages, newest first (kept in the run store, so queued jobs can still read them)."""
    folder = runs.root() / "uploads"
    return [str(p) for p in sorted(folder.glob("*"), reverse=True) if p.is_file()] if folder.is_dir() else []


def keep_upload(temp_path: str) -> str:
    """Copy a file gradio received into the run store's uploads/ and return its lasting path: gradio's own
    copy lives in a cache that is cleaned, and a job may start long after the upload."""
    folder = runs.root() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    name = Path(temp_path).name
    dest = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    shutil.copyfile(temp_path, dest)
    return str(dest)


# -- compare and feedback -----------------------------------------------------------------------------


@user_errors
def compare(models: list[str], prompt: str, temperature: float = 0.7, top_p: float = 0.95, max_new_tokens: int = 64, seed: int = 0,
            mode: str = "auto", reward_model: str = "", histories: list | None = None, distinct_seeds: bool = False) -> Iterator[list[dict]]:
    """Answers of 1–4 models (runs, model folders or hub ids) to one prompt, streamed side by side with the same sampling settings and seed (temperature 0: greedy). Yields the panes as they grow; in the last, each has its `answer`, `tokens`, `seconds`, `ttft`, `tokens_per_second`, `token_probs` (every token's probability and its top-5 alternatives), `reward` (with reward_model, a reward run), `gold` (the toy world's judge, for its prompts), `mode` (mode auto: raw for base models, chat for the rest) and `note`. histories: per model, the turns before this prompt. distinct_seeds: model i samples with seed + i (K different answers of one model)."""
    models = [m for m in (models or []) if m]
    max_new_tokens = _whole(max_new_tokens, "max_new_tokens", 1, 4096)
    demo.check_generation(max_new_tokens)  # the models themselves are checked as they resolve (models.resolve)
    settings = inference.Settings(_real(temperature, "temperature"), _real(top_p, "top_p"), max_new_tokens, _whole(seed, "seed", 0, 2**32 - 1))
    seeds = [int(seed) + i for i in range(len(models))] if distinct_seeds else None
    yield from inference.compare(models, prompt, histories=histories or None, settings=settings, mode=mode or "auto",
                                 reward_model=(reward_model or "").strip() or None, seeds=seeds)


def _prompt_turns(prompt: str, history: list | None) -> list[dict]:
    if not (prompt or "").strip():
        raise UserError("the prompt is empty: give the user's message the answers reply to")
    return inference.check_turns(history) + [{"role": "user", "content": prompt}]


@user_errors
def vote(prompt: str, answers: list[str], best: int, history: list | None = None, dataset: str = "compare", models: list[str] | None = None,
         request: gr.Request = None) -> dict:
    """A best-of-N vote (A/B with two answers): answer `best` (0-based) is preferred to each other answer. Saves those pairs to checkpoints/feedback/<dataset>.jsonl as conversational prompt/chosen/rejected records (prompt: history + the user's prompt), the data the reward and DPO stages take. Returns {"file", "pairs", "rankings", "added", "skipped"}."""
    answers = list(answers or [])
    if len(answers) < 2:
        raise UserError(f"{len(answers)} answer(s): a vote needs at least two answers to prefer one of")
    best = _whole(best, "best", 0, len(answers) - 1)
    ranks = [1 if i == best else 2 for i in range(len(answers))]
    return feedback.add_ranking(dataset, _prompt_turns(prompt, history), answers, ranks, "compare", models or None, owner=visitor(request))


@user_errors
def rank(prompt: str, answers: list[str], ranks: list[int], history: list | None = None, dataset: str = "feedback", model: str = "",
         request: gr.Request = None) -> dict:
    """A ranking of K answers to one prompt: ranks[i] is answer i's rank (1 = best; equal ranks state no preference). Saves every pair it implies (K choose 2 when all ranks differ) to checkpoints/feedback/<dataset>.jsonl. Returns {"file", "pairs", "rankings", "added", "skipped"}."""
    answers = list(answers or [])
    return feedback.add_ranking(dataset, _prompt_turns(prompt, history), answers, list(ranks or []), "feedback", [model] * len(answers) if model else None, owner=visitor(request))


@user_errors
def label_answers(prompt: str, answers: list[str], labels: list, history: list | None = None, dataset: str = "feedback-labels", model: str = "",
                  request: gr.Request = None) -> dict:
    """Thumbs up or down on answers to one prompt: labels[i] is answer i's, "good" or "bad" (also true/false, up/down; null: none given). Saves each labelled answer as KTO's unpaired record (conversational prompt, completion, label) to checkpoints/feedback/<dataset>.jsonl, a dataset of labels only. Returns {"file", "pairs", "labels", "rankings", "added", "skipped"}."""
    answers = list(answers or [])
    given = []
    for i, value in enumerate(labels or []):
        key = value.strip().lower() if isinstance(value, str) else value
        if key in (None, ""):
            given.append(None)
        elif not isinstance(key, (list, dict)) and key in data.LABELS:
            given.append(data.LABELS[key])
        else:
            raise UserError(f"label {i + 1} is {value!r}: give each answer good or bad (also true/false, up/down), or null for none")
    return feedback.add_labels(dataset, _prompt_turns(prompt, history), answers, given, "feedback", model or None, owner=visitor(request))


@user_errors
def ai_rank(prompt: str, answers: list[str], history: list | None = None, dataset: str = "feedback", labeler_model: str = "", model: str = "",
            request: gr.Request = None) -> dict:
    """An AI labeler's ranking (Constitutional AI's feedback): `labeler_model` (a run, folder or hub id of an instruct model) compares every two of `answers` to one prompt under each principle of the store's constitution, by its probabilities of the verdict tokens "A" and "B" in both orders, and saves each verdict as a pair (with `labeled_by`, `principle` and `margin`) to checkpoints/feedback/<dataset>.jsonl. Returns {"file", "pairs", "labels", "rankings", "added", "labeler", "principles", "gold_agreement" (toy-world models: the share of the pairs the gold judge tells apart on which it agrees), "gold_pairs", "human_agreement" (the share of the store's last 200 human pairs where the labeler, under the constitution as a whole, prefers the person's choice; null before anyone ranked), "human_pairs"}."""
    answers = list(dict.fromkeys(a.strip() for a in answers or [] if a and a.strip()))
    if len(answers) < 2:
        raise UserError(f"{len(answers)} different answer(s): the labeler compares two or more; sample answers first")
    if not (labeler_model or "").strip():
        raise UserError("pick the labeler, an instruct model (an SFT run, or a judge trained on the toy world's judging chats), first")
    turns = _prompt_turns(prompt, history)
    feedback.path_of(dataset)  # a bad name is refused before a model loads
    judge = inference.CACHE.get(labeler_model.strip(), "causal")
    world = inference.world_of_model(models.resolve(model)[1]) if model else None
    principles = labeler.constitution()
    labeled = labeler.label(judge, [(turns, answers)], principles, dataset, "feedback", model=model or None, owner=visitor(request), world=world)
    return {**labeled, **labeler.agreement_with_people(judge, principles)}


@user_errors
def constitution() -> str:
    """The store's constitution, one `name: text` line per principle (the toy world's four until one is saved)."""
    return "\n".join(f"{p.name}: {p.text}" for p in labeler.constitution())


@user_errors
def save_constitution(text: str, request: gr.Request = None) -> str:
    """Replace the store's constitution with `text`, one `name: text` line per principle. Returns it as saved. Refused in a public demo, where every visitor shares it."""
    if demo.on():
        raise UserError("in this public demo every visitor shares the constitution, so it cannot be edited here; run the lab yourself to edit it")
    labeler.save_constitution(labeler.parse_constitution(text or ""))
    return constitution()


@user_errors
def feedback_count(dataset: str = "feedback") -> dict:
    """How much a feedback dataset holds: {"file", "pairs", "labels", "rankings"} (pairs, or answers labelled good or bad; all 0 before the first vote)."""
    return feedback.count(dataset)


@user_errors
def undo_feedback(dataset: str = "feedback", request: gr.Request = None) -> dict:
    """Remove the pairs (or labels) of the last ranking, vote or set of thumbs saved to a feedback dataset (in demo mode: your last one). Returns {"file", "pairs", "labels", "rankings", "removed"}."""
    return feedback.undo(dataset, owner=visitor(request) if demo.on() else None)


@user_errors
def lifecycle(run_id: str) -> list[str]:
    """The models of a run's lifecycle, oldest first (base → instruct → aligned), by following parent links: what the Compare page fills its panes with."""
    return inference.lifecycle(_run(run_id).id)


# -- the lifecycle, evaluations, report cards ------------------------------------------------------------


@user_errors
def quickstart(scale: str = "nano", with_stages: str = "", request: gr.Request = None) -> str:
    """Queue the whole lifecycle (tokenizer → pretrain → SFT → reward model → DPO, PPO, and GRPO if `with_stages` is "grpo" → evals → report card) at `scale` ("nano" or "default"). Returns the lifecycle's run id; follow it with lifecycle_progress."""

    return jobs.submit("lifecycle", _config("lifecycle", json.dumps({"scale": scale, "with_stages": with_stages})), owner=visitor(request)).id


@user_errors
def lifecycle_progress(run_id: str) -> dict:
    """Where a lifecycle stands: status, jobs_ahead (while it waits in the queue), each step's run, status and seconds, the current step with its step of total, elapsed and eta (s)."""
    from lab.stages import lifecycle

    return _parent_progress(_run(run_id), "lifecycle", "a lifecycle", lifecycle.progress)


def _parent_progress(run, stage: str, what: str, progress) -> dict:
    """A run made of runs (a lifecycle, an experiment): its `progress`, and how many jobs are ahead of it while it waits."""
    if run.stage != stage:
        raise UserError(f"run {run.id} is a {run.stage} run, not {what}: see run_status")
    jobs.reap()
    out = progress(run)
    out["jobs_ahead"] = jobs.ahead_of(run) if out["status"] == "queued" else None
    return out


@user_errors
def eval_run(run_id: str, against: str = "", reward: str = "", request: gr.Request = None) -> dict:
    """Evaluate a run's model (`llm-lab eval`, in its own process) and return its eval.json: base models' held-out perplexity and bits per byte, chat models' format, fact QA, refusals, gold score and hard set, an aligned model's win rate, KL and fact QA change against `against` (default: its parent), scored by `reward` if given."""
    run = _run(run_id)
    demo.check_owner(run, visitor(request), "evaluate")
    argv = [sys.executable, "-m", "lab", "eval", run.id]
    for flag, ref in (("--against", against), ("--reward", reward)):
        if ref:
            argv += [flag, _run(ref).id]
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "LAB_CHECKPOINTS": str(runs.root())})
    if proc.returncode == 2:  # the CLI's one-line user error
        raise gr.Error(proc.stderr.strip().removeprefix("error: "), print_exception=False)
    if proc.returncode != 0:
        raise RuntimeError(f"llm-lab eval {run.id} failed:\n{proc.stderr[-3000:]}")
    return json.loads((run.path / "eval.json").read_text(encoding="utf-8"))


@user_errors
def report_card(run_id: str) -> dict:
    """A lifecycle's report card: its models (base, instruct, reward model, DPO, PPO) side by side on every evaluation: {"lifecycle", "models", "rows": [{"key", "label", "better", "values"}], "seconds", "summary"}."""
    from lab import evals

    run = _run(run_id)
    if run.stage == "lifecycle" and (run.path / "report.json").is_file():
        return json.loads((run.path / "report.json").read_text(encoding="utf-8"))
    return evals.report_card(run.id)


# -- experiments -------------------------------------------------------------------------------------


@user_errors
def experiments() -> list[dict]:
    """The experiments: [{"name", "question", "runs" (what it trains and measures), "seeds" (its default), "expected_seconds": {"nano", "default"}}]."""
    from lab import experiments as catalogue

    return catalogue.catalogue()


@user_errors
def run_experiment(name: str, scale: str = "nano", seeds: int = 0, request: gr.Request = None) -> str:
    """Queue experiment `name` at `scale` ("nano" or "default") with `seeds` seeds per compared run (0: its own number). Returns its run id; follow it with experiment_result."""
    return jobs.submit("experiment", _config("experiment", json.dumps({"experiment": name, "scale": scale, "seeds": int(seeds or 0)})), owner=visitor(request)).id


@user_errors
def experiment_result(run_id: str) -> dict:
    """Where an experiment stands and what it found: status, each of its runs with its status (shared: made before and reused), elapsed and expected seconds, and once done "result": {"name", "question", "measured", "conclusion", "runs"}."""
    from lab.stages import experiment

    run = _run(run_id)
    return {**_parent_progress(run, "experiment", "an experiment", experiment.progress), "result": experiment.result(run)}


# The longest text `tokenize` cuts: a page of text, not a corpus (that is the tokenizer stage's held-out statistics).
MAX_TOKENIZE_CHARS = 20_000


@user_errors
def tokenize(text: str, tokenizers: list[str]) -> list[dict]:
    """`text` as each of up to 4 tokenizers cuts it: a kind ("bpe", "wordpiece", "unigram": trained on the toy world), a run (a tokenizer run, or any run's model tokenizer), a local folder or a hub id. Returns [{"tokenizer", "tokens": [{"id", "text", "start", "end", "unknown"}], "stats": {"tokens", "chars_per_token", "words_per_token", "tokens_per_word", "vocab_size", "vocab_used", "distinct_tokens", "unknown_rate"}}]."""
    from lab import tokenizers as lab_tokenizers

    if not (text or "").strip():
        raise UserError("no text to tokenize: type or paste some")
    if len(text) > MAX_TOKENIZE_CHARS:
        raise UserError(f"the text has {len(text):,} characters: tokenize at most {MAX_TOKENIZE_CHARS:,} at once")
    names = list(dict.fromkeys(t.strip() for t in (tokenizers or []) if t and t.strip()))
    if not 1 <= len(names) <= 4:
        raise UserError(f"{len(names)} tokenizers: pick 1 to 4 ({', '.join(lab_tokenizers.KINDS)}, a run or a tokenizer folder)")
    return [{"tokenizer": name, **lab_tokenizers.tokenize_view(lab_tokenizers.load(name), text)} for name in names]


# Everything above that an API user may call, by its endpoint name.
ENDPOINTS = {fn.__name__: fn for fn in (
    start_run, stop_run, resume_run, delete_run, export_run, list_runs, run_status, run_metrics, run_samples,
    run_log, config_diff, config_fields, cli_command, preview_data, compare, vote, rank, label_answers, ai_rank, constitution, save_constitution,
    feedback_count, undo_feedback, lifecycle, quickstart, lifecycle_progress, report_card, experiments, run_experiment, experiment_result, tokenize,
)} | {"eval": eval_run}
# Reads are cheap and safe side by side, so many browsers polling at once never queue behind each other;
# actions keep gradio's default of one at a time.
READ_ONLY = ("list_runs", "run_status", "run_metrics", "run_samples", "run_log", "config_diff", "config_fields", "cli_command", "preview_data",
             "feedback_count", "constitution", "lifecycle", "lifecycle_progress", "report_card", "experiments", "experiment_result", "tokenize")
READS = 16  # at once: enough for many polling browsers, not a thread per flood of requests
# Generation runs in the app's own process and takes every core it gets: one request at a time, shared
# with the Compare and Feedback pages' buttons (the same concurrency id), so that two browsers queue
# instead of halving each other's speed.
GENERATION = dict(concurrency_limit=1, concurrency_id="generation")


def register() -> None:
    """Wire every endpoint into the Blocks being built, with a stable api_name."""
    for name, fn in ENDPOINTS.items():
        if name in ("compare", "ai_rank"):  # models run in the app's process
            gr.api(fn, api_name=name, **GENERATION)
        else:
            gr.api(fn, api_name=name, concurrency_limit=READS if name in READ_ONLY else "default")
