"""LLM Lifecycle Lab engine: tokenizer -> pretraining -> SFT -> alignment. Imports no gradio."""

import os

# Before torch loads OpenMP: threads that finish a parallel region sleep instead of spinning. The lab
# runs several processes on few cores (a training job, the app generating, a second queued job), and
# spinning threads then steal each other's cores: on 2 cores with 3 busy processes, greedy generation of a
# nano model ran over an order of magnitude slower with the default spin-wait.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
