"""What a training job reports while it runs: the Trainer callback that streams every log event to
metrics.jsonl, completes fixed prompts every N steps into samples.jsonl, honours stop requests
(SIGTERM from the UI, Ctrl-C on the CLI) at the next step, and ends a run whose loss is NaN or inf.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from lab import distributed
from lab.errors import Diverged
from lab.jobs import StopRequested, request_stop, stop_asked, stop_requested


def check_finite(logs: dict, step: int) -> None:
    for key in ("loss", "grad_norm"):
        value = logs.get(key)
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise Diverged(
                f"training diverged: {key} is {value} at step {step}. Lower the learning rate, "
                "raise warmup, or keep gradient clipping on (max_grad_norm)"
            )


class LabCallback(TrainerCallback):
    """Streams a Trainer's logs into the run store and carries the lab's controls into its loop.

    `sample(model) -> list[dict]` is called every `sample_every` steps (and before the first);
    its rows land in samples.jsonl with the step."""

    def __init__(self, run, sample=None, sample_every: int = 0, max_minutes: float = 0.0, cross_entropy: bool = True,
                 rename: dict[str, str] | None = None):
        self.run = run
        self.rename = rename or {}  # a trainer's metric whose name means something else in the lab (KTO's `kl`)
        self.cross_entropy = cross_entropy  # the loss is a token cross-entropy, so exp(loss) is a perplexity
        self.sample = sample
        self.sample_every = sample_every
        self.max_seconds = max_minutes * 60
        self.diverged: Diverged | None = None
        self._t0 = self._last_time = time.time()
        self._last_tokens = 0

    def _log_samples(self, model, step: int) -> None:
        if not self.sample or not self.run.writes:  # rank 0 alone answers the fixed prompts
            return
        rows = self.sample(model)
        for row in rows:
            self.run.log_sample({"step": step, "time": time.time(), **row})
        gold = [r["gold"] for r in rows if isinstance(r.get("gold"), (int, float))]
        if gold:  # the toy world's judge of what the model writes now: the true reward, beside any proxy
            self.run.log_metrics({"step": step, "gold/score": sum(gold) / len(gold)})

    def on_train_begin(self, args, state, control, model=None, **kw):
        self._t0 = self._last_time = time.time()
        if state.global_step:  # resumed from a checkpoint: the clock and the token count go on from it
            self._t0 -= self.run.last_metrics().get("elapsed") or 0.0
            self._last_tokens = getattr(state, "num_input_tokens_seen", 0) or 0
        else:
            self._log_samples(model, 0)

    def on_log(self, args, state, control, logs=None, model=None, **kw):
        logs = {self.rename.get(k, k): v for k, v in (logs or {}).items()}
        now = time.time()
        tokens = getattr(state, "num_input_tokens_seen", 0) or 0
        if tokens > self._last_tokens and now > self._last_time and "loss" in logs:
            logs["tokens_per_second"] = (tokens - self._last_tokens) / (now - self._last_time)
            self._last_tokens, self._last_time = tokens, now
        if self.cross_entropy and "loss" in logs and isinstance(logs["loss"], (int, float)) and logs["loss"] < 50:
            logs.setdefault("perplexity", math.exp(logs["loss"]))
        if "eval_loss" in logs and logs["eval_loss"] < 50:
            logs.setdefault("eval_perplexity", math.exp(logs["eval_loss"]))
        self.run.log_metrics({"step": state.global_step, "time": now, "elapsed": now - self._t0, **logs})
        try:
            check_finite(logs, state.global_step)
        except Diverged as e:
            self.diverged = e
            control.should_training_stop = True

    def on_step_end(self, args, state, control, model=None, **kw):
        timed_out = bool(self.max_seconds) and time.time() - self._t0 >= self.max_seconds
        # The ranks of a multi-process job stop at the same step, or those that go on wait for the others forever.
        stop, timed_out = distributed.agree(stop_asked(), timed_out)
        if stop:
            request_stop()  # every rank's own checks (the checkpoint at a stop, the evaluations) now agree
            control.should_training_stop = True
            control.should_log = True  # the last partial window still reaches the curve
        if timed_out:
            control.should_training_stop = True
            control.should_log = True
        if self.sample_every and state.global_step % self.sample_every == 0:
            self._log_samples(model, state.global_step)

    def raise_if_diverged(self) -> None:
        if self.diverged:
            raise self.diverged


class Checkpoints(TrainerCallback):
    """The Trainer writes checkpoint-N/ in place, every `save_steps`; this marks each one whole once the Trainer
    is done with it (`runs.COMPLETE`) and keeps the newest `keep`, so a kill mid-save never costs the checkpoint
    before it. A stop saves one at the step it stops at, so that a resume goes on from exactly there."""

    def __init__(self, run, keep: int):
        self.run, self.keep = run, keep
        self._t0 = None

    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= state.max_steps:
            # Nothing is left to resume after the last step (a stop there too: the run has its whole model). The
            # Trainer saves one there all the same; a run resumed from it did not end as the uninterrupted one
            # (weights 0.002 apart: bench/faults.py caught it), and for a large model it is the costliest write.
            control.should_save = False
        elif stop_requested() and args.save_strategy != "no":
            control.should_save = True
        self._t0 = time.time() if control.should_save else None

    def on_save(self, args, state, control, **kw):
        from lab.runs import COMPLETE

        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and state.is_world_process_zero:  # the process that wrote it says it is whole
            (folder / COMPLETE).write_text(f"{state.global_step}\n")
            self.run.keep_checkpoints(self.keep)
            # from the step's end: an upper bound, with the log (and an evaluation) due at the same step
            self.run.record_checkpoint(folder, time.time() - (self._t0 or time.time()))


class KLToReference(TrainerCallback):
    """Logs `kl`: the mean over answer tokens of KL(model ‖ reference) on fixed chats, every `every` steps,
    so SFT's drift from its parent and DPO's from the SFT model have a curve (TRL logs none for either).

    The reference is the LoRA model with its adapter switched off, or a frozen copy for full fine-tuning."""

    def __init__(self, run, tokenizer, chats: list[dict], every: int, reference=None):
        self.run, self.every, self.reference = run, every, reference
        enc = tokenizer.apply_chat_template(
            [c["messages"] for c in chats[:8]], tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
            padding=True, return_tensors="pt",
        )
        self.input_ids, self.attention_mask = enc["input_ids"], enc["attention_mask"]
        # logits at position t predict token t+1: score the positions whose next token is the assistant's
        self.mask = torch.zeros_like(self.input_ids, dtype=torch.float)
        self.mask[:, :-1] = enc["assistant_masks"][:, 1:].float()

    @torch.no_grad()
    def measure(self, model) -> float:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        ids, att, mask = self.input_ids.to(device), self.attention_mask.to(device), self.mask.to(device)
        logp = model(input_ids=ids, attention_mask=att).logits.float().log_softmax(-1)
        if self.reference is None:
            with model.disable_adapter():
                logq = model(input_ids=ids, attention_mask=att).logits.float().log_softmax(-1)
        else:
            logq = self.reference(input_ids=ids, attention_mask=att).logits.float().log_softmax(-1)
        kl = (logp.exp() * (logp - logq)).sum(-1)
        model.train(was_training)
        return float((kl * mask).sum() / mask.sum().clamp(min=1))

    def on_train_begin(self, args, state, control, model=None, **kw):
        if not state.global_step and self.run.writes:  # a resumed run has its step-0 row; rank 0 alone measures
            self.run.log_metrics({"step": 0, "kl": self.measure(model)})

    def on_step_end(self, args, state, control, model=None, **kw):
        if self.every and self.run.writes and (state.global_step % self.every == 0 or control.should_training_stop):
            self.run.log_metrics({"step": state.global_step, "kl": self.measure(model)})


def stoppable_generation(model) -> None:
    """Make a stop request end `model.generate` mid-rollout (online RL spends most of a step sampling) by
    raising StopRequested from a stopping criterion. Generation changes no weight, so the exception leaves
    the policy exactly as the last optimizer step made it; the stage catches it and saves."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnRequest(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            if stop_requested():
                raise StopRequested()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    generate = model.generate

    def generate_until_stopped(*args, **kwargs):
        kwargs["stopping_criteria"] = StoppingCriteriaList([*(kwargs.get("stopping_criteria") or []), StopOnRequest()])
        return generate(*args, **kwargs)

    model.generate = generate_until_stopped
