#!/usr/bin/env python3
"""Random search vs ASHA vs PBT at equal compute on sinusoid MAML.

    python3 benchmarks/tune_schedulers.py --seeds 0 1 2 --json-out bench_out/tune.json

Each method searches the space of `tune_configs/sinusoid_maml_asha.yaml` (inner and outer
learning rates, inner steps, first order) with in-process trials (`num_workers: 0`, half a
CPU each, so four run at once on 2 cores) and selects on the same 200 validation sinusoids.
Budgets, in meta-iterations summed over trials:

- random: `--random-trials` trials x `--iterations` (FIFO);
- asha: `--asha-trials` trials, stopped at rungs grace x 3^k (asynchronous ASHA ran about
  0.3 of the iterations per trial here, so 3x the trials for about the same compute);
- pbt: a population of `--random-trials` x `--iterations`, perturbing both learning rates.

The compute each search really used (meta-iterations run, counting PBT's re-runs after an
exploit) is measured from the trials' reports and printed beside the result. The best
trial's final checkpoint of each search is then scored on `--test-tasks` test sinusoids
(`distmeta.evaluate`, the same tasks for every method): post-adaptation MSE, mean and 95%
half-width. Prints one JSON report and a markdown table of per-method medians over seeds.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPACE = str(REPO / "tune_configs" / "sinusoid_maml_asha.yaml")


def method_overrides(method: str, args) -> list[str]:
    common = ["fixed.num_workers=0", "resources.learner_cpu=0.5", "resources.worker_cpu=null",
              f"max_iterations={args.iterations}", f"report_every={args.report_every}",
              f"validation.tasks={args.val_tasks}"]
    if method == "random":
        return common + ["scheduler=fifo", f"num_samples={args.random_trials}"]
    if method == "asha":
        return common + ["scheduler=asha", f"scheduler.grace_period={args.grace}", f"num_samples={args.asha_trials}"]
    return common + ["scheduler=pbt", f"scheduler.perturbation_interval={args.iterations // 5}",
                     "scheduler.mutations=[algorithm.inner_lr, algorithm.outer_lr]",
                     f"num_samples={args.random_trials}"]


def iterations_run(out: Path, report_every: int) -> int:
    """Meta-iterations the search ran: every report covers `report_every` of them."""
    return sum(report_every * len(f.read_text().splitlines()) for f in out.glob("run_trial_*/reports.jsonl"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["random", "asha", "pbt"])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--report-every", type=int, default=50)
    parser.add_argument("--random-trials", type=int, default=8)
    parser.add_argument("--asha-trials", type=int, default=24)
    parser.add_argument("--grace", type=int, default=100)
    parser.add_argument("--val-tasks", type=int, default=200)
    parser.add_argument("--test-tasks", type=int, default=1000)
    parser.add_argument("--out", default="bench_out/tune")
    parser.add_argument("--json-out")
    args = parser.parse_args()

    import ray

    from distmeta import evaluate
    from distmeta.search import load_search, run_search

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    rows = []
    for seed in args.seeds:
        for method in args.methods:
            spec = load_search(SPACE, [*method_overrides(method, args), f"seed={seed}"])
            out = Path(args.out).resolve() / f"{method}-seed{seed}-{int(time.time())}"
            start = time.perf_counter()
            summary = run_search(spec, out)
            wall = time.perf_counter() - start
            best = summary["best"]
            scored = evaluate(best["checkpoint"], tasks=args.test_tasks, split="test")
            row = {"method": method, "seed": seed, "trials": len(summary["trials"]),
                   "iterations_run": iterations_run(out, args.report_every), "wall_s": round(wall, 1),
                   "best_values": best["values"], "best_val_loss": best["metric"],
                   "test_post_mse": scored["post_adaptation"]["loss"]["mean"],
                   "test_post_ci95": scored["post_adaptation"]["loss"]["ci95"], "dir": str(out)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    ray.shutdown()

    report = {"command": shlex.join([sys.executable, *sys.argv]), "args": vars(args), "rows": rows}
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print("\n| method | median test MSE after 1 step | per seed (± 95%) | median meta-iterations run | median wall |")
    print("|---|---|---|---|---|")
    for method in args.methods:
        mine = [r for r in rows if r["method"] == method]
        per_seed = ", ".join(f"{r['test_post_mse']:.3f} ± {r['test_post_ci95']:.3f}" for r in mine)
        print(f"| {method} | {statistics.median(r['test_post_mse'] for r in mine):.3f} | {per_seed} | "
              f"{statistics.median(r['iterations_run'] for r in mine):.0f} | "
              f"{statistics.median(r['wall_s'] for r in mine):.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
