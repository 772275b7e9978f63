"""How long a newcomer waits before the lab answers: open the app in a fresh browser, open the Pretrain tab,
pick the nano preset, set the steps and the batch size, and wait until "The same run from a terminal" shows
them. Measured for this checkout and for a reference revision (default: the one before the pages read
themselves when first opened), each app on its own empty run store, alternately, in the same run.

    python bench/first_edit.py [--reference REV] [--tries 5]

Prints, per revision: the median seconds until the tab could be clicked, until the edit was shown, and the
events the browser sent (gradio queue joins) on the way; and the ratios of this checkout to the reference.
Needs Chromium at /usr/bin/chromium and Playwright (the test extras)."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import running_app  # noqa: E402  the tests' launcher: `python -m lab app` on a store


@contextmanager
def app_of(source: Path, store: Path, log: Path):
    """The app of the code in `source`, on `store`: `python -m lab` started in `source` imports its `lab` and
    `pages` first (before the editable install's)."""
    here = os.getcwd()
    os.chdir(source)
    try:
        with running_app(store, log) as url:
            os.chdir(here)
            yield url
    finally:
        os.chdir(here)


def one_try(browser, url: str, steps: int) -> dict:
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.set_default_timeout(120_000)
    joins = []
    page.on("request", lambda r: joins.append(r.url) if "queue/join" in r.url else None)
    start = time.perf_counter()
    page.goto(url)
    page.get_by_role("tab", name="Pretrain").click()
    tab = time.perf_counter() - start
    page.locator("#pretrain-field-preset input").click()
    page.get_by_role("option", name="nano").click()
    for field, value in (("max_steps", steps), ("batch_size", 8)):
        page.locator(f"#pretrain-field-{field} input").fill(str(value))
        page.locator(f"#pretrain-field-{field} input").press("Enter")
    want = f"--preset nano --max-steps {steps} --batch-size 8"
    while want not in page.locator("#pretrain-cli").inner_text():
        if time.perf_counter() - start > 180:
            raise SystemExit(f"the command never showed the edit on {url}")
        time.sleep(0.1)
    shown = time.perf_counter() - start
    page.close()
    return {"tab": tab, "shown": shown, "events": len(joins)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default="0f84ace^", help="the git revision to compare with")
    parser.add_argument("--tries", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reference = tmp / "reference"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(reference), args.reference], cwd=ROOT, check=True)
        try:
            results = {"this checkout": [], f"reference ({args.reference})": []}
            with app_of(ROOT, tmp / "store-now", tmp / "now.log") as now, app_of(reference, tmp / "store-ref", tmp / "ref.log") as ref, \
                    sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                one_try(browser, now, 1)  # each app's first page load pays its imports
                one_try(browser, ref, 1)
                for i in range(args.tries):
                    for name, url in zip(results, (now, ref)):
                        results[name].append(one_try(browser, url, 100 + i))
                browser.close()
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(reference)], cwd=ROOT, check=False)

    median = {name: {k: statistics.median(r[k] for r in rows) for k in ("tab", "shown", "events")} for name, rows in results.items()}
    print(f"{'':28} {'tab clickable (s)':>18} {'edit shown (s)':>15} {'events sent':>12}")
    for name, m in median.items():
        print(f"{name:28} {m['tab']:18.1f} {m['shown']:15.1f} {m['events']:12.0f}")
    now_m, ref_m = median.values()
    print(f"{'ratio (this / reference)':28} {now_m['tab'] / ref_m['tab']:18.2f} {now_m['shown'] / ref_m['shown']:15.2f} {now_m['events'] / ref_m['events']:12.2f}")


if __name__ == "__main__":
    main()
