"""How fast a new metric reaches the page: from a row appended to a run's metrics.jsonl to its step
showing in the Pretrain page's progress text, in a real browser.

    python bench/app_latency.py [--events 40] [--port 7890]

The bench starts the app (`python -m lab app`) on a scratch run store holding one fake pretrain run,
"running" with the bench's own pid as its job's pid (so it reads as alive, and no training competes for
the CPU). Chromium opens the Pretrain page, which selects that run as the latest. Then the bench appends a
row at a random moment (so the appends fall at every phase of the page's refresh timer), and the browser
itself watches the DOM for "step N of" (Playwright's wait_for_function, polling every animation frame).
Goal: p95 ≤ 1.5 s.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def start_app(port: int) -> tuple[subprocess.Popen, str]:
    """`python -m lab app` on `port` (this process's LAB_CHECKPOINTS), once it answers: (the process, its URL)."""
    app = subprocess.Popen([sys.executable, "-m", "lab", "app", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url + "config", timeout=5)
            return app, url
        except OSError:
            if app.poll() is not None or time.time() > deadline:
                app.kill()
                raise SystemExit("the app did not start")
            time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=40, help="rows appended, one latency each")
    parser.add_argument("--port", type=int, default=7890)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    store = Path(tempfile.mkdtemp(prefix="lab-latency-"))
    os.environ["LAB_CHECKPOINTS"] = str(store)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from playwright.sync_api import sync_playwright

    from lab.runs import Run, process_start

    run = Run.create("pretrain", {"preset": "nano", "max_steps": args.events + 1}, name="latency")
    run.update(status="running", pid=os.getpid(), pid_start=process_start(os.getpid()), started=time.time())
    run.log_metrics({"step": 0, "parameters": 442848})

    app, url = start_app(args.port)
    latencies: list[float] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(url)
            page.get_by_role("tab", name="Pretrain").click()
            page.wait_for_function(f"() => (document.querySelector('#pretrain-progress')?.innerText || '').includes('{run.id}')", timeout=60_000)
            rng = random.Random(0)
            t_start = time.time()
            for step in range(1, args.events + 1):
                time.sleep(rng.uniform(0.3, 1.3))
                loss = 7.0 * 0.97**step
                t0 = time.time()
                run.log_metrics({"step": step, "loss": loss, "grad_norm": 1.0, "learning_rate": 1e-3, "elapsed": t0 - t_start, "tokens_per_second": 5000.0})
                page.wait_for_function(f"() => (document.querySelector('#pretrain-progress')?.innerText || '').includes('step {step} of')", polling="raf", timeout=30_000)
                latencies.append(time.time() - t0)
            browser.close()
    finally:
        run.update(status="completed", ended=time.time())
        app.terminate()
        app.wait(timeout=15)

    print(f"{len(latencies)} metric rows, appended 0.3-1.3 s apart; latency from the append to the step in the page (s)")
    print("| events | p50 | p95 | max | mean |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {len(latencies)} | {statistics.median(latencies):.3f} | {percentile(latencies, 0.95):.3f} | {max(latencies):.3f} | {statistics.mean(latencies):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
