#!/usr/bin/env python3
"""Train a config for a wall-clock budget, then evaluate the final checkpoint on held-out tasks.

    python3 benchmarks/quality.py sinusoid-maml --set num_workers=0 --minutes 10 \\
        --eval-tasks 1000 --json-out runs/quality-sine.json

Training runs through distmeta's MetaLearner with a run directory (so metrics.jsonl holds
the whole curve and checkpoints land in OUT/checkpoints) until `iterations` of the config
or `--minutes` of training wall time, whichever comes first (the iteration running when the
budget ends is finished). Checkpoints are written on the config's `checkpoint_every`
schedule, as `MetaLearner.train()` does, and always at the end. Then
`distmeta.runtime.evaluate` scores the final checkpoint on `--eval-tasks` tasks of
`--split` (with `--eval-set` overrides, e.g. `task.data_dir=...`, `algorithm.eval_inner_steps=3`).

Prints one JSON report (and writes it to --json-out): iterations done, wall times, the last
training metrics line and the mean of the last few, the evaluation result, and the curve
(every Nth metrics line, always including the last).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

import torch


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compact(line: dict) -> dict:
    out = {"iteration": line["iteration"]}  # meta_loss is post_loss
    for phase in ("pre_adaptation", "post_adaptation"):
        for k, v in line[phase].items():
            out[f"{phase.split('_')[0]}_{k}"] = v
    out["time_s"] = line["time_s"]
    return out


def window_mean(lines: list[dict]) -> dict | None:
    if not lines:
        return None
    rows = [compact(line) for line in lines]
    keys = [k for k in rows[0] if k not in ("iteration",)]
    out = {"iterations": [rows[0]["iteration"], rows[-1]["iteration"]]}
    out.update({k: sum(r[k] for r in rows) / len(rows) for k in keys})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML file or preset name")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override, as `distmeta train --set`")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training wall-clock budget (default: none, run the iterations)")
    parser.add_argument("--out", help="run directory (default runs/quality-<config>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--address", help="an existing Ray cluster (HOST:PORT or auto)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of this process (runtime.threads; default 1)")
    parser.add_argument("--eval-tasks", type=int, default=100, help="held-out tasks (default 100)")
    parser.add_argument("--split", default="test", help="train, val or test (default test)")
    parser.add_argument("--eval-steps", type=int, default=None,
                        help="inner steps at evaluation (default: algorithm.eval_inner_steps)")
    parser.add_argument("--eval-set", dest="eval_overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="evaluation override of the stored config: task.*, runtime.*, "
                             "rl.*, algorithm.eval_inner_steps, algorithm.inner_lr")
    parser.add_argument("--curve-points", type=int, default=50,
                        help="about this many metrics lines in the curve (default 50)")
    parser.add_argument("--curve-every", type=int, default=None,
                        help="every Nth metrics line in the curve (overrides --curve-points)")
    parser.add_argument("--tail", type=int, default=20,
                        help="average the last N training lines too (default 20)")
    parser.add_argument("--json-out", help="also write the JSON report here")
    args = parser.parse_args(argv)

    from distmeta.errors import UserError
    from distmeta.loading import load_config
    from distmeta.runtime import MetaLearner
    from distmeta.runtime.evaluate import evaluate

    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    print(f"command: {command}", file=sys.stderr, flush=True)
    if args.threads:  # the learner sets this process's threads from the config
        args.overrides.append(f"runtime.threads={args.threads}")

    try:
        config = load_config(args.config, args.overrides)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # evaluate() checks these only after training; fail before spending the budget.
    from distmeta.runtime.evaluate import EVAL_OVERRIDABLE, TRAINED_ON

    for item in args.eval_overrides:
        if not item.startswith(EVAL_OVERRIDABLE) or item.startswith(TRAINED_ON):
            print(f"error: --eval-set: got '{item}'; evaluation may change only task.* (not task.split "
                  "or task.trainval, the classes trained on), runtime.*, rl.*, algorithm.eval_inner_steps, "
                  "algorithm.inner_lr and model.batch_norm", file=sys.stderr)
            return 2
    try:
        from distmeta.experiment import build_experiment

        eval_config = load_config(args.config, [*args.overrides, *args.eval_overrides])
        build_experiment(eval_config).family.check_split(args.split, "--split")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("runs") / (
        f"quality-{Path(args.config).stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    budget_s = args.minutes * 60 if args.minutes is not None else None

    started_ray = False
    t_setup = time.perf_counter()
    try:
        if config.num_workers > 0 and args.address is None:
            import ray

            started_ray = not ray.is_initialized()
        learner = MetaLearner(config, out_dir=out, address=args.address, resume=args.resume)
        setup_s = time.perf_counter() - t_setup
        start_iteration = learner.iteration
        last_report = t0 = time.perf_counter()

        def report(line):
            nonlocal last_report
            if time.perf_counter() - last_report >= 30:
                last_report = time.perf_counter()
                print(f"  iteration {line['iteration']}, {last_report - t0:.0f} s",
                      file=sys.stderr, flush=True)

        try:
            learner.train(report, time_budget_s=budget_s)
            train_s = time.perf_counter() - t0
            stop = "iterations" if learner.iteration >= config.iterations else "budget"
            iterations_done = learner.iteration - start_iteration
            final_iteration = learner.iteration
        finally:
            learner.close()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if started_ray:
            import ray

            ray.shutdown()

    metrics = read_metrics(out / "metrics.jsonl")
    every = args.curve_every or max(1, len(metrics) // max(args.curve_points, 1))
    curve = [compact(m) for i, m in enumerate(metrics) if (i + 1) % every == 0]
    if metrics and (not curve or curve[-1]["iteration"] != metrics[-1]["iteration"]):
        curve.append(compact(metrics[-1]))

    t_eval = time.perf_counter()
    try:
        result = evaluate(out, tasks=args.eval_tasks, split=args.split, steps=args.eval_steps,
                          overrides=args.eval_overrides)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    eval_s = time.perf_counter() - t_eval

    report = {
        "command": command,
        "config": args.config,
        "overrides": args.overrides,
        "run_dir": str(out),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "num_workers": config.num_workers,
        "budget_minutes": args.minutes,
        "config_iterations": config.iterations,
        "stopped_by": stop,
        "start_iteration": start_iteration,
        "iterations_done": iterations_done,
        "final_iteration": final_iteration,
        "setup_s": setup_s,
        "train_wall_s": train_s,
        "iterations_per_s": iterations_done / train_s if train_s > 0 else None,
        "final_train": compact(metrics[-1]) if metrics else None,
        f"last_{args.tail}_train_mean": window_mean(metrics[-args.tail:]),
        "eval_wall_s": eval_s,
        "eval_overrides": args.eval_overrides,
        "eval": result,
        "curve_every": every,
        "curve": curve,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text + "\n")
        print(f"JSON: {args.json_out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
