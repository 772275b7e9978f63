"""LLM Lifecycle Lab engine: tokenizer -> pretraining -> SFT -> alignment. Imports no gradio."""

import logging
import os
import sys

# Before torch loads OpenMP: threads that finish a parallel region sleep instead of spinning. The lab
# runs several processes on few cores (a training job, the app generating, a second queued job), and
# spinning threads then steal each other's cores: on 2 cores with 3 busy processes, greedy generation of a
# nano model ran over an order of magnitude slower with the default spin-wait.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if sys.argv[1:2] in (["train"], ["quickstart"], ["experiment"], ["eval"], ["seed"], ["feedback"]):
    # A training job, though, runs op after op on its own threads, and with no spin at all its worker thread
    # went to sleep between every two of them: PPO's updates took 1.5-2 times as long, pretraining a quarter longer
    # (bench/RESULTS.md, "PPO against TRL 1.12 on a quiet machine"). A spin of 10,000
    # bridges the gap between ops and yields the core to another process within about a third of a millisecond.
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"


def _without_kernels_notice(record) -> bool:
    # bitsandbytes warns at import, on CPUs with AVX512-BF16, that an optional faster 4-bit CPU kernel (the
    # `kernels` package) is missing; it falls back to its own and works. Every job imports it (through
    # transformers and peft), so the notice opened every log and read as a failure.
    return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_without_kernels_notice)
