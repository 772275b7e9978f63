"""What an open page costs the machine: CPU seconds per minute of Chromium's processes and of the app, for a
browser tab left on the Pretrain page showing a finished run, and one showing a running job.

    python bench/page_cost.py [--seconds 60] [--port 7891]

The bench starts the app (`python -m lab app`) on a scratch run store with two fake pretrain runs: one
completed, and one "running" with the bench's own pid as its job's pid (so it reads as alive, and no training
competes for the CPU), to which the bench appends a metrics row every second, as a job logs. For each case a
fresh Chromium opens the page, waits for the page's start-up to settle, then the bench reads the CPU times of
Chromium's renderer (the page's own work: scripts, layout, paint), of all of Chromium's processes (with the
GPU process, which composites in software here) and of the app over `--seconds`.
A reference measured in the same run: the same Chromium on a blank page (what a browser costs with no app).
Goals (issue 16): a tab on a finished run ≤ 1% of a core for each of the renderer and the app, one on a running
job ≤ 5%.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil
from app_latency import start_app  # bench/ is this script's folder, so its neighbours import


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def measure(app: psutil.Process, url: str | None, tab: str | None, watch: str | None, seconds: float, settle: float, chromium: str) -> tuple[float, float, float]:
    """(Chromium's renderer's, all of Chromium's, the app's) CPU seconds per minute, with a browser on `url`
    (None: a blank page)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        if url:
            page.goto(url)
            page.get_by_role("tab", name=tab).click()
        if url and watch:
            page.locator("#pretrain-run input").click()
            page.get_by_role("option", name=watch, exact=False).first.click()
            page.wait_for_function(f"() => (document.querySelector('#pretrain-progress')?.innerText || '').includes('{watch}')", timeout=90_000)
        if not url:
            page.goto("about:blank")
        time.sleep(settle)
        # Chromium's processes: this process's children that are not the app (Playwright's driver is node, and
        # the browser is its child).
        procs = [c for c in psutil.Process().children(recursive=True) if c.pid != app.pid and "chrom" in c.name().lower()]
        renderers = [c for c in procs if "--type=renderer" in " ".join(c.cmdline())]
        r0, c0, a0, t0 = cpu_seconds(renderers), cpu_seconds(procs), cpu_seconds([app]), time.time()
        time.sleep(seconds)
        r1, c1, a1, t1 = cpu_seconds(renderers), cpu_seconds(procs), cpu_seconds([app]), time.time()
        browser.close()
    minutes = (t1 - t0) / 60
    return (r1 - r0) / minutes, (c1 - c0) / minutes, (a1 - a0) / minutes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each case is measured")
    parser.add_argument("--settle", type=float, default=40.0, help="seconds after opening the page before measuring")
    parser.add_argument("--port", type=int, default=7891)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--cases", default="blank,home,finished,running", help="which cases to measure, comma-separated")
    args = parser.parse_args()

    store = Path(tempfile.mkdtemp(prefix="lab-page-cost-"))
    os.environ["LAB_CHECKPOINTS"] = str(store)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from lab.runs import Run, process_start

    finished = Run.create("pretrain", {"preset": "nano", "max_steps": 200}, name="finished")
    for step in range(0, 201, 5):
        finished.log_metrics({"step": step, "loss": 7.0 * 0.99**step, "grad_norm": 1.0, "learning_rate": 1e-3, "tokens_per_second": 5000.0})
    finished.update(status="completed", started=time.time() - 60, ended=time.time(), final_metrics={"steps": 200})
    running = Run.create("pretrain", {"preset": "nano", "max_steps": 100_000}, name="running")
    running.update(status="running", pid=os.getpid(), pid_start=process_start(os.getpid()), started=time.time())

    stop = threading.Event()

    def log_like_a_job():
        step, t_start = 0, time.time()
        while not stop.wait(1.0):
            step += 1
            running.log_metrics({"step": step, "loss": 7.0 * 0.999**step, "grad_norm": 1.0, "learning_rate": 1e-3,
                                 "elapsed": time.time() - t_start, "tokens_per_second": 5000.0})

    writer = threading.Thread(target=log_like_a_job, daemon=True)
    writer.start()
    app, url = start_app(args.port)
    rows = []
    try:
        proc = psutil.Process(app.pid)
        time.sleep(5)
        idle_app0 = cpu_seconds([proc])
        time.sleep(args.seconds / 2)
        idle_app = (cpu_seconds([proc]) - idle_app0) / (args.seconds / 2 / 60)
        cases = args.cases.split(",")
        if "blank" in cases:
            blank = measure(proc, None, None, None, args.seconds, 5, args.chromium)
            rows.append(("blank page (reference), no browser on the app", blank[0], blank[1], idle_app, None))
        if "home" in cases:
            rows.append(("Home, the page the app opens on", *measure(proc, url, "Home", None, args.seconds, args.settle, args.chromium), 0.6))
        for case, watch, goal in (("finished run", finished.id, 0.6), ("running job", running.id, 3.0)):
            if case.split()[0] in cases:
                rows.append((f"Pretrain page on a {case}", *measure(proc, url, "Pretrain", watch, args.seconds, args.settle, args.chromium), goal))
    finally:
        stop.set()
        running.update(status="completed", ended=time.time())
        app.terminate()
        app.wait(timeout=15)

    print(f"CPU seconds per minute (60 = one core busy), each case measured for {args.seconds:.0f} s after {args.settle:.0f} s to settle; "
          f"load average at the end {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("| case | Chromium's renderer (s/min) | all of Chromium (s/min) | app (s/min) | goal per process (s/min) |")
    print("|---|---:|---:|---:|---:|")
    for case, renderer, chromium_cpu, app_cpu, goal in rows:
        print(f"| {case} | {renderer:.2f} | {chromium_cpu:.2f} | {app_cpu:.2f} | {'' if goal is None else f'≤ {goal:.1f}'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
