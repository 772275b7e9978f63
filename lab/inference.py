"""Inference for the Compare and Feedback pages: a cache of loaded models, streaming generation of several
models at once with the same sampling settings and seed, each generated token's probability with its
top-5 alternatives, and the scores of an answer (a reward model's, and the toy world's gold judge's).

    from lab import inference
    for panes in inference.compare(["BASE_RUN", "SFT_RUN", "DPO_RUN"], "What is the capital of Zorbia?",
                                   settings=inference.Settings(temperature=0.7, seed=0), reward_model="REWARD_RUN"):
        print([p["answer"] for p in panes])       # partial answers as they stream; the last yield has the scores

Models are what `lab.models.resolve` understands (a run, a model folder, a hub id): a run's `model/`, or its
LoRA `adapter/` on the base its adapter_config names (merged in memory, for speed). A base model (a
pretrain run, or a tokenizer with no chat template) continues the text raw; the others answer through
their chat template; either can be forced.

Panes generate side by side in threads, each with `model.generate` and a streamer that pushes its text to
one queue, so the caller reads every pane's progress from one generator. Sampling draws from each pane's
own random generator, so a seed gives the same answer whether the model runs alone or next to others.
While a training job runs on the GPU, generation moves to the CPU (with a note): a second process
allocating on that GPU could run the job out of memory.
"""

from __future__ import annotations

import gc
import os
import queue
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TemperatureLogitsWarper, TextStreamer, TopPLogitsWarper

from lab import evals, models, runs, stages
from lab.errors import NotFound, UserError, hint
from lab.runs import Run
from lab.tokenizers import stop_ids

MODES = ("auto", "chat", "raw")
MAX_PANES = 4
TOP_K = 5


@dataclass
class Settings:
    """What every pane samples with: the same for all, so that answers differ only by model."""

    temperature: float = 0.7  # 0: greedy
    top_p: float = 0.95
    max_new_tokens: int = 64
    seed: int = 0

    def check(self) -> Settings:
        if not 0 <= self.temperature <= 5:
            raise UserError(f"temperature {self.temperature}: use 0 (greedy) to 5; 0.7 is a usual start")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top-p {self.top_p}: use a share above 0 and at most 1 (1: no cut)")
        if not 1 <= int(self.max_new_tokens) <= 4096:
            raise UserError(f"max new tokens {self.max_new_tokens}: use 1 to 4096")
        return self


# -- which device ---------------------------------------------------------------------------------------


def gpu_jobs() -> list[str]:
    """Runs training on a GPU right now: running, with a recorded device that is not the CPU or MPS (or with
    none recorded yet, and a config that will take a GPU when one is there)."""
    busy = []
    for run in runs.list_runs():
        try:
            info = run.info
            if info["status"] != "running" or run.status != "running":
                continue
        except FileNotFoundError:  # deleted while we listed
            continue
        device = info.get("device") or ""
        wants_gpu = str(info["config"].get("device", "auto")).startswith(("auto", "cuda"))
        if (device and not device.startswith(("cpu", "mps"))) or (not device and wants_gpu):
            busy.append(run.id)
    return busy


def pick_device(preference: str = "auto", cuda: bool | None = None) -> tuple[str, str | None]:
    """(device, note) for generation: the GPU when there is one and no training job holds it, else the CPU
    with a note saying why. `cuda` overrides whether a GPU is visible (for tests)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if preference == "cpu":
        return "cpu", None
    if not cuda:
        return models.pick_device(preference), None
    busy = gpu_jobs()
    if busy:
        if preference.startswith("cuda"):
            raise UserError(f"training job {busy[0]} is using the GPU: generate on the CPU (device auto or cpu), or wait until it ends")
        return "cpu", f"generated on the CPU, slower: training job {busy[0]} is using the GPU, and a second process on it could run that job out of memory"
    return "cuda", None


# -- loading, and the cache -----------------------------------------------------------------------------


@dataclass
class Loaded:
    """A model ready to generate (kind "causal") or to score (kind "reward")."""

    ref: str
    path: str
    run: str | None
    stage: str | None
    kind: str
    device: str
    model: object
    tokenizer: object
    bytes: int

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def default_budget_mb() -> float:
    """LAB_INFERENCE_MEMORY_MB, else a quarter of the machine's memory: the rest is the training jobs' and
    the app's."""
    if os.environ.get("LAB_INFERENCE_MEMORY_MB"):
        return float(os.environ["LAB_INFERENCE_MEMORY_MB"])
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return total / 4 / 2**20


def _weights_size(path: str) -> int:
    """Bytes of a model's weight files on disk (an adapter's base included): what loading it will take, about."""
    folder = Path(path)
    if not folder.is_dir():
        return 0
    size = sum(p.stat().st_size for pattern in ("*.safetensors", "*.bin") for p in folder.glob(pattern))
    base = _adapter_base(folder)
    return size + (_weights_size(base) if base else 0)


def _adapter_base(folder: Path) -> str | None:
    config = folder / "adapter_config.json"
    if not config.exists():
        return None
    import json

    return json.loads(config.read_text()).get("base_model_name_or_path")


def _check_kind(ref: str, path: str, run_id: str | None, kind: str) -> str | None:
    """Refuse a model of the wrong kind before loading it; returns the run's stage."""
    import json

    stage = None
    if run_id:
        info = Run.open(run_id).info
        stage = info["stage"]
        made = stages.produces(stage)
        if made == "tokenizer":
            raise UserError(f"run {run_id} is a tokenizer run: it has no model to {'score' if kind == 'reward' else 'write'} with; pick a pretrain, SFT or aligned run")
        if kind == "causal" and made == "reward":
            raise UserError(f"run {run_id} is a reward model: it scores answers but writes none; pick it as the reward model instead")
        if kind == "reward" and made != "reward":
            raise UserError(f"run {run_id} is a {stage} run, not a reward model: train one ({hint(cli='llm-lab train reward --parent SFT_RUN', page='Align → Reward model')})")
        if info["config"].get("objective") == "mlm":
            raise UserError(f"run {run_id} is a masked-LM encoder: it fills in blanks but cannot write text; pick a causal LM (objective clm)")
        return stage
    config = Path(path) / "config.json"
    if config.exists():
        architectures = " ".join(json.loads(config.read_text()).get("architectures") or [])
        if kind == "causal" and "ForSequenceClassification" in architectures:
            raise UserError(f"{ref} is a sequence classifier (a reward model?): it writes no text; pick it as the reward model instead")
        if kind == "causal" and "ForMaskedLM" in architectures:
            raise UserError(f"{ref} is a masked-LM encoder: it cannot write text; pick a causal LM")
        if kind == "reward" and "ForSequenceClassification" not in architectures:
            raise UserError(f"{ref} is not a reward model (its architectures: {architectures or 'none'}); pick a reward run or a sequence-classification folder")
    return stage


def load(ref: str, kind: str = "causal", device: str = "cpu") -> Loaded:
    """A run's model (or a folder's), ready to generate (kind "causal") or to score (kind "reward"): an adapter merged in memory."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    path, run_id = models.resolve(ref)
    stage = _check_kind(ref, path, run_id, kind)
    auto = AutoModelForSequenceClassification if kind == "reward" else AutoModelForCausalLM
    dtype = torch.bfloat16 if models.use_bf16(device) else torch.float32
    base = _adapter_base(Path(path))
    if base and base.startswith("/") and not Path(base).exists():
        # The base was deleted: a standalone copy (an export's merged/, or the merge a later stage made) still loads.
        folders = (Path(path).parent / "merged", Path(path).with_name(Path(path).name + "-merged"))
        standalone = next((d for d in folders if (d / "config.json").is_file()), None)
        if standalone is None:
            raise NotFound(f"{ref}: the adapter's base model {base} is gone (deleted?) and the run has no merged export; retrain it")
        path, base = str(standalone), None
    tokenizer = models.load_pretrained(AutoTokenizer, path)
    if base:
        from peft import PeftModel

        model = models.load_pretrained(auto, base, dtype=dtype)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # the chat tokens SFT added to a hub base
            model.resize_token_embeddings(len(tokenizer))
        # Merged in memory: generation then runs at the base model's speed, with no adapter layers.
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    else:
        model = models.load_pretrained(auto, path, dtype=dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id  # a reward model finds each chat's last token by it
    model.to(device).eval()
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return Loaded(ref, path, run_id, stage, kind, device, model, tokenizer, size)


class ModelCache:
    """Loaded models, least recently used first out, under a memory budget (MiB; see default_budget_mb).
    Keyed by the resolved path, so a run named by id or by folder is loaded once. The model just asked for
    always stays, even alone over the budget: the budget decides what else may stay resident."""

    def __init__(self, budget_mb: float | None = None):
        self.budget = int((default_budget_mb() if budget_mb is None else budget_mb) * 2**20)
        self._entries: OrderedDict[tuple, Loaded] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return sum(e.bytes for e in self._entries.values())

    def keys(self) -> list[tuple]:
        return list(self._entries)

    def get(self, ref: str, kind: str = "causal", device: str = "cpu") -> Loaded:
        path, _ = models.resolve(ref)
        key = (str(Path(path).resolve()) if Path(path).exists() else path, kind, device)
        # One lock for lookups and loads: two panes asking for the same model load it once.
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            self._evict(reserve=_weights_size(path))  # make room before loading, not after
            loaded = load(ref, kind, device)
            self._entries[key] = loaded
            self._evict(keep=1)
            return loaded

    def _evict(self, reserve: int = 0, keep: int = 0) -> None:
        evicted = False
        while len(self._entries) > keep and self.used + reserve > self.budget:
            self._entries.popitem(last=False)
            evicted = True
        if evicted:  # a pane still generating keeps its model alive; the others' memory goes back now
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            gc.collect()


CACHE = ModelCache()


# -- what a pane says -----------------------------------------------------------------------------------


def choose_mode(stage: str | None, has_chat_template: bool, asked: str = "auto", name: str = "the model") -> str:
    """"chat" or "raw". auto: raw for a base model (a pretrain run, or a tokenizer with no chat template),
    chat for the rest. The lab's pretrain runs carry a chat template they were never tuned on, so the
    stage decides for runs, the template for folders and hub models."""
    if asked not in MODES:
        raise UserError(f"mode '{asked}': use one of {', '.join(MODES)}")
    if asked == "chat" and not has_chat_template:
        raise UserError(f"{name} has no chat template: it is a base model that continues text; use mode raw (or auto)")
    if asked != "auto":
        return asked
    return "raw" if (stage and stages.produces(stage) == "base") or not has_chat_template else "chat"


def check_turns(turns, what: str = "history") -> list[dict]:
    """A conversation as plain {"role", "content"} turns, or a readable error."""
    if turns is None:
        return []
    if not isinstance(turns, list):
        raise UserError(f"{what} must be a list of turns like [{{\"role\": \"user\", \"content\": \"...\"}}, {{\"role\": \"assistant\", \"content\": \"...\"}}]")
    out = []
    for i, t in enumerate(turns):
        if not (isinstance(t, dict) and t.get("role") in ("system", "user", "assistant") and isinstance(t.get("content"), str)):
            raise UserError(f"{what}[{i}] must be {{\"role\": \"system\" | \"user\" | \"assistant\", \"content\": \"text\"}}, found {str(t)[:80]}")
        out.append({"role": t["role"], "content": t["content"]})
    return out


def world_of_model(run_id: str | None):
    """The toy world a model learnt: the newest toy-world `data` along its run's lineage ("world:3" → seed 3),
    so a model trained on another seed is judged by its own world's facts; the default world otherwise."""
    from lab.world import build_world

    world = None
    if run_id:
        try:
            world = stages.world_of_lineage(Run.open(run_id))
        except LookupError:
            pass
    return world or build_world()


def gold_score(turns: list[dict], answer: str, world=None) -> tuple[float | None, dict]:
    """The toy world's gold judge on an answer to the conversation's last user turn: (score, breakdown),
    or (None, {}) when the prompt is none of the world's. The judge scores any text, but for a prompt it does
    not know it can only weigh politeness and length, which is no ground truth: only a verdict on
    correctness (a fact, a task) or on refusing a harmful request is shown as a gold score."""
    judgement = (world or world_of_model(None)).judge(turns, answer)
    if not {"correct", "refuses_harmful"} & set(judgement.breakdown):
        return None, {}
    return judgement.score, judgement.breakdown


def reward_score(scorer: Loaded, turns: list[dict], answer: str) -> float:
    """The reward model's score of the whole chat, rendered as the reward trainer saw it."""
    chat = turns + [{"role": "assistant", "content": answer}]
    if not scorer.has_chat_template:
        raise UserError(f"reward model {scorer.ref} has no chat template to render the answer with")
    return evals.reward_scores(scorer.model, scorer.tokenizer, [chat])[0]


class _TokenProbabilities(LogitsProcessor):
    """The model's own distribution over each next token (before temperature and top-p): its top-k at every
    step, and the probability of the token that was then picked, read at the following step (or at the end)."""

    def __init__(self, k: int = TOP_K):
        self.k, self.top, self.chosen, self._last = k, [], [], None

    def __call__(self, input_ids, scores):
        if self._last is not None:
            self.chosen.append(self._last[input_ids[0, -1]].item())
        probs = scores[0].float().softmax(-1)
        values, ids = probs.topk(min(self.k, probs.shape[-1]))
        self.top.append(list(zip(ids.tolist(), values.tolist())))
        self._last = probs
        return scores

    def finish(self, last_token: int) -> None:
        if self._last is not None and len(self.chosen) < len(self.top):
            self.chosen.append(self._last[last_token].item())


class _SeededDraw(LogitsProcessor):
    """Sampling from the pane's own random generator. `generate`'s sampling draws from torch's global one,
    which panes generating at once in threads share, so a seed would not give the same answer alone and side
    by side. Greedy decoding over the warped scores plus Gumbel noise is an exact sample of softmax(scores)
    (the Gumbel-max trick), with the noise from a generator of our own."""

    def __init__(self, seed: int, device: str):
        self.generator = torch.Generator(device=device).manual_seed(int(seed))

    def __call__(self, input_ids, scores):
        u = torch.rand(scores.shape, generator=self.generator, device=scores.device).clamp_(1e-20, 1.0)
        return scores - torch.log(-torch.log(u))


class _Cancelled(StoppingCriteria):
    """Ends a pane's generation when its reader is gone (a closed page, a cancelled request)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _PaneStreamer(TextStreamer):
    """transformers' streamer, pushing one pane's decoded text to the queue every pane shares, and noting
    when its first token came."""

    def __init__(self, tokenizer, pane: int, events: queue.Queue):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.pane, self.events, self.first_token_at = pane, events, None

    def put(self, value):
        if not self.next_tokens_are_prompt and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False):
        if text:
            self.events.put((self.pane, "text", text))


def _stop_ids(loaded: Loaded, mode: str) -> list[int]:
    # the end of the assistant's turn only in chat mode: raw text may hold the token and go on
    return stop_ids(loaded.tokenizer, loaded.model.generation_config.eos_token_id, end_of_turn=mode == "chat")


def _inputs(loaded: Loaded, turns: list[dict], mode: str, max_new_tokens: int) -> tuple[dict, str | None]:
    """The token ids a pane starts from, cut from the left to fit the model's context; and a note if cut."""
    tokenizer = loaded.tokenizer
    if mode == "chat":
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]  # the template holds the bos
    else:  # a base model has no turns: it continues the latest prompt, as it continued documents in pretraining
        ids = tokenizer(turns[-1]["content"], return_tensors="pt")["input_ids"]
    note = None
    context = getattr(loaded.model.config, "max_position_embeddings", None)
    if context and ids.shape[1] + max_new_tokens > context:
        keep = context - max_new_tokens
        if keep < 1:
            raise UserError(f"max new tokens {max_new_tokens} is more than {loaded.ref}'s context of {context} tokens: ask for fewer")
        ids = ids[:, -keep:]
        note = f"the conversation was cut to its last {keep} tokens to fit the model's context ({context})"
    return {"input_ids": ids.to(loaded.device), "attention_mask": torch.ones_like(ids).to(loaded.device)}, note


def _generate(pane: int, loaded: Loaded, turns: list[dict], mode: str, settings: Settings, seed: int, scorer: Loaded | None,
              events: queue.Queue, cancel: threading.Event, world=None) -> None:
    """One pane, in its own thread: stream the answer, then put its final result (or the exception)."""
    try:
        inputs, note = _inputs(loaded, turns, mode, settings.max_new_tokens)
        probabilities = _TokenProbabilities()
        processors = [probabilities]
        if settings.temperature > 0:
            processors += [TemperatureLogitsWarper(settings.temperature), TopPLogitsWarper(settings.top_p), _SeededDraw(seed, loaded.device)]
        streamer = _PaneStreamer(loaded.tokenizer, pane, events)
        start = time.perf_counter()
        # do_sample=False: greedy over the scores our processors return, which for temperature > 0 is a
        # sample (see _SeededDraw). The generation config's own sampling fields are thereby ignored.
        output = loaded.model.generate(
            **inputs, max_new_tokens=int(settings.max_new_tokens), do_sample=False, num_beams=1,
            logits_processor=LogitsProcessorList(processors), stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]),
            streamer=streamer, eos_token_id=_stop_ids(loaded, mode), pad_token_id=loaded.tokenizer.pad_token_id,
        )
        seconds = time.perf_counter() - start
        ids = output[0, inputs["input_ids"].shape[1]:].tolist()
        if ids:
            probabilities.finish(ids[-1])
        tokenizer = loaded.tokenizer
        special = set(tokenizer.all_special_ids)
        piece = lambda i: tokenizer.decode([i], skip_special_tokens=False)  # noqa: E731
        answer = tokenizer.decode(ids, skip_special_tokens=True).strip()
        result = {
            "answer": answer, "tokens": len(ids), "seconds": seconds,
            "ttft": (streamer.first_token_at - start) if streamer.first_token_at else None,
            "tokens_per_second": len(ids) / seconds if seconds > 0 else None,
            "token_probs": [{"token": piece(i), "prob": p, "special": i in special, "top": [[piece(t), q] for t, q in top]}
                            for i, p, top in zip(ids, probabilities.chosen, probabilities.top)],
            "note": note,
        }
        prompt_turns = turns if mode == "chat" else [{"role": "user", "content": turns[-1]["content"]}]
        result["gold"], result["gold_breakdown"] = gold_score(prompt_turns, answer, world)
        result["reward"] = reward_score(scorer, prompt_turns, answer) if scorer else None
        events.put((pane, "done", result))
    except BaseException as e:  # the reader re-raises it; a pane must always report, or the reader waits for ever
        if not isinstance(e, UserError):
            traceback.print_exc()
        events.put((pane, "error", e))


def compare(model_refs: list[str], prompt: str, histories: list[list[dict]] | None = None, settings: Settings | None = None,
            mode: str = "auto", reward_model: str | None = None, seeds: list[int] | None = None, device: str = "auto",
            cache: ModelCache | None = None):
    """Stream answers of 1–4 models to one prompt, side by side. Yields the list of panes (dicts) each time
    any of them has new text; the last yield has every pane done, with its scores. A pane:
    model, run, stage, mode, device, answer, done, tokens, seconds, ttft, tokens_per_second,
    token_probs ([{token, prob, special, top: [[token, prob] × 5]}]), reward, gold, gold_breakdown, note.

    histories: each pane's conversation before this prompt (chat mode; a raw pane continues the prompt
    alone). seeds: each pane's seed (default: settings.seed for all, so that answers differ by model only)."""
    settings = (settings or Settings()).check()
    cache = cache or CACHE
    refs = [str(r).strip() for r in (model_refs or []) if str(r).strip()]
    if not 1 <= len(refs) <= MAX_PANES:
        raise UserError(f"{len(refs)} models given: compare 1 to {MAX_PANES} (runs, model folders or hub ids)")
    if not (prompt or "").strip():
        raise UserError("the prompt is empty: type a question or the start of a text")
    histories = [check_turns(h, f"history of model {i + 1}") for i, h in enumerate(histories or [[]] * len(refs))]
    if len(histories) != len(refs):
        raise UserError(f"{len(histories)} histories for {len(refs)} models: give one per model (an empty list for none)")
    seeds = [int(s) for s in seeds] if seeds is not None else [int(settings.seed)] * len(refs)
    if len(seeds) != len(refs):
        raise UserError(f"{len(seeds)} seeds for {len(refs)} models: give one per model")
    device, device_note = pick_device(device)
    loaded = [cache.get(ref, "causal", device) for ref in refs]
    scorer = cache.get(reward_model, "reward", device) if reward_model else None
    modes = [choose_mode(m.stage, m.has_chat_template, mode, m.ref) for m in loaded]
    conversations = [h + [{"role": "user", "content": prompt}] for h in histories]

    panes = [{"model": m.ref, "run": m.run, "stage": m.stage, "mode": md, "device": device, "answer": "", "done": False,
              "tokens": 0, "seconds": None, "ttft": None, "tokens_per_second": None, "token_probs": [], "reward": None,
              "gold": None, "gold_breakdown": {}, "note": device_note, "seed": s}
             for m, md, s in zip(loaded, modes, seeds)]
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()
    for i, (m, md, turns, s) in enumerate(zip(loaded, modes, conversations, seeds)):
        threading.Thread(target=_generate, args=(i, m, turns, md, settings, s, scorer, events, cancel, world_of_model(m.run)), daemon=True,
                         name=f"pane-{i}").start()
    pending = len(panes)
    try:
        yield [dict(p) for p in panes]
        while pending:
            batch = [events.get()]
            while True:  # everything that arrived meanwhile goes out in one update
                try:
                    batch.append(events.get_nowait())
                except queue.Empty:
                    break
            for i, kind, payload in batch:
                if kind == "text":
                    panes[i]["answer"] += payload
                elif kind == "error":
                    raise payload
                else:
                    notes = [n for n in (panes[i]["note"], payload.pop("note")) if n]
                    panes[i].update(payload, done=True, note="; ".join(notes) or None)
                    pending -= 1
            yield [dict(p) for p in panes]
    finally:
        cancel.set()  # a reader that left (or an error) stops the other panes at their next token


def complete(model_refs: list[str], prompt: str, **kwargs) -> list[dict]:
    """`compare`, read to the end: the finished panes."""
    panes = []
    for panes in compare(model_refs, prompt, **kwargs):
        pass
    return panes


# -- which models ---------------------------------------------------------------------------------------


def runs_with_models(kind: str = "causal") -> list[tuple[str, str]]:
    """(run id, stage) of runs with a saved model of that kind, newest first: "causal" (pretrain, SFT and
    aligned runs that write text) or "reward"."""
    out = []
    for run in reversed(runs.list_runs()):
        try:
            info = run.info
        except FileNotFoundError:
            continue
        saved = (run.path / "model").is_dir() or (run.path / "adapter").is_dir()
        made = stages.produces(info["stage"])
        wanted = made == "reward" if kind == "reward" else made in ("base", "chat") and info["config"].get("objective", "clm") == "clm"
        if saved and wanted:
            out.append((run.id, info["stage"]))
    return out


def lifecycle(ref: str) -> list[str]:
    """base → instruct → aligned: the models along a run's lineage, oldest first (the newest MAX_PANES of them).
    The first run of the chain may have been built on a folder or a hub model: that is the base."""
    chain = runs.lineage(Run.open(ref))
    saved = [r.id for r in chain if stages.produces(r.stage) in ("base", "chat") and ((r.path / "model").is_dir() or (r.path / "adapter").is_dir())]
    first = chain[0]
    base = first.config.get("parent") or first.config.get("init_from")
    if not first.parent and base and stages.produces(first.stage) != "tokenizer":  # no parent run: a folder or a hub id
        try:
            models.resolve(base)
            saved.insert(0, base)
        except UserError:  # a hub id while offline, a folder since deleted
            pass
    if len(saved) < 2:
        raise UserError(f"run {ref}'s lineage holds {len(saved)} model(s): pick an SFT or aligned run, whose parents give the base and instruct models")
    return saved[-MAX_PANES:]
