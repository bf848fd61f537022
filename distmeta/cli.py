"""`distmeta` command line: a thin layer over the public API.

    distmeta train CONFIG [--set KEY=VALUE]... [--out DIR] [--address ADDR] [--resume]
    distmeta eval RUN_DIR_OR_CHECKPOINT [--tasks N] [--split test] [--steps K]
                  [--set KEY=VALUE]... [--json]
    distmeta adapt RUN_DIR_OR_CHECKPOINT (--task KEY=VALUE... | --sample-task SEED)
                   [--steps K] [--episodes E] [--seed S] [--json] [--save DIR]
    distmeta adapt RUN_DIR_OR_CHECKPOINT --support SUPPORT.npz --predict QUERY.npy
                   [--steps K] [--out PREDICTIONS.npy]
    distmeta tune SEARCH_CONFIG [--set KEY=VALUE]... [--out DIR] [--address ADDR] [--resume]
    distmeta plot RUN_DIR... [--out curve.png] [--window N]
    distmeta presets [--show NAME]

Bad input exits with status 2 and one line on stderr starting `error:`; a run that
cannot go on (workers lost beyond `runtime.max_shard_attempts`, a diverged meta-gradient)
exits 1 the same way. torch and Ray are imported only by the commands that need them, so
`--help`, `presets` and a bad config key answer at once.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shlex
import signal
import sys
from datetime import datetime
from pathlib import Path

from distmeta.console import (
    Progress,
    StopOnSignal,
    TaskProgress,
    check_paths,
    describe,
    ignoring_ctrl_c,
    print_error,
    print_json,
    window_mean,
)
from distmeta.errors import RunError, UserError
from distmeta.loading import apply_overrides, load_config, presets, read_yaml
from distmeta.log import log_to_stderr


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other input error
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    # As `python -m` does: a user's module beside where the command is typed (task.family:
    # mypkg.lines:Lines) imports without PYTHONPATH. Workers need no import (the family's
    # code travels with it); Tune trials put the same folder on their path.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    parser = _Parser(prog="distmeta", description="Distributed meta-learning on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="meta-train from a YAML config or preset")
    train.add_argument("config", help="YAML file or preset name (see `distmeta presets`)")
    train.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a dotted config key; repeatable")
    train.add_argument("--out", help="run directory (default: runs/<config>-<time>)")
    train.add_argument("--address", help="an existing Ray cluster (HOST:PORT or auto)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its newest checkpoint")

    ev = sub.add_parser("eval", help="pre/post-adaptation scores on held-out tasks")
    ev.add_argument("checkpoint", help="a run directory or a checkpoint file")
    ev.add_argument("--tasks", type=int, default=600, help="held-out tasks (default 600, as the papers)")
    ev.add_argument("--split", default="test", help="train, val or test (default test)")
    ev.add_argument("--steps", type=int, default=None,
                    help="inner steps (default: the run's algorithm.eval_inner_steps)")
    ev.add_argument("--seed", type=int, default=0,
                    help="seed of the held-out tasks (default 0; the same for every run)")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="change task.*, runtime.*, rl.*, algorithm.eval_inner_steps or inner_lr")
    ev.add_argument("--workers", type=int, default=0, help="score on N Ray workers (default 0: in process)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")

    ad = sub.add_parser("adapt", help="adapt a meta-RL policy to one task (return per step), or a "
                                      "supervised model to your support set (predictions)")
    ad.add_argument("checkpoint", help="a run directory or a checkpoint file")
    which = ad.add_mutually_exclusive_group(required=True)
    which.add_argument("--task", dest="task", action="append", metavar="KEY=VALUE",
                       help="meta-RL: the task, one key at a time (VALUE as YAML: goal=[0.3,-0.2])")
    which.add_argument("--sample-task", type=int, metavar="SEED",
                       help="meta-RL: the task env.sample_tasks(1, seed=SEED) draws")
    which.add_argument("--support", metavar="NPZ",
                       help="supervised: an .npz with arrays x (inputs) and y (labels or targets)")
    ad.add_argument("--predict", metavar="NPY", help="supervised: the inputs to predict, an .npy")
    ad.add_argument("--out", metavar="NPY", help="supervised: write the predictions here instead of printing")
    ad.add_argument("--steps", type=int, default=None,
                    help="adaptation steps (default: the run's algorithm.eval_inner_steps)")
    ad.add_argument("--episodes", type=int, default=None,
                    help="episodes per step (default: the run's rl.episodes_per_task)")
    ad.add_argument("--seed", type=int, default=0, help="seed of the episodes (default 0)")
    ad.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="change task.*, runtime.*, rl.*, algorithm.eval_inner_steps or inner_lr")
    ad.add_argument("--save", help="write the adapted policy to this directory")
    ad.add_argument("--json", action="store_true", help="print one JSON object")

    tu = sub.add_parser("tune", help="Ray Tune search over meta-hyperparameters")
    tu.add_argument("config", help="a search YAML (see tune_configs/) or a shipped config's name")
    tu.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the search config (num_samples=2, fixed.num_workers=0); "
                         "repeatable")
    tu.add_argument("--out", help="search directory (default: runs/tune-<config>-<time>)")
    tu.add_argument("--address", help="an existing Ray cluster (HOST:PORT or auto)")
    tu.add_argument("--resume", action="store_true",
                    help="continue the interrupted search in --out (it unpickles Tune's state: trust the folder)")

    pl = sub.add_parser("plot", help="pre/post-adaptation curves of training runs, as a PNG")
    pl.add_argument("runs", nargs="+", help="run directories")
    pl.add_argument("--out", default="curve.png", help="the PNG to write (default curve.png)")
    pl.add_argument("--window", type=int, default=50, help="iterations per mean (default 50)")

    pr = sub.add_parser("presets", help="list the built-in configs")
    pr.add_argument("--show", metavar="NAME", help="print one preset's YAML, with its comments")

    args = parser.parse_args(argv)
    log_to_stderr()
    try:
        check_paths(args)
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "adapt":
            return _adapt(args)
        if args.command == "tune":
            return _tune(args)
        if args.command == "plot":
            from distmeta.plot import plot_runs

            print(f"wrote {plot_runs(args.runs, args.out, args.window)}")
            return 0
        return _presets(args.show)
    except UserError as exc:
        print_error(exc)
        return 2
    except RunError as exc:
        print_error(exc)
        return 1
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # what was written before is whole: atomic
            hint = (f", then continue with --resume --out {args.out or 'RUN_DIRECTORY (named above)'}"
                    if args.command == "train" else "")
            print_error(f"{exc.filename or args.out or 'a file'}: no space left on device; files written before "
                        f"are intact (checkpoints are written whole or not at all): free space{hint}")
            return 1
        print_error(exc)  # an unwritable --out: the path is in the message
        return 2


def _train(args) -> int:
    config = load_config(args.config, args.overrides)
    out = _out_dir(args, "run", "")

    from distmeta.runtime.learner import MetaLearner

    progress = Progress(config.iterations)
    started_ray = False
    again = ["distmeta", "train", args.config, *[f"--set={o}" for o in args.overrides],
             *(["--address", args.address] if args.address else []), "--out", str(out), "--resume"]
    stop = StopOnSignal()
    try:
        if config.num_workers > 0:
            import ray

            started_ray = not ray.is_initialized()
        with stop, MetaLearner(config, out_dir=out, address=args.address, resume=args.resume) as learner:
            stop.install()  # again: starting Ray may have put its own SIGTERM handler in place
            progress.start(learner.iteration, str(out))
            last = learner.train(progress.update, stop=stop.requested)
            at = learner.iteration
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: {shlex.join(again)}", file=sys.stderr)
        return 130
    finally:
        with ignoring_ctrl_c():  # the clean-up after a stop runs to its end
            progress.finish()
            if started_ray:
                import ray

                ray.shutdown()
    if stop.signum is not None:
        name = signal.Signals(stop.signum).name
        print(f"stopped by {name} at iteration {at}, checkpoint written; continue with: {shlex.join(again)}",
              file=sys.stderr)
        return 128 + stop.signum
    if last is not None:
        print(f"done: {config.iterations} iterations, {describe(window_mean(progress.recent))} "
              f"(mean of the last {len(progress.recent)})")
    print(f"run directory: {out}")
    return 0


def _out_dir(args, what: str, prefix: str) -> Path:
    """--out, or runs/<prefix><config>-<time>; a resume must name the directory."""
    if args.out:
        return Path(args.out)
    if args.resume:
        raise UserError(f"--resume: name the {what} directory to continue with --out DIR")
    return Path("runs") / f"{prefix}{Path(args.config).stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _eval(args) -> int:
    from distmeta.runtime.evaluate import evaluate

    progress = TaskProgress("evaluating")
    try:
        result = evaluate(args.checkpoint, tasks=args.tasks, split=args.split, steps=args.steps,
                          overrides=args.overrides, seed=args.seed, on_progress=progress, workers=args.workers)
    finally:
        progress.close()
    if args.json:
        print_json(result)
        return 0
    print(f"{result['checkpoint']} (iteration {result['iteration']}): {result['tasks']} "
          f"{result['split']} tasks, {result['inner_steps']} inner steps")
    for phase in ("pre_adaptation", "post_adaptation"):
        cells = [f"{k} {v['mean']:.4f}" + (f" ± {v['ci95']:.4f}" if v["ci95"] is not None else "")
                 for k, v in result[phase].items()]
        print(f"  {phase:<16} " + "   ".join(cells))
    return 0


def _adapt(args) -> int:
    if args.support is not None:
        return _adapt_model(args)
    if args.predict is not None or args.out is not None:
        raise UserError("--predict/--out: only with --support (a supervised run)")
    from distmeta.runtime.adapt import adapt_policy

    task = None
    if args.task is not None:
        task = apply_overrides({}, args.task, what="--task", example="goal=[0.3,-0.2] (the env's task keys)")
    progress = TaskProgress("adapting", unit="batch", plural="episode batches")
    try:
        result = adapt_policy(args.checkpoint, task=task, sample_task=args.sample_task,
                              steps=args.steps, episodes=args.episodes, seed=args.seed,
                              save=args.save, overrides=args.overrides, on_progress=progress)
    finally:
        progress.close()
    if args.json:
        print_json({"task": result["task"], "returns": result["returns"],
                     **({"saved": result["saved"]} if "saved" in result else {})})
        return 0
    print(f"{result['checkpoint']} (iteration {result['iteration']}): task {json.dumps(result['task'])}, "
          f"{result['episodes']} episodes per step")
    for step, ret in enumerate(result["returns"]):
        print(f"  after {step} step{'s' if step != 1 else ''}: return {ret:.3f}")
    if "saved" in result:
        print(f"adapted policy: {result['saved']}")
    return 0


def _adapt_model(args) -> int:
    import numpy as np

    from distmeta.fileio import atomic_write
    from distmeta.runtime.adapt_model import adapt_model

    if args.predict is None:
        raise UserError("--predict: required with --support (an .npy of the inputs to predict)")
    try:
        with np.load(args.support, allow_pickle=False) as data:
            x, y = data["x"], data["y"]
        query = np.load(args.predict, allow_pickle=False)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"--support/--predict: cannot read the arrays ({type(exc).__name__}: {exc}); expected an "
                        ".npz with x and y, and an .npy") from None
    model = adapt_model(args.checkpoint, x, y, steps=args.steps, overrides=args.overrides)
    predictions = model.predict(query)
    if args.out is not None:
        atomic_write(Path(args.out), lambda f: np.save(f, predictions))
        print(f"predictions {predictions.shape} after {model.steps} steps: {args.out}")
    else:
        print_json({"steps": model.steps, "predictions": predictions.tolist()})
    return 0


def _tune(args) -> int:
    from distmeta.search import load_search

    spec = load_search(args.config, args.overrides)
    out = _out_dir(args, "search", "tune-")

    from distmeta.search.runner import run_search

    summary = run_search(spec, out, address=args.address, resume=args.resume)
    metric = summary["metric"]
    keys = list(spec.space)
    print(f"{'trial':<14}{'status':<9}{'iter':>7}  {metric:>24}  " + "  ".join(keys))
    for t in summary["trials"]:
        value = "-" if t["metric"] is None else f"{t['metric']:.6g}"
        print(f"{t['trial_id']:<14}{t['status']:<9}{t['iteration']:>7}  {value:>24}  "
              + "  ".join(_short(t["values"][k]) for k in keys))
        if t["error"]:
            print(f"{'':<14}error: {t['error']}")
    best = summary["best"]
    if best is not None:
        print(f"best: {best['trial_id']} {metric} {best['metric']:.6g} ({summary['mode']})")
        print(f"best config: {best['config']}  (distmeta train {best['config']})")
        if "checkpoint" in best:
            print(f"best checkpoint: {best['checkpoint']}  (distmeta eval {best['checkpoint']})")
    print(f"search directory: {out}  (tensorboard --logdir {out})")
    if summary["interrupted"]:
        again = ["distmeta", "tune", args.config, *[f"--set={o}" for o in args.overrides],
                 *(["--address", args.address] if args.address else []), "--out", str(out), "--resume"]
        print(f"interrupted; continue with: {shlex.join(again)}", file=sys.stderr)
        return 130
    if best is None:
        print("error: no trial finished with a finite metric; see the errors above", file=sys.stderr)
        return 1
    return 0


def _short(value) -> str:
    if value is None:  # a trial that never started has no values yet
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _presets(show: str | None) -> int:
    found = presets()
    if show is not None:
        if show not in found:
            raise UserError(f"presets --show: got '{show}'; expected one of: {', '.join(found)}")
        print(found[show].read_text(), end="")
        return 0
    for name, path in found.items():
        raw = read_yaml(str(path))
        task = raw.get("task", {}).get("family", "?")
        algo = raw.get("algorithm", {}).get("name", "?")
        wall = re.search(r"^# Wall time here[^:]*: (about [^ ]+ [^ ]+)", path.read_text(), re.MULTILINE)
        print(f"{name:<20} {algo} on {task}, {raw.get('iterations', '?')} iterations, "
              f"{raw.get('num_workers', 0)} workers" + (f", {wall.group(1)} on 2 CPU cores" if wall else ""))
    print("(distmeta presets --show NAME prints one, with where it follows its paper)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
