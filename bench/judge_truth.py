"""How much the figures that rest on the gold judge move when it checks truth (issue 15): the same answers of the
same models judged by the string-presence judge of an older revision and by the truthful one of this checkout.

    python bench/judge_truth.py --store DIR --sft RUN --aligned DPO_RUN PPO_RUN --reward RUN [--old-rev REV]

Answers are generated once per model (greedy on the fact questions and harmful requests, as chat_eval; sampled
at T 0.7, seed 0, on the comparison prompts, as the win rates) and judged twice, so what moves is the judge.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def old_world(rev: str):
    """The toy world of revision `rev`, importable beside this checkout's (a package of its own)."""
    folder = Path(tempfile.mkdtemp(prefix="lab-old-world-")) / "oldworld"
    folder.mkdir()
    for name in ("__init__.py", "text.py"):
        source = subprocess.run(["git", "show", f"{rev}:lab/world/{name}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        (folder / name).write_text(source.replace("from lab.world import text as T", "from oldworld import text as T"))
    sys.path.insert(0, str(folder.parent))
    return importlib.import_module("oldworld").build_world()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--sft", required=True)
    parser.add_argument("--aligned", nargs="+", default=[])
    parser.add_argument("--reward")
    parser.add_argument("--old-rev", default="ec9931c^", help="a revision with the string-presence judge")
    args = parser.parse_args()
    os.environ["LAB_CHECKPOINTS"] = args.store
    from lab import evals, inference
    from lab.world import build_world

    new, old = build_world(), old_world(args.old_rev)
    sets = new.eval_sets()
    facts, harmful = sets["fact_qa"], sets["harmful"]
    prompts = [f["question"] for f in facts] + [h["prompt"] for h in harmful]
    comparison = evals.comparison_prompts(new)
    rows, flipped = [], []
    sampled = {}
    for ref in [args.sft, *args.aligned]:
        loaded = inference.load(ref)
        answers = evals.chat(loaded.model, loaded.tokenizer, prompts, max_new_tokens=48)
        sampled[ref] = evals.chat(loaded.model, loaded.tokenizer, comparison, max_new_tokens=48, temperature=0.7, seed=0)
        for taught in (True, False):
            part = [(f, a) for f, a in zip(facts, answers) if f["taught_in_sft"] == taught]
            scores = []
            for world in (old, new):
                scores.append(sum(world.judge(f["question"], a).breakdown.get("correct", 0.0) for f, a in part) / len(part))
            rows.append((f"{ref}: fact QA, {'SFT-taught' if taught else 'pretraining-only'}", *scores))
            flipped += [(f["question"], a) for f, a in part
                        if old.judge(f["question"], a).breakdown.get("correct") == 1.0 and new.judge(f["question"], a).breakdown.get("correct") == 0.0]
        gold = [sum(w.judge(p, a).score for p, a in zip(prompts, answers)) / len(prompts) for w in (old, new)]
        rows.append((f"{ref}: gold score (greedy)", *gold))
    for ref in args.aligned:
        for key in ("win_rate", "decisive_win_rate"):
            rows.append((f"{ref} vs SFT: {key}", *[evals.head_to_head(w, comparison, sampled[ref], sampled[args.sft])[key] for w in (old, new)]))
    if args.reward:
        from lab.stages.reward import heldout_accuracy

        def chats(pairs):  # as the reward stage reads them (lab.stages.preference_splits)
            return [{"prompt": [{"role": "user", "content": p["prompt"]}], "chosen": [{"role": "assistant", "content": p["chosen"]}],
                     "rejected": [{"role": "assistant", "content": p["rejected"]}], "criterion": p["criterion"]} for p in pairs]

        scorer = inference.load(args.reward, "reward")
        same = new.preference_pairs("heldout")
        verdict = [(old.judge(p["prompt"], p["chosen"]).score > old.judge(p["prompt"], p["rejected"]).score,
                    new.judge(p["prompt"], p["chosen"]).score > new.judge(p["prompt"], p["rejected"]).score) for p in same]
        rows.append(("held-out pairs whose chosen answer the judge prefers", *[sum(v[i] for v in verdict) / len(verdict) for i in (0, 1)]))
        acc_old = heldout_accuracy(scorer.model, scorer.tokenizer, chats(old.preference_pairs("heldout")))["accuracy"]
        acc_new = heldout_accuracy(scorer.model, scorer.tokenizer, chats(same))["accuracy"]
        rows.append(("reward model: held-out pair accuracy (each world's pairs)", acc_old, acc_new))
    print("| figure | string-presence judge | truthful judge | moved |\n|---|---:|---:|---:|")
    for name, a, b in rows:
        print(f"| {name} | {a:.1%} | {b:.1%} | {(b - a) * 100:+.1f} pts |")
    print(f"\n{len(flipped)} fact answers judged correct before and wrong now, e.g.:")
    for q, a in flipped[:8]:
        print(f"- {q} → {a!r}")


if __name__ == "__main__":
    main()
