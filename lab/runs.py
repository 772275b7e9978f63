"""The run store: one folder per run under ./checkpoints (or $LAB_CHECKPOINTS).

    checkpoints/<run-id>/
        run.json        id, stage, name, config, parent, status, pid, times, error, final metrics, versions, device
        metrics.jsonl   one JSON object per log event: step, time and the trainer's own keys unchanged
        samples.jsonl   generations logged during training
        log.txt         the job's stdout and stderr
        model/ | adapter/ | tokenizer/   saved with save_pretrained (safetensors)
        trainer/checkpoint-N/   resumable checkpoints (weights, optimizer, schedule, random state), while a
                        run can still be resumed; each counts only once it holds `.complete`, written last

A run's status on disk is what its job last wrote. A job that died without writing (kill -9, OOM, a
power cut) would read "running" for ever, so `Run.status` also checks that the job's process is alive
and reads "failed" when it is not. Every write of run.json and of a model folder is atomic: written
aside, then renamed, so a reader never sees half a file and a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path

from lab import errors
from lab.errors import NotFound, UserError

ACTIVE = ("queued", "running")
# A checkpoint folder is written in place (by transformers' Trainer, or the lab's PPO); this file, written last,
# says it is whole. A kill mid-save leaves a folder without it, which resume ignores and the store clears.
COMPLETE = ".complete"
# What a run id may be: the name of a folder directly inside the store (new_run_dir makes them so).
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


def root() -> Path:
    return Path(os.environ.get("LAB_CHECKPOINTS", "checkpoints")).resolve()


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def atomic_dir(path: Path):
    """Yield a scratch folder that replaces `path` only if the block finishes without error."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _jsonable(obj):
    if is_dataclass(obj):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def process_start(pid: int) -> int | None:
    """The kernel's start time of process `pid` (clock ticks since boot), None where /proc is absent."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid: int | None, start: int | None = None) -> bool:
    """True when `pid` is a live process; with `start` (see process_start), also that it is the same
    process and not a later one that reused the pid."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie (dead, not yet reaped by its parent) still answers kill(0).
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
    except (OSError, IndexError):
        pass
    return start is None or process_start(pid) in (None, start)


def new_run_dir(stage: str, name: str | None = None) -> Path:
    """Make and return a fresh run folder named <time>-<name>; mkdir is the arbiter when two
    processes pick the same name in the same second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", name or stage).strip("-").lower()[:40] or stage
    root().mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = root() / (f"{stamp}-{slug}" if n == 1 else f"{stamp}-{slug}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run folder in {root()}")


class Run:
    """A handle on one run folder. Cheap to create; reads run.json on demand."""

    writes = True  # False: a ReadOnlyRun

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.id = self.path.name

    # -- creation and lookup -------------------------------------------------------------------
    @classmethod
    def create(cls, stage: str, config, name: str | None = None, parent: str | None = None) -> Run:
        from lab import __version__

        path = new_run_dir(stage, name)
        rid = path.name
        run = cls(path)
        run._write(
            {
                "id": rid,
                "stage": stage,
                "name": name or rid,
                "config": _jsonable(config),
                "parent": parent,
                "status": "queued",
                "pid": None,
                "created": time.time(),
                "started": None,
                "ended": None,
                "error": None,
                "final_metrics": {},
                "versions": {"lab": __version__},
                "device": None,
            }
        )
        return run

    @classmethod
    def open(cls, ref: str, prefix: bool = False) -> Run:
        """A run of the store by its exact id, or with prefix=True (the CLI's shortcut for commands that only
        read) by a unique start of it. Never a path, never a match on the end of an id: whatever a caller
        names, the run found lies inside the store."""
        ref = str(ref or "").strip()
        if not RUN_ID.fullmatch(ref):
            raise NotFound(f"'{ref[:80]}' is not a run id (letters, digits, '-', '_' and '.'; no paths): see {errors.hint(cli='llm-lab runs', page='the Runs page')}")
        path = root() / ref
        if in_store(path):
            return cls(path)
        if prefix:
            hits = [r for r in list_runs() if r.id.startswith(ref)]
            if len(hits) == 1:
                return hits[0]
            if hits:
                raise NotFound(f"run '{ref}' is ambiguous: {', '.join(r.id for r in hits[:5])}{' …' if len(hits) > 5 else ''}; give more of the id")
        raise NotFound(f"no run '{ref}' in {root()} (see {errors.hint(cli='llm-lab runs', page='the Runs page')}; set LAB_CHECKPOINTS to use another store)")

    # -- run.json ------------------------------------------------------------------------------
    @property
    def info(self) -> dict:
        for _ in range(5):  # a rename can race a read on some filesystems; retry briefly
            try:
                return json.loads((self.path / "run.json").read_text(encoding="utf-8"))
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.02)
        return json.loads((self.path / "run.json").read_text(encoding="utf-8"))

    def _write(self, info: dict) -> None:
        atomic_write_text(self.path / "run.json", json.dumps(info, indent=2, default=_jsonable) + "\n")

    def update(self, **fields) -> dict:
        # The job and the process that launched or stops it both write run.json: serialise the
        # read-modify-write so that neither loses the other's fields.
        with open(self.path / ".run.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            info = self.info
            info.update({k: _jsonable(v) for k, v in fields.items()})
            self._write(info)
        return info

    @property
    def stage(self) -> str:
        return self.info["stage"]

    @property
    def config(self) -> dict:
        return self.info["config"]

    @property
    def parent(self) -> str | None:
        return self.info.get("parent")

    @property
    def status(self) -> str:
        """Status as written, except that an active run whose process is gone reads "stopped" when it had been
        asked to stop (it died of the signal, or was killed after its grace), else "failed", and what the
        dead job left half-made is cleared (`clear_leftovers`)."""
        info = self.info
        if info["status"] in ACTIVE and info.get("pid") and not self.alive(info):
            # Re-read: the job may have written its final status between the two reads.
            info = self.info
            if info["status"] in ACTIVE and not self.alive(info):
                self.clear_leftovers()
                if info.get("stop_requested"):
                    self.update(status="stopped", ended=time.time(), error=info.get("error") or "stopped before it could save")
                    return "stopped"
                peak = f"; its memory peaked at {info['peak_memory_mb'] / 1024:.1f} GiB" if info.get("peak_memory_mb") else ""
                self.update(status="failed", ended=time.time(), error=info.get("error") or (
                    f"the job's process ended without reporting: killed by the system (out of memory?) or by a kill -9{peak}; see log.txt"))
                return "failed"
        return info["status"]

    def clear_leftovers(self) -> None:
        """What a job killed mid-way leaves: half-written folders (`atomic_dir`'s .NAME.partial) and the
        trainer's scratch folder go; a model moved aside (.NAME.old) for its replacement is put back if the
        replacement never arrived."""
        for tmp in self.path.glob(".*.partial"):
            shutil.rmtree(tmp, ignore_errors=True)
        for old in self.path.glob(".*.old"):
            kept = old.with_name(old.name[1:-len(".old")])
            if kept.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(old, kept)
        trainer = self.path / "trainer"
        kept = {folder for _, folder in self.checkpoints()}
        for leftover in trainer.glob("*") if trainer.is_dir() else ():
            if leftover not in kept:
                shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        if not kept:
            shutil.rmtree(trainer, ignore_errors=True)

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, Path]]:
        """The run's whole resumable checkpoints, oldest first, as (step, folder)."""
        found = []
        for folder in (self.path / "trainer").glob("checkpoint-*"):
            step = folder.name.removeprefix("checkpoint-")
            if step.isdigit() and (folder / COMPLETE).is_file():
                found.append((int(step), folder))
        return sorted(found)

    def last_checkpoint(self) -> tuple[int, Path] | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def keep_checkpoints(self, keep: int) -> None:
        """The newest `keep` whole checkpoints stay; older ones and half-written ones go. Called after each save,
        so a new checkpoint is whole before an older one is removed."""
        whole = self.checkpoints()
        for _, folder in whole[: max(0, len(whole) - keep)]:
            shutil.rmtree(folder, ignore_errors=True)
        newest = whole[-1][0] if whole else -1
        for folder in (self.path / "trainer").glob("checkpoint-*"):
            step = folder.name.removeprefix("checkpoint-")
            if not (folder / COMPLETE).is_file() and step.isdigit() and int(step) < newest:
                shutil.rmtree(folder, ignore_errors=True)

    def record_checkpoint(self, folder: Path, seconds: float) -> None:
        """What checkpoints cost the run so far, in run.json: how many, the seconds spent writing them, the size of one."""
        cost = self.info.get("checkpoints") or {"saved": 0, "seconds": 0.0}
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        self.update(checkpoints={"saved": cost["saved"] + 1, "seconds": round(cost["seconds"] + seconds, 3), "mb": round(size / 2**20, 1)})

    def rewind(self, step: int) -> None:
        """metrics.jsonl and samples.jsonl as they stood when the checkpoint of `step` was saved, for a job that
        resumes from it and logs the later steps again: rows past `step` go, and so do the end-of-run
        evaluations (`eval/` keys) logged at it, which come after the save. Each file is replaced atomically."""
        for name in ("metrics.jsonl", "samples.jsonl"):
            path = self.path / name
            if not path.exists():
                continue
            rows, _ = read_jsonl_from(path)
            kept = [r for r in rows if r.get("step", 0) < step or (r.get("step", 0) == step and not any(k.startswith("eval/") for k in r))]
            atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in kept))

    def queue_again(self, step: int | None = None, **fields) -> dict:
        """Queue a stopped or failed run again, to go on in place (a run from its checkpoint of `step`, a
        lifecycle or experiment from its first unfinished step). What it ran so far goes into `resumes` (`ran`),
        since its next start begins a new stretch: `seconds` adds them up."""
        info = self.info
        ran = round(info["ended"] - info["started"], 1) if info.get("started") and info.get("ended") else None
        resume = {"time": time.time(), "after": info["status"], "ran": ran, **({"step": step} if step is not None else {})}
        return self.update(status="queued", pid=None, pid_start=None, started_by_queue=False, started=None, ended=None, error=None,
                           stop_requested=None, resumes=[*info.get("resumes", []), resume], **fields)

    def alive(self, info: dict | None = None) -> bool:
        """Whether this run's job process lives."""
        info = info or self.info
        return pid_alive(info.get("pid"), info.get("pid_start"))

    # -- streams -------------------------------------------------------------------------------
    def log_metrics(self, row: dict) -> None:
        """One row of metrics.jsonl, strict JSON: a value that is not finite (a diverged loss) is written as
        null; the run's error says what diverged."""
        row = {"step": row.get("step", 0), "time": row.get("time", time.time()), **row}
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({k: finite(v) for k, v in row.items()}, allow_nan=False) + "\n")
            f.flush()

    def log_sample(self, row: dict) -> None:
        with open(self.path / "samples.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def metrics(self, start: int = 0) -> tuple[list[dict], int]:
        """Rows of metrics.jsonl from byte offset `start`, and the offset to pass next time,
        so that a page polling every second reads only what is new."""
        return read_jsonl_from(self.path / "metrics.jsonl", start)

    def last_metrics(self) -> dict:
        """The latest value of every key logged so far."""
        last: dict = {}
        for row in self.metrics()[0]:
            last.update(row)
        return last

    # -- artefacts -----------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path | None:
        for name in ("model", "adapter", "tokenizer"):
            if (self.path / name).is_dir():
                return self.path / name
        return None

    def __repr__(self) -> str:
        return f"Run({self.id!r})"


class ReadOnlyRun(Run):
    """A run as the ranks other than 0 of a multi-process job hold it (lab.distributed): they read it, and rank 0
    alone writes its run.json, metrics, samples, checkpoints' bookkeeping and model."""

    writes = False

    def update(self, **fields) -> dict:
        return self.info

    def log_metrics(self, row: dict) -> None:
        pass

    def log_sample(self, row: dict) -> None:
        pass

    def keep_checkpoints(self, keep: int) -> None:
        pass

    def clear_leftovers(self) -> None:
        pass

    def rewind(self, step: int) -> None:
        pass


def mode_of(info: dict) -> str:
    """How a run trains, from its run.json: full, lora, lora-8bit or lora-4bit; a pretrain run's preset, a
    tokenizer's kind ("" for a lifecycle)."""
    config = info.get("config") or {}
    return str(config.get("mode") or config.get("preset") or config.get("kind") or "")


def summary(run: Run) -> dict:
    """A run as `llm-lab runs --json` and the API's list_runs show it."""
    status = run.status
    info = run.info  # after the status: reading it may have written the error of a job found dead
    return {
        "id": run.id,
        "stage": info["stage"],
        "name": info["name"],
        "status": status,
        "parent": info.get("parent"),
        "mode": mode_of(info),
        "created": info["created"],
        "error": info.get("error") if status == "failed" else None,
        "last_metrics": {k: v for k, v in run.last_metrics().items() if k != "time"},
        "final_metrics": info.get("final_metrics") or {},
    }


def progress(info: dict, status: str, rows: list[dict]) -> dict:
    """Where a run stands, from its run.json and its metrics rows: step of total, elapsed, ETA, tokens/s."""
    now = time.time()
    step = max((r.get("step", 0) for r in rows), default=0)
    total = info["config"].get("max_steps") or 0
    started, ended = info.get("started"), info.get("ended")
    elapsed = ((ended or now) - started) if started else None
    # The trainer's own clock (`elapsed` in its rows) starts after the model and data are loaded, so
    # the rate it gives is the training rate, not the start-up's.
    clock = next((r["elapsed"] for r in reversed(rows) if "elapsed" in r), None)
    eta = clock / step * (total - step) if status == "running" and clock and step and total > step else None
    tps = next((r["tokens_per_second"] for r in reversed(rows) if "tokens_per_second" in r), None)
    return {
        "id": info["id"], "stage": info["stage"], "name": info.get("name"), "status": status, "parent": info.get("parent"),
        "step": step, "max_steps": total or None, "elapsed": elapsed, "eta": eta, "tokens_per_second": tps,
        "error": info.get("error") if status in ("failed", "stopped") else None,
        "final_metrics": info.get("final_metrics") or {},
    }


def seconds(info: dict, now: float | None = None) -> float | None:
    """How long a run has run: its last stretch (to `now` or the clock while it runs) and every stretch before a
    resume or a continue (`Run.queue_again`); None when it never started."""
    before = [r["ran"] for r in info.get("resumes") or [] if r.get("ran")]
    started = info.get("started")
    if not started and not before:
        return None
    last = ((info.get("ended") or now or time.time()) - started) if started else 0.0
    return round(last + sum(before), 1)


def lineage(run: Run) -> list[Run]:
    """The chain of parent runs from the first ancestor the store still has down to `run`, oldest first."""
    chain, seen = [run], {run.id}
    while True:
        parent = chain[0].parent
        if not parent or parent in seen:
            return chain
        try:
            chain.insert(0, Run.open(parent))
        except LookupError:  # deleted: the chain starts after it
            return chain
        seen.add(parent)


def finite(value):
    """A metric as strict JSON takes it: tensors and numpy scalars as floats, NaN and infinities as None."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    number = float(value)
    return number if math.isfinite(number) else None


def read_jsonl_from(path: Path, start: int = 0) -> tuple[list[dict], int]:
    """The complete rows of a JSON-lines file from byte `start` (0, or an offset a previous read returned)."""
    if start < 0:
        raise UserError(f"offset {start} is negative: pass 0, or the offset a previous read returned")
    if not path.exists():
        if start:
            raise UserError(f"offset {start}: {path.name} is empty; pass 0")
        return [], start
    rows = []
    with open(path, "rb") as f:
        if start:
            f.seek(start - 1)
            before = f.read(1)
            if before != b"\n":  # past the end, or inside a row
                raise UserError(f"offset {start} is not where a row of {path.name} starts ({path.stat().st_size:,} bytes): pass 0, or the offset a previous read returned")
        data = f.read()
    # Only complete lines: a writer may be half-way through the last one.
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows, start + end


def dependents(run: Run) -> list[Run]:
    """The runs that would lose something if `run` went: those built on it, at any depth of parent links,
    and the lifecycles that list it (or one of those) as a step. Oldest first."""
    out, frontier = {}, {run.id}
    others = [r for r in list_runs() if r.id != run.id]
    while frontier:
        found = []
        for r in others:
            try:
                info = r.info
            except FileNotFoundError:  # deleted while we looked
                continue
            steps = {s.get("run") for s in (info.get("steps") or {}).values()}
            if r.id not in out and (info.get("parent") in frontier or steps & frontier):
                found.append(r)
        out.update((r.id, r) for r in found)
        frontier = {r.id for r in found}
    return sorted(out.values(), key=lambda r: r.id)


def named(run: Run) -> str:
    """A run as a message lists it: its id, stage and name (when the name says more than the id)."""
    info = run.info
    return f"{run.id} ({info['stage']}" + (f", '{info['name']}'" if info.get("name") and info["name"] not in run.id else "") + ")"


def delete(run: Run, with_dependents: bool = False) -> list[str]:
    """Remove a run's folder, or refuse with the runs that depend on it named (a LoRA run whose base is gone
    cannot load, a lineage would name a run that is not there); `with_dependents` removes them too, newest
    first. Refused while any of them is active. Each folder is renamed aside first, so the run leaves the store
    at once and an interrupted delete never leaves half a run behind. Returns the ids deleted."""
    built_on = dependents(run)
    busy = [r for r in [run, *built_on] if r.status in ACTIVE]
    if busy:
        raise UserError(f"{', '.join(named(r) for r in busy)} {'is' if len(busy) == 1 else 'are'} active: stop "
                        f"{'it' if len(busy) == 1 else 'them'} first ({errors.hint(cli='llm-lab stop RUN', page='the Stop button')}), then delete")
    if built_on and not with_dependents:
        raise UserError(f"run {run.id} has {len(built_on)} run(s) built on it: {', '.join(named(r) for r in built_on)}. Delete those "
                        f"first, or delete them with it ({errors.hint(cli='--with-dependents', page='Delete it and its dependents')})")
    gone = []
    for r in [*reversed(built_on), run]:
        trash = r.path.with_name(f".deleted-{r.id}-{os.getpid()}")
        os.replace(r.path, trash)
        (trash / "run.json").unlink(missing_ok=True)  # no longer a run, even if the rmtree below is cut short
        shutil.rmtree(trash, ignore_errors=True)
        gone.append(r.id)
    return gone


def in_store(folder: Path) -> bool:
    """Whether `folder` is a run folder directly inside the store, once links are resolved: a run of the store."""
    return (folder / "run.json").is_file() and folder.resolve().parent == root()


def list_runs() -> list[Run]:
    if not root().exists():
        return []
    runs = [Run(p.parent) for p in root().glob("*/run.json") if RUN_ID.fullmatch(p.parent.name) and in_store(p.parent)]
    return sorted(runs, key=lambda r: r.id)

