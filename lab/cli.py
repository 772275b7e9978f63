"""`llm-lab` / `python -m lab`: the lab from a terminal.

    llm-lab [app] [--host H --port P --share --auth USER:PASS]   the lab in a browser (the default command)
    llm-lab world --out DIR                      write the toy world's datasets as jsonl
    llm-lab train STAGE [flags | --config F]     run a stage in the foreground; the last line printed is the run id
    llm-lab train STAGE ... --detach             queue it as a background job and print the run id at once
    llm-lab quickstart [--scale nano] [--with grpo]   the whole lifecycle, evaluated, with its report card
    llm-lab quickstart --continue RUN            carry on a stopped lifecycle from its first unfinished step
    llm-lab experiment NAME [--scale nano]       one of the lifecycle's claims measured: child runs, result.json, a plot
    llm-lab eval RUN [--against RUN]             evaluate a model; writes the run's eval.json
    llm-lab report RUN                           a lifecycle's report card
    llm-lab runs [--json]                        every run: stage, status, parent, last metrics
    llm-lab stop RUN                             stop a running or queued job (it saves what it has)
    llm-lab delete RUN [--with-dependents]       delete a run (refused while runs depend on it, naming them)
    llm-lab presets                              model presets with their parameter counts
    llm-lab export RUN [--merge] [--out DIR]     a standalone model folder (a LoRA adapter merged into its base)
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from lab import configs, stages
from lab.errors import UserError


class _Tee:
    """Echo what a foreground job prints into its run's log.txt, as a background job's would be."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, s):
        self.log.write(s)
        return self.stream.write(s)

    def flush(self):
        self.log.flush()
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def cmd_train(args, parser) -> int:
    from lab import jobs
    from lab.runs import Run

    module = stages.get(args.stage)
    if args.run_id:  # started by jobs.submit: the run and its config already exist
        run = Run.open(args.run_id)
        status = jobs.execute(run)
        return 0 if status != "failed" else 1
    config = configs.from_args(module.Config, args, args.config)
    if getattr(args, "machine_rank", 0):  # another machine of a multi-machine run: it joins machine 0's run
        from lab import distributed

        distributed.check(args.stage, config)
        return distributed.join(args.stage, config, args.machine_rank)
    if args.detach:
        run = jobs.submit(args.stage, config)
        print(f"queued {args.stage} run; follow it with `llm-lab runs` or its log at {run.path / 'log.txt'}", file=sys.stderr)
        print(run.id)
        return 0
    run = jobs.create(args.stage, config)
    log = open(run.path / "log.txt", "a", encoding="utf-8")
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
    try:
        status = jobs.execute(run)
    finally:
        sys.stdout, sys.stderr = out, err
        log.close()
    print(run.id)
    return 1 if status == "failed" else 0


def cmd_runs(args) -> int:
    from lab import jobs
    from lab.runs import list_runs, root, summary

    jobs.start_waiting()  # a waiting job whose turn came while no job was there to start it
    rows = [summary(r) for r in list_runs()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no runs in {root()}")
        return 0
    print(f"{'run':<44} {'stage':<10} {'status':<10} {'parent':<32} last metrics")
    for row in rows:
        shown = {k: v for k, v in row["last_metrics"].items() if k in ("step", "loss", "eval_loss", "chars_per_token", "eval/fact_accuracy")}
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
        if row["error"]:
            text = f"error: {row['error']}"
        print(f"{row['id']:<44} {row['stage']:<10} {row['status']:<10} {(row['parent'] or '-'):<32} {text}")
    return 0


def cmd_stop(args) -> int:
    from lab import jobs
    from lab.runs import Run

    run = Run.open(args.run)
    status = jobs.stop(run, grace=args.grace, wait=True)
    print(f"{run.id}: {status}")
    return 0


def cmd_resume(args) -> int:
    """Queue a stopped or failed run to go on from its last checkpoint (or, without one, a new run from its saved
    model: `jobs.resume`); with --wait, until it ends."""
    from lab import jobs
    from lab.runs import Run

    old = Run.open(args.run)
    run = jobs.resume(old)
    if run.id == old.id:
        at = (run.info.get("resumes") or [{}])[-1].get("step")
        print(f"{run.id}: queued, to go on from " + (f"the checkpoint of step {at}" if at is not None else "where it stopped"), file=sys.stderr)
    else:
        print(f"{old.id} has no checkpoint: queued {run.id}, a new run from its saved model for the steps it had left", file=sys.stderr)
    if args.wait:
        status = jobs.wait(run)
        print(f"{run.id}: {status}" + (f": {run.info.get('error')}" if status != "completed" and run.info.get("error") else ""), file=sys.stderr)
        print(run.id)
        return 0 if status == "completed" else 1
    print(run.id)
    return 0


def cmd_delete(args) -> int:
    from lab import runs
    from lab.runs import Run

    gone = runs.delete(Run.open(args.run), with_dependents=args.with_dependents)
    print(f"deleted {', '.join(gone)}")
    return 0


def cmd_world(args) -> int:
    from lab import labeler
    from lab.world import WorldConfig, build_world, write_world

    t0 = time.time()
    config = configs.from_args(WorldConfig, args)
    paths = write_world(args.out, config)
    paths.update(labeler.write_judging(build_world(config), args.out))
    for path in paths.values():
        n = sum(1 for _ in open(path, encoding="utf-8")) if path.suffix == ".jsonl" else None
        print(f"{path}  ({n} records)" if n is not None else str(path))
    print(f"toy world (seed {config.seed}) written in {time.time() - t0:.1f}s", file=sys.stderr)
    return 0


def cmd_presets(args) -> int:
    from tokenizers import Tokenizer
    from tokenizers import models as tk_models

    from lab.models import PRESETS, build_from_scratch, count_parameters
    from lab.tokenizers import SPECIAL_TOKENS, UNK, wrap

    print(f"{'preset':<8} {'vocab':>6} {'clm params':>12} {'mlm params':>12}  about")
    for name, p in PRESETS.items():
        # A stand-in tokenizer of the preset's vocabulary size: parameter counts depend only on its size.
        words = SPECIAL_TOKENS + [f"t{i}" for i in range(p.vocab - len(SPECIAL_TOKENS))]
        tok = wrap(Tokenizer(tk_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=UNK)))
        counts = [count_parameters(build_from_scratch(name, obj, tok, 128)) for obj in ("clm", "mlm")]
        print(f"{name:<8} {len(tok):>6} {counts[0]:>12,} {counts[1]:>12,}  {p.about}")
    return 0


def cmd_export(args) -> int:
    import shutil

    from lab.models import merge_adapter
    from lab.runs import Run

    run = Run.open(args.run)
    out = Path(args.out) if args.out else run.path / "merged"
    if (run.path / "adapter").is_dir():
        if not args.merge:
            print(f"error: run {run.id} holds a LoRA adapter; pass --merge to fold it into its base", file=sys.stderr)
            return 2
        merge_adapter(run.path / "adapter", out)
    elif (run.path / "model").is_dir():
        shutil.copytree(run.path / "model", out, dirs_exist_ok=True)
    else:
        print(f"error: run {run.id} has no saved model (status: {run.status})", file=sys.stderr)
        return 2
    print(out)
    return 0


def cmd_quickstart(args) -> int:
    """The whole lifecycle as a background job, followed here step by step; Ctrl-C stops it (it saves what it
    has, and `--continue` carries on). With --detach, the run id at once."""
    from lab import jobs
    from lab.runs import Run
    from lab.stages import lifecycle

    if args.continue_run:
        run = lifecycle.resume(Run.open(args.continue_run))
    else:
        config = lifecycle.Config(scale=args.scale, with_stages=",".join(args.with_stages or []), seed=args.seed, device=args.device, name=args.name or "")
        run = jobs.submit("lifecycle", config)
    if args.detach:
        print(f"lifecycle queued; follow it with `llm-lab runs` or on Home; stop it with `llm-lab stop {run.id}`", file=sys.stderr)
        print(run.id)
        return 0
    return follow_lifecycle(run)


def follow_lifecycle(run) -> int:
    from lab.stages import lifecycle

    return follow_steps(run, lifecycle.progress, "lifecycle", f"llm-lab quickstart --continue {run.id}", lambda: (run.path / "report.md").read_text(encoding="utf-8"))


def follow_steps(run, progress, what: str, again: str, at_end, poll: float = 1.0) -> int:
    """Follow a run made of other runs (a lifecycle, an experiment) step by step on stderr, and print its id last;
    Ctrl-C stops it (it saves what it has, and `again` carries on). `at_end()`: what to print when it completed."""
    from lab import jobs, runs

    # A process started in the background of a script (`cmd &`) inherits SIGINT ignored, and Python then keeps
    # it so: a Ctrl-C, or the SIGINT the app or a test sends, would not stop what this follows.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    shown = {}
    try:
        while True:
            jobs.reap()  # the job this process started: no zombie once it ends
            p = progress(run)
            if run.status == "queued" and "queued" not in shown:
                ahead = jobs.ahead_of(run)
                print(f"waiting in the queue: {ahead} job(s) ahead" if ahead else "queued", file=sys.stderr, flush=True)
                shown["queued"] = True
            for row in p["steps"]:
                if shown.get(row["step"]) != row["status"] and row["status"] not in ("waiting", "not started"):
                    took = f" in {row['seconds']:.0f} s" if row["seconds"] and row["status"] not in runs.ACTIVE else ""
                    print(f"{row['step']:<10} {row['status']:<10} {row['run'] or ''}{took}{' (made before, reused)' if row.get('shared') else ''}", file=sys.stderr, flush=True)
                    shown[row["step"]] = row["status"]
            if p["status"] not in runs.ACTIVE:
                break
            time.sleep(poll)
    except KeyboardInterrupt:
        print(f"stopping the {what} (carry on later with `{again}`)", file=sys.stderr, flush=True)
        jobs.stop(run, wait=True)
    status = run.status
    if status == "completed":
        print(at_end(), file=sys.stderr)
    elif status in ("failed", "stopped"):
        print(f"{what} {status}: {run.info.get('error') or ''} (carry on with `{again}`)", file=sys.stderr)
    print(run.id)
    return 0 if status == "completed" else 1


def cmd_experiment(args) -> int:
    """An experiment as a background job, followed here; Ctrl-C stops it and `--continue` carries it on."""
    from lab import experiments, jobs
    from lab.errors import UserError
    from lab.runs import Run
    from lab.stages import experiment

    if args.list:
        for e in experiments.catalogue():
            print(f"{e['name']:<18} {e['question']}\n{'':<18} runs: {e['runs']}; about {e['expected_seconds']['nano'] / 60:.0f} min at nano scale, "
                  f"{e['expected_seconds']['default'] / 60:.0f} min at default\n")
        return 0
    if args.continue_run:
        run = experiment.resume(Run.open(args.continue_run))
    elif not args.name:
        raise UserError(f"name an experiment: {', '.join(experiments.names())} (`llm-lab experiment --list` says what each answers)")
    else:
        experiments.get(args.name)  # the name, as the user typed it (a positional, not --experiment)
        config = experiment.Config(experiment=args.name, scale=args.scale, seeds=args.seeds, seed=args.seed, device=args.device)
        run = jobs.submit("experiment", config)
    if args.detach:
        print(f"experiment queued; follow it with `llm-lab runs` or on the Experiments page; stop it with `llm-lab stop {run.id}`", file=sys.stderr)
        print(run.id)
        return 0
    return follow_steps(run, experiment.progress, "experiment", f"llm-lab experiment --continue {run.id}",
                        lambda: f"{(experiment.result(run) or {}).get('conclusion', '')}\n(result.json and plot.html in {run.path})")


def cmd_seed(args) -> int:
    """A nano lifecycle in an empty store (what a demo opens with), in the foreground."""
    from lab import jobs
    from lab.runs import list_runs
    from lab.stages import lifecycle

    if list_runs() and not args.force:
        print("the store has runs already: nothing to seed (--force seeds another lifecycle)", file=sys.stderr)
        return 0
    return follow_lifecycle(jobs.submit("lifecycle", lifecycle.Config(scale="nano", name="demo")))


def cmd_eval(args) -> int:
    from lab import evals

    result = evals.evaluate(args.run, against=args.against, reward=args.reward, device=args.device)
    for key, value in result["metrics"].items():
        print(f"{key:<28} {value:.4g}" if isinstance(value, float) else f"{key:<28} {value}")
    if result.get("note"):
        print(result["note"], file=sys.stderr)
    print(f"written to the eval.json of run {result['run']} ({result['seconds']} s)", file=sys.stderr)
    return 0


def cmd_feedback(args) -> int:
    from lab import inference, labeler

    principles = labeler.read_constitution(args.constitution) if args.constitution else None
    if not args.revise and not args.labeler:
        raise UserError("name the judge with --labeler RUN (an instruct model), or pass --revise to have --model critique and revise its own answers")
    device, note = inference.pick_device(args.device)
    if note:
        print(note, file=sys.stderr)
    if args.revise:
        out = labeler.critique_and_revise(args.model, prompts=args.prompts, limit=args.limit, principles=principles,
                                          name=args.name if args.name != "ai-feedback" else "revisions", seed=args.seed, device=device)
        print(f"{out['chats']} revised answers of {out['model']} under {', '.join(out['principles'])}"
              + (f" ({out['empty']} empty revisions left out)" if out["empty"] else ""))
        if out["gold"]:
            g = out["gold"]
            print(f"gold score: first answers {g['first']:.3f}, revisions {g['revised']:.3f} ({g['revision_changed']:.0%} of the answers changed)")
        print(f"SFT chats saved to {out['file']} (train on them: llm-lab train sft --parent RUN --data {out['file']})", file=sys.stderr)
        return 0
    out = labeler.ai_feedback(args.labeler, args.model, prompts=args.prompts, k=args.k, limit=args.limit, principles=principles,
                              name=args.name, temperature=args.temperature, seed=args.seed, device=device, heldout=args.heldout)
    pct = lambda v: "–" if v is None else f"{v:.1%}"  # noqa: E731
    print(f"{out['added']} pairs from {out['prompts']} prompts ({out['skipped_prompts']} with fewer than two different answers), "
          f"labeled by {out['labeler']} under {', '.join(out['principles'])}")
    print(f"agreement with the gold judge: {pct(out['gold_agreement'])} of the {out['gold_pairs']} pairs it tells apart; "
          f"with the people's pairs so far: {pct(out['human_agreement'])} of {out['human_pairs']}")
    if out["heldout"]:
        held = out["heldout"]
        per = ", ".join(f"{name} {v:.1%}" for name, v in held["by_principle"].items())
        print(f"on the toy world's {held['pairs']} held-out pairs: {pct(held['agreement'])} as the gold rules ({per})")
    print(f"saved to {out['file']} ({out['pairs']} pairs in all)", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from lab import evals
    from lab.runs import Run

    card = evals.report_card(args.run)
    print((Run.open(card["lifecycle"]).path / "report.md").read_text(encoding="utf-8"))
    return 0


def cmd_app(args) -> int:
    auth = None
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not (sep and user and password):
            raise UserError("--auth takes USER:PASS, e.g. --auth ada:s3cret")
        auth = (user, password)
    from pages.app import launch  # gradio only here: the engine and its jobs never import it

    launch(host=args.host, port=args.port, share=args.share, auth=auth)
    return 0


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Every command's flags. The stages' flags come from their Config dataclasses, whose modules import
    torch and transformers: they are loaded only when `argv` is a `train` command (or None: all of them),
    so `llm-lab runs` and `llm-lab stop` answer in a second instead of eight."""
    parser = argparse.ArgumentParser(prog="llm-lab", description="LLM Lifecycle Lab: tokenizer → pretraining → SFT → alignment.", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command")

    from lab.world import WorldConfig

    p = sub.add_parser("app", help="the lab in a browser (what `llm-lab` alone runs)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on; 0.0.0.0 for every interface (default: %(default)s)")
    p.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--auth", metavar="USER:PASS", help="ask for this user name and password")

    p = sub.add_parser("world", help="write the toy world's datasets as jsonl")
    p.add_argument("--out", required=True, help="output folder")
    configs.add_arguments(p, WorldConfig)  # the size knobs: --seed, --n-countries, --mentions-per-fact, ...

    p = sub.add_parser("train", help="run a stage")
    stage_parsers = p.add_subparsers(dest="stage", required=True)
    training = argv is None or argv[:1] == ["train"]
    named = argv[1] if training and argv and len(argv) > 1 and argv[1] in stages.names() else None
    for stage in stages.names():
        if not training or named not in (None, stage):
            stage_parsers.add_parser(stage)  # its flags are not needed to parse this command line
            continue
        module = stages.get(stage)
        sp = stage_parsers.add_parser(stage, help=(module.__doc__ or "").strip().splitlines()[0], description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        configs.add_arguments(sp, module.Config)
        sp.add_argument("--config", help="a JSON file of config fields (a run's run.json works too); flags override it")
        sp.add_argument("--detach", action="store_true", help="queue as a background job and return at once")
        sp.add_argument("--run-id", help=argparse.SUPPRESS)
        if "nproc" in {f.name for f in configs.fields(module.Config)}:
            sp.add_argument("--machine-rank", type=int, default=0, metavar="R",
                            help="several machines: this machine's rank; machine 0 (the default) creates and writes the run, the others join it")

    add_pipeline_commands(sub)

    p = sub.add_parser("eval", help="evaluate a run's model and write its eval.json")
    p.add_argument("run")
    p.add_argument("--against", metavar="RUN", help="the chat model to compare with (default: an aligned model's parent)")
    p.add_argument("--reward", metavar="RUN", help="a reward model to score the answers with (default: PPO's and GRPO's own)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps (default: %(default)s)")

    p = sub.add_parser("feedback", help="AI feedback: a labeler model compares a model's answers under each principle of a constitution; "
                                        "the pairs join the feedback store (with --revise: the model critiques and revises its answers, as SFT chats)")
    p.add_argument("--labeler", default="", metavar="RUN", help="the judge: a run, folder or hub id of an instruct model")
    p.add_argument("--revise", action="store_true", help="critique and revision instead: --model answers, critiques its answer under a "
                   "principle and revises it; the revisions are saved as SFT chats among the store's uploads (--name, default revisions)")
    p.add_argument("--model", required=True, metavar="RUN", help="the model whose answers are compared")
    p.add_argument("--constitution", default="", metavar="FILE", help="principles: a JSON list of {name, text}, or `name: text` lines "
                   "(default: the store's, as the Feedback page saved them, else the toy world's four)")
    p.add_argument("--prompts", default="world", help="'world' (the toy world's prompts) or a file of prompts, pairs or chats (default: %(default)s)")
    p.add_argument("-k", type=int, default=4, help="answers sampled per prompt; every two are compared (default: %(default)s)")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="prompts at most (default: %(default)s)")
    p.add_argument("--name", default="ai-feedback", help="the feedback dataset to add the pairs to (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the answers (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default: %(default)s)")
    p.add_argument("--heldout", action="store_true", help="also measure the labeler on the toy world's held-out preference pairs")

    p = sub.add_parser("report", help="a lifecycle's report card (written again from its models' eval.json)")
    p.add_argument("run")

    p = sub.add_parser("seed", help="a nano lifecycle in an empty store: what a demo opens with")
    p.add_argument("--force", action="store_true", help="seed even if the store has runs")

    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("stop", help="stop a job")
    p.add_argument("run")
    p.add_argument("--grace", type=float, default=30.0, help="seconds to wait for a clean stop before SIGKILL")

    p = sub.add_parser("resume", help="carry on a stopped or failed run from its last checkpoint")
    p.add_argument("run")
    p.add_argument("--wait", action="store_true", help="wait for the run to end, and exit 0 only if it completes")

    p = sub.add_parser("delete", help="delete a run and its files")
    p.add_argument("run")
    p.add_argument("--with-dependents", action="store_true", help="delete the runs built on it (and lifecycles listing it) too")

    sub.add_parser("presets", help="model presets and their parameter counts")

    p = sub.add_parser("export", help="write a run's model as a standalone folder (merging a LoRA adapter)")
    p.add_argument("run")
    p.add_argument("--merge", action="store_true", help="fold a LoRA adapter into its base model")
    p.add_argument("--out", help="output folder (default: the run's merged/)")
    return parser


def add_pipeline_commands(sub) -> None:
    """The commands that run other runs: the whole lifecycle and the experiments."""
    p = sub.add_parser("quickstart", help="the whole lifecycle, measured: tokenizer → pretrain → SFT → reward model → DPO, PPO → evals → report card")
    p.add_argument("--scale", default="default", choices=("nano", "default"), help="nano: a few minutes on 2 CPU cores; default: the CPU default models, steps fitted to the toy world (default: %(default)s)")
    p.add_argument("--with", dest="with_stages", action="append", choices=("grpo",), help="an optional step to add")
    p.add_argument("--continue", dest="continue_run", metavar="RUN", help="carry on a stopped or failed lifecycle from its first unfinished step")
    p.add_argument("--name", help="a name for the lifecycle run")
    p.add_argument("--seed", type=int, default=0, help="random seed of every step (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default: %(default)s)")
    p.add_argument("--detach", action="store_true", help="queue it as a background job and print its run id at once")

    p = sub.add_parser("experiment", help="an experiment that measures one of the lifecycle's claims, with a plot and a conclusion (--list: which)")
    p.add_argument("name", nargs="?", help="the experiment (see --list)")
    p.add_argument("--list", action="store_true", help="the experiments, the question each answers and its expected time")
    p.add_argument("--scale", default="default", choices=("nano", "default"), help="nano: minutes on 2 CPU cores; default: the lifecycle's default models and steps (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=0, help="seeds per compared run (default: the experiment's own number)")
    p.add_argument("--continue", dest="continue_run", metavar="RUN", help="carry on a stopped or failed experiment, reusing its finished runs")
    p.add_argument("--seed", type=int, default=0, help="the first seed (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default: %(default)s)")
    p.add_argument("--detach", action="store_true", help="queue it as a background job and print its run id at once")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv or ["app"])  # `llm-lab` alone opens the lab in a browser
    try:
        return dispatch(args, parser)
    except Exception as e:  # what the user got wrong is one line that says what to do; our bugs keep a traceback
        if not isinstance(e, UserError):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


def dispatch(args, parser) -> int:
    commands = {"quickstart": cmd_quickstart, "experiment": cmd_experiment, "eval": cmd_eval, "feedback": cmd_feedback, "report": cmd_report, "seed": cmd_seed, "runs": cmd_runs, "stop": cmd_stop, "resume": cmd_resume, "delete": cmd_delete, "world": cmd_world, "presets": cmd_presets, "export": cmd_export, "app": cmd_app}
    if args.command == "train":
        return cmd_train(args, parser)
    if args.command in commands:
        return commands[args.command](args)
    parser.print_help()
    return 0
