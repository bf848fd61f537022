#!/usr/bin/env python3
"""Meta-RL numbers: adaptation curves against baselines, and sampling throughput.

    # Return after 0..K adaptation steps on held-out tasks, for a meta-trained run and the
    # baselines (random initialisation; RLlib PPO on the task mixture), JSON + PNG:
    python3 benchmarks/meta_rl.py curve bench_out/nav2d-maml --steps 3 --tasks 40 \\
        --ppo-minutes 30 --ppo-iterations 500 --ppo-params bench_out/nav2d-ppo.pt \\
        --json-out bench_out/nav2d-curve.json --plot bench_out/nav2d-curve.png

    # Env steps per second of meta-training with 1 and 2 Ray workers (median over iterations):
    python3 benchmarks/meta_rl.py throughput nav2d-maml --workers 1 2 --iterations 12

    # One worker's env steps per second, config variants round-robin in this process (with
    # --sampling, each variant's sampling alone too):
    python3 benchmarks/meta_rl.py worker nav2d-maml --compare task.vectorized=true task.vectorized=false

Every policy is adapted by the same code (`RLShardRunner.sample_adaptation`, the inner step
of meta-training) with the same budget: `--episodes` episodes per step (default the run's
`rl.episodes_per_task`), the run's inner learning rate, the same held-out tasks and seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from distmeta.loading import load_config
from distmeta.runners.rl import RLShardRunner
from distmeta.runtime import MetaLearner
from distmeta.runtime.evaluate import load_run, summarise


def adaptation_curve(runner: RLShardRunner, params: dict, n_tasks: int, steps: int, episodes: int,
                     seed: int, chunk: int = 20) -> np.ndarray:
    """Mean episode return (n_tasks, steps + 1) after 0..steps adaptation steps on the
    held-out test tasks drawn from `seed` (the tasks `distmeta eval` uses)."""
    return np.concatenate([
        runner.return_curve(params, "test", range(lo, min(lo + chunk, n_tasks)), steps, seed, episodes)
        for lo in range(0, n_tasks, chunk)
    ])


def curve(args) -> dict:
    path, state, experiment = load_run(args.run, args.set)
    config, family = experiment.config, experiment.family
    runner = experiment.make_runner()
    episodes = args.episodes or config.rl.episodes_per_task
    policies = {
        "MAML-RL": {k: v.detach() for k, v in state["meta_params"].items()},
        "random init": experiment.initial_meta_params(),
    }
    extra = {}
    cached = Path(args.ppo_params) if args.ppo_params else None
    if cached is not None and cached.is_file():
        ppo = torch.load(cached, weights_only=False)
    elif args.ppo_minutes > 0:
        from distmeta.rl.rllib_baseline import train_multitask_ppo

        def log(line):
            if line["iteration"] % 50 == 0 and line["episode_return_mean"] is not None:
                print(f"  PPO iteration {line['iteration']}, {line['wall_s']:.0f} s, mixture return "
                      f"{line['episode_return_mean']:.2f}", file=sys.stderr, flush=True)

        ppo = train_multitask_ppo(config, time_budget_s=args.ppo_minutes * 60, seed=args.seed, log=log,
                                  max_iterations=args.ppo_iterations)
        if cached is not None:
            torch.save(ppo, cached)
    else:
        ppo = None
    if ppo is not None:
        policies["multi-task PPO (RLlib)"] = ppo["params"]
        extra["ppo"] = {k: v for k, v in ppo.items() if k != "params"}
    result = {"run": str(path), "iteration": int(state["iteration"]), "env": family.env,
              "tasks": args.tasks, "steps": args.steps, "episodes": episodes, "seed": args.seed,
              "inner_lr": config.algorithm.inner_lr, "curves": {}, **extra}
    for name, params in policies.items():
        t0 = time.perf_counter()
        returns = adaptation_curve(runner, params, args.tasks, args.steps, episodes, args.seed)
        result["curves"][name] = [summarise(returns[:, s]) for s in range(args.steps + 1)]
        print(f"{name:<24} " + "  ".join(f"{c['mean']:8.2f}" for c in result["curves"][name])
              + f"   ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if args.plot:
        plot(result, Path(args.plot))
        result["plot"] = args.plot
    return result


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for name, points in result["curves"].items():
        steps = range(len(points))
        means = [p["mean"] for p in points]
        errs = [p["ci95"] or 0.0 for p in points]
        ax.errorbar(steps, means, yerr=errs, marker="o", capsize=3, label=name)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("mean episode return")
    ax.set_xticks(range(result["steps"] + 1))
    ax.set_title(f"{result['env']}: {result['tasks']} held-out tasks, {result['episodes']} episodes/step",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def throughput(args) -> dict:
    import ray

    ray.init(num_cpus=max(args.workers), include_dashboard=False, logging_level="ERROR")
    out = {"config": args.config, "iterations": args.iterations, "rows": {}}
    try:
        for workers in args.workers:
            config = load_config(args.config, [*args.set, f"num_workers={workers}",
                                               f"iterations={args.iterations}", "rl.outer_steps=1"])
            with MetaLearner(config) as learner:
                lines = []
                learner.train(lines.append)
            rates = [x["env_steps_per_s"] for x in lines[2:]]  # skip start-up iterations
            out["rows"][workers] = {"median_env_steps_per_s": statistics.median(rates),
                                    "median_iteration_s": statistics.median(x["time_s"] for x in lines[2:])}
            print(f"{workers} worker(s): {out['rows'][workers]}", file=sys.stderr)
    finally:
        ray.shutdown()
    base = out["rows"][min(args.workers)]["median_env_steps_per_s"]
    out["speedup"] = {w: r["median_env_steps_per_s"] / base for w, r in out["rows"].items()}
    return out


def worker_rate(args) -> dict:
    """Env steps per second of one worker's `meta_grad` (sampling before and after the inner
    steps, the inner steps, the meta-gradient), in this process, for each `--compare`
    variant, timed round-robin; with `--raw-mujoco`, bare `mujoco.mj_step` calls at the env's
    frame skip in the same rounds, for scale."""
    from distmeta.experiment import build_experiment

    variants = {}
    for variant in args.compare or [""]:
        experiment = build_experiment(load_config(args.config, [*args.set, *filter(None, variant.split(","))]))
        runner = experiment.make_runner()
        variants[variant or "as configured"] = (runner, runner.layout.flatten(experiment.initial_meta_params()).numpy())
    raw = None
    if args.raw_mujoco:
        import mujoco

        env = next(iter(variants.values()))[0].family.make_env().unwrapped
        raw = (mujoco, env.model, env.data, env.frame_skip)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    if args.sampling:
        rates.update({f"{name}: sampling only": [] for name in variants})
    if raw:
        rates["raw mj_step x frame_skip"] = []
    first: dict[str, tuple] = {}
    for r in range(args.rounds + 1):  # round 0 warms up
        order = list(variants.items())
        for name, (runner, flat) in (order if r % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            grad, _, metrics = runner.meta_grad(flat, r, range(args.tasks))
            wall = time.perf_counter() - start
            first.setdefault(name, (grad, metrics["env_steps"]))
            if r:
                rates[name].append(metrics["env_steps"] / wall)
            if args.sampling:
                steps, wall = sampling_time(runner, flat, r, args.tasks)
                if r:
                    rates[f"{name}: sampling only"].append(steps / wall)
        if raw and r:
            mujoco, model, data, frame_skip = raw
            steps = int(statistics.median(rates[next(iter(variants))][-1:]) * 0.2) or 1000
            start = time.perf_counter()
            for _ in range(steps * frame_skip):
                mujoco.mj_step(model, data)
            rates["raw mj_step x frame_skip"].append(steps / (time.perf_counter() - start))
        print(f"round {r}: " + ", ".join(f"{n} {v[-1]:.0f}" for n, v in rates.items() if v), file=sys.stderr)
    grads = [g for g, _ in first.values()]
    out = {"config": args.config, "tasks": args.tasks, "rounds": args.rounds,
           "median_env_steps_per_s": {n: statistics.median(v) for n, v in rates.items()},
           "same_gradient_across_variants": all(np.array_equal(grads[0], g) for g in grads),
           "env_steps_per_call": {n: s for n, (_, s) in first.items()}}
    base = next(iter(variants))
    out["ratio_to_first_per_round_median"] = {
        n: statistics.median(a / b for a, b in zip(v, rates[base])) for n, v in rates.items()}
    return out


def sampling_time(runner: RLShardRunner, flat: np.ndarray, iteration: int, n_tasks: int) -> tuple[float, float]:
    """Env steps and seconds of one `TrajectorySampler.rollout` of the meta-policy over a
    shard of `n_tasks` training tasks (`rl.episodes_per_task` episodes each): the sampling
    that `meta_grad` does once before and once after each inner step, alone."""
    from distmeta.tasks import train_task_rng

    rngs = [train_task_rng(runner.config.seed, iteration, i) for i in range(n_tasks)]
    tasks = [runner.family.sample_task(rng, "train") for rng in rngs]
    params = [runner.layout.from_numpy(flat)] * n_tasks
    start = time.perf_counter()
    batches = runner.sampler.rollout(params, tasks, rngs, runner.config.rl.episodes_per_task)
    wall = time.perf_counter() - start
    return float(sum(b["mask"].sum() for b in batches)), wall


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("curve", help="return vs adaptation step, meta-trained vs baselines")
    c.add_argument("run", help="a meta-RL run directory or checkpoint")
    c.add_argument("--tasks", type=int, default=40)
    c.add_argument("--steps", type=int, default=3)
    c.add_argument("--episodes", type=int, default=None)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--ppo-minutes", type=float, default=0.0,
                   help="train the RLlib PPO multi-task baseline for this long (0: leave it out)")
    c.add_argument("--ppo-iterations", type=int, default=None,
                   help="stop PPO after this many iterations (4,000 env steps each) if sooner")
    c.add_argument("--ppo-params", help="the PPO baseline's file: read if it exists, else "
                   "trained for --ppo-minutes and written there")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="evaluation-time change of the run's config, e.g. algorithm.inner_lr=0.05")
    c.add_argument("--plot", help="write a PNG here")
    c.add_argument("--json-out")
    t = sub.add_parser("throughput", help="env steps/s of meta-training per worker count")
    t.add_argument("config")
    t.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    t.add_argument("--iterations", type=int, default=12)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--json-out")
    w = sub.add_parser("worker", help="env steps/s of one worker's meta-gradient, variants round-robin")
    w.add_argument("config")
    w.add_argument("--compare", nargs="+", metavar="KEY=VALUE[,KEY=VALUE]",
                   help="config variants timed against each other, e.g. task.vectorized=true task.vectorized=false")
    w.add_argument("--tasks", type=int, default=10, help="tasks in the worker's shard")
    w.add_argument("--rounds", type=int, default=5)
    w.add_argument("--raw-mujoco", action="store_true", help="also time bare mj_step (MuJoCo envs)")
    w.add_argument("--sampling", action="store_true",
                   help="also time each variant's sampling alone (one rollout of the shard)")
    w.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    w.add_argument("--json-out")
    args = parser.parse_args(argv)
    if args.command == "throughput" and args.iterations < 3:
        parser.error(f"--iterations: got {args.iterations}; expected >= 3 (the first two are skipped)")
    torch.set_num_threads(1)
    result = {"curve": curve, "throughput": throughput, "worker": worker_rate}[args.command](args)
    text = json.dumps(result, indent=1)
    if getattr(args, "json_out", None):
        Path(args.json_out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
