"""Models: from-scratch presets (a Llama-style decoder for causal LM, a BERT-style encoder for masked
LM), resolving what a user names as a model (a run, a local folder, a hub id), and the device policy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lab.errors import NotFound, UserError, flag, hint


@dataclass(frozen=True)
class Preset:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int  # the vocabulary size a tokenizer trained for this preset gets
    about: str


# Parameter counts (embeddings tied) at each preset's own vocabulary size; `llm-lab presets` prints
# the exact figures.
PRESETS = {
    "nano": Preset(hidden=96, layers=3, heads=4, intermediate=256, vocab=2048, about="≈0.5M parameters, for tests"),
    "tiny": Preset(hidden=192, layers=6, heads=6, intermediate=512, vocab=2048, about="≈3M parameters, the CPU default"),
    "small": Preset(hidden=512, layers=8, heads=8, intermediate=1408, vocab=8192, about="≈30M parameters"),
    "base": Preset(hidden=768, layers=12, heads=12, intermediate=2048, vocab=32000, about="≈110M parameters, for GPUs"),
}


def decoder_config(preset: str, vocab_size: int, max_len: int, tokenizer):
    from transformers import LlamaConfig

    p = PRESETS[preset]
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=p.hidden,
        intermediate_size=p.intermediate,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        num_key_value_heads=p.heads,
        max_position_embeddings=max(max_len, 512),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def encoder_config(preset: str, vocab_size: int, max_len: int, tokenizer):
    from transformers import BertConfig

    p = PRESETS[preset]
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=p.hidden,
        intermediate_size=p.intermediate,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        max_position_embeddings=max(max_len, 512),
        pad_token_id=tokenizer.pad_token_id,
    )


def build_from_scratch(preset: str, objective: str, tokenizer, max_len: int):
    """A randomly initialised model sized by `preset`, its vocabulary fitted to `tokenizer`."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    if preset not in PRESETS:
        raise UserError(f"unknown preset '{preset}': choose one of {', '.join(PRESETS)}")
    vocab = len(tokenizer)
    if objective == "clm":
        return AutoModelForCausalLM.from_config(decoder_config(preset, vocab, max_len, tokenizer))
    if objective == "mlm":
        return AutoModelForMaskedLM.from_config(encoder_config(preset, vocab, max_len, tokenizer))
    raise UserError(f"unknown objective '{objective}': use clm (causal LM) or mlm (masked LM)")


def count_parameters(model, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def resolve(ref: str) -> tuple[str, str | None]:
    """What a user named as a model → (a path or hub id for from_pretrained, the run id if it is a run).

    Accepts a run id (its model/ folder, else its adapter/ or tokenizer/), a local folder, or a hub id."""
    from lab import demo, runs
    from lab.runs import Run

    if not ref:
        raise UserError("no model given: name a run id, a local model folder or a hub id")
    demo.check_model(ref)
    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / "run.json").exists():  # a run's folder given by its path: its model, a run of the lineage if in the store
            run = Run(path.resolve())
            if run.model_dir is None:
                raise NotFound(f"run {run.id} has no saved model yet (status: {run.status})")
            return str(run.model_dir), run.id if runs.in_store(run.path) else None
        return str(path), None
    try:
        run = Run.open(ref)
    except LookupError:
        run = None
    if run is not None:
        if run.model_dir is None:
            raise NotFound(f"run {run.id} has no saved model yet (status: {run.status})")
        return str(run.model_dir), run.id
    if ref.count("/") == 1 and not ref.startswith((".", "/")):
        if hub_offline():
            raise NotFound(
                f"'{ref}' is not a run or a local folder, and the Hugging Face hub is offline "
                "(HF_HUB_OFFLINE=1): download the model on a machine with internet "
                "(`hf download " + ref + " --local-dir DIR`) and pass DIR"
            )
        return ref, None
    raise NotFound(f"'{ref}' is not a run id, a local model folder or a hub id (owner/name); see {hint(cli='llm-lab runs', page='the Runs page')}")


def load_pretrained(auto_cls, ref: str, **kwargs):
    """`auto_cls.from_pretrained(ref)` with a readable error when a hub id cannot be fetched."""
    try:
        return auto_cls.from_pretrained(ref, **kwargs)
    except OSError as e:
        if not Path(ref).exists():
            raise NotFound(
                f"could not fetch '{ref}' from the Hugging Face hub ({str(e).splitlines()[0]}). "
                "Check the id and your network, or download it elsewhere and pass the local folder"
            ) from e
        raise


QUANTIZED = {"lora-8bit": "8-bit", "lora-4bit": "4-bit"}


def load_model(ref: str, auto_cls, mode: str = "full", device: str = "cpu", **kwargs):
    """What a user named (a run, a model folder or a hub id) as `auto_cls`, ready to train in `mode`:
    → (model, tokenizer, path). The base is loaded in 8-bit or 4-bit for the quantized LoRA modes. A LoRA
    run's adapter is folded into its base once, on disk next to the adapter, and that folder is the path
    returned: a new adapter names it as its base, and TRL rebuilds a reference model from it. A tokenizer
    without a chat template gets the lab's, and the embeddings grow to fit its tokens where they can."""
    from transformers import AutoTokenizer, BitsAndBytesConfig

    from lab.tokenizers import ensure_chat_template

    path, _ = resolve(ref)
    if Path(path, "adapter_config.json").exists():
        merged = Path(path).with_name(Path(path).name + "-merged")
        if not merged.exists():
            merge_adapter(path, merged)
        path = str(merged)
    tokenizer = load_pretrained(AutoTokenizer, path)
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs.setdefault("dtype", torch.bfloat16 if use_bf16(device) else torch.float32)
    if mode == "lora-8bit":
        kwargs.update(quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map={"": device})
    elif mode == "lora-4bit":
        kwargs.update(quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=kwargs["dtype"]),
                      device_map={"": device})
    model = load_pretrained(auto_cls, path, **kwargs)
    if mode == "lora-4bit" and device == "cpu":
        keep_4bit_weights_trainable_on_cpu(model)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        if mode in QUANTIZED:
            raise UserError(f"{ref} has no chat template and its vocabulary lacks the lab's chat tokens; a quantized base cannot "
                             "grow its embeddings: run `--mode lora` or `full` once, or give the model a chat template")
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id  # sequence classifiers find the last token by it
    return model, tokenizer, path


def keep_4bit_weights_trainable_on_cpu(model) -> None:
    """On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit layer's weights in place for fast inference
    the first time the layer runs in eval mode without gradients. That repack is one-way and meant for
    models that only generate; a lab run alternates training steps with evals (KL, samples), and the repack
    also needs each layer's input width to be a multiple of the quantization block (64), which nano's 96 is
    not: "shape '[96, 1]' is invalid for input of size 144" mid-run. Keep the training layout."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def require_bitsandbytes(mode: str, device: str) -> None:
    """8-bit and 4-bit loading need bitsandbytes, with a backend for the device (CUDA, or its CPU backend)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise UserError(f"{flag('mode')} {mode} needs bitsandbytes ({e}): `pip install bitsandbytes`, or use {flag('mode')} lora or full") from None
    if device == "mps":
        raise UserError(f"{flag('mode')} {mode}: bitsandbytes has no Apple MPS backend: use {flag('device')} cpu, or {flag('mode')} lora or full")


def available_devices() -> list[str]:
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        out.append("mps")
    return out


def pick_device(preference: str = "auto") -> str:
    """cuda > mps > cpu, unless the user asked for one; asking for a missing or unknown one is an error that
    lists the devices this machine has."""
    if preference in ("", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    here = available_devices()
    if preference in here:
        return preference
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", preference):
        raise UserError(f"{flag('device')} {preference!r} is not a device the lab trains on: use auto, cpu, cuda (or cuda:N) or mps; "
                        f"this machine has {', '.join(here)}")
    what = {"mps": "Apple's MPS is not available"}.get(preference, "no such CUDA GPU is visible")
    raise UserError(f"{flag('device')} {preference!r} was asked for but {what}: this machine has {', '.join(here)}")


# From bench/cpu_bf16.py on a CPU with AMX: bf16 autocast trained a 26M-parameter model 1.5-1.7 times faster than
# fp32 to the same loss, and a 3M one no faster (SFT 0.75 times).
CPU_BF16_PARAMETERS = 10_000_000


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), rather than emulating it."""
    try:
        flags = set(open("/proc/cpuinfo", encoding="utf-8").read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def use_bf16(device: str, precision: str = "auto", parameters: int = 0) -> bool:
    """bf16 where the GPU does it natively, and (autocast) on a CPU that does it natively for a model of
    `parameters` ≥ CPU_BF16_PARAMETERS; `precision` bf16 or fp32 decides instead of auto."""
    if precision != "auto":
        return precision == "bf16"
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return device == "cpu" and parameters >= CPU_BF16_PARAMETERS and cpu_has_bf16()


def describe_device(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{device} ({torch.get_num_threads()} threads)"


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Fold a LoRA adapter into its base and save a standalone model that loads without PEFT.

    The base is loaded in full precision even if it was trained in 8-bit or 4-bit: merging into
    quantized weights would round the update away."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lab.runs import atomic_dir

    adapter_dir = Path(adapter_dir)
    base_ref = PeftConfig.from_pretrained(adapter_dir).base_model_name_or_path
    base = load_pretrained(AutoModelForCausalLM, base_ref, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    if len(tokenizer) > base.get_input_embeddings().num_embeddings:
        base.resize_token_embeddings(len(tokenizer))
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    with atomic_dir(Path(out_dir)) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        card = adapter_dir / "README.md"
        if card.exists():
            (tmp / "README.md").write_text(card.read_text(encoding="utf-8").replace("library_name: peft", "library_name: transformers") + f"\nMerged from the adapter `{adapter_dir}` into `{base_ref}`.\n", encoding="utf-8")
    return Path(out_dir)


def only_last_logits(model, keep: int) -> dict:
    """The argument that has a causal LM compute logits at its last `keep` positions only (the LM head's product at
    the others would be thrown away), where its forward takes one (transformers' do); none otherwise."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"logits_to_keep": keep} if "logits_to_keep" in inspect.signature(inner.forward).parameters else {}
