#!/usr/bin/env python3
"""W2 (Omniglot 5-way 1-shot 15-query, Conv4, meta-batch 32, second-order MAML) on one CUDA
GPU, in one short run (under 8 minutes on one GPU; see gpu_check.sh):

1. gradients: a shard's meta-gradient on the GPU (loop and vmap) against the CPU's, same
   tasks and parameters, with TF32 off (float32 throughout) and with PyTorch's default
   (TF32 convolutions): max |difference| / max |CPU gradient| per run;
2. speed in-process: `MetaLearner.step()` it/s on the GPU, task batching loop vs vmap vs
   the CPU loop (1 thread), round-robin;
3. speed through Ray, when Ray is importable: 1 and 2 workers sharing the one GPU
   (runtime.resources_per_worker.gpu = 0.5 each; runtime.device=cuda, so a worker that
   does not see the GPU fails the run).

Fails with one line when no GPU is visible. Writes the numbers as JSON (--json-out) and
prints a markdown table."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

W2 = ["meta_batch_size=32", "task.n_way=5", "task.k_shot=1", "task.q_query=15", "model.name=conv4",
      "algorithm.name=maml", "algorithm.inner_steps=1", "algorithm.first_order=false", "iterations=100000000"]


def config(data_dir: str, *extra: str):
    from distmeta.loading import load_config

    return load_config("omniglot-maml", [*W2, f"task.data_dir={data_dir}", *extra])


def gradient_check(data_dir: str, tasks: int) -> list[dict]:
    from distmeta.experiment import build_experiment

    rows = []
    cpu = build_experiment(config(data_dir, "runtime.device=cpu", "runtime.task_batching=loop")).make_runner()
    flat = cpu.layout.flatten(dict(cpu.problem.model.named_parameters())).numpy()
    reference, _, _ = cpu.meta_grad(flat, 0, range(tasks))
    scale = float(np.abs(reference).max())
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for batching in ("loop", "vmap"):
            gpu = build_experiment(config(data_dir, "runtime.device=cuda",
                                          f"runtime.task_batching={batching}")).make_runner()
            got, _, _ = gpu.meta_grad(flat, 0, range(tasks))
            rows.append({"batching": batching, "tf32": tf32,
                         "max_abs_diff_over_max_abs": float(np.abs(got - reference).max()) / scale})
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's defaults for the timings
    torch.backends.cuda.matmul.allow_tf32 = False
    return rows


def speed(variants: dict, rounds: int, iters: int) -> dict[str, float]:
    """Median it/s of each learner, timed round-robin (order reversed every other round);
    the learners are closed after."""
    try:
        return _rates(variants, rounds, iters)
    finally:
        for learner in variants.values():
            learner.close()


def _rates(variants: dict, rounds: int, iters: int) -> dict[str, float]:
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for learner in variants.values():
        learner.step()  # warm-up: CUDA context, cuDNN's algorithm choice, actors
    for r in range(rounds):
        order = list(variants.items())
        for name, learner in (order if r % 2 == 0 else order[::-1]):
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(iters):
                learner.step()
            torch.cuda.synchronize()
            rates[name].append(iters / (time.perf_counter() - start))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:.3f}" for n, v in rates.items()),
              file=sys.stderr, flush=True)
    return {name: statistics.median(v) for name, v in rates.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/omniglot")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3, help="iterations per timed block")
    parser.add_argument("--grad-tasks", type=int, default=4)
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU visible to torch; run this on a GPU machine")
    if not (Path(args.data_dir) / "images_background.npz").is_file():
        raise SystemExit(f"error: --data-dir: no Omniglot (images_background.npz) in {args.data_dir}")
    torch.set_num_threads(1)
    from distmeta.runtime import MetaLearner

    report: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    report["gradients"] = gradient_check(args.data_dir, args.grad_tasks)
    learners = {
        "cuda loop": MetaLearner(config(args.data_dir, "num_workers=0", "runtime.device=cuda",
                                        "runtime.task_batching=loop")),
        "cuda vmap": MetaLearner(config(args.data_dir, "num_workers=0", "runtime.device=cuda",
                                        "runtime.task_batching=vmap")),
        "cpu loop (1 thread)": MetaLearner(config(args.data_dir, "num_workers=0", "runtime.device=cpu",
                                                  "runtime.task_batching=loop")),
    }
    report["in_process_it_per_s"] = speed(learners, args.rounds, args.iters)
    try:
        import ray
    except ImportError:
        report["ray"] = "not run: ray is not installed here"
    else:
        ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, logging_level="ERROR")
        try:
            pools = {f"ray {n} worker(s), 0.5 GPU each": MetaLearner(config(
                args.data_dir, f"num_workers={n}", "runtime.device=cuda", "runtime.task_batching=auto",
                "runtime.resources_per_worker.cpu=1", "runtime.resources_per_worker.gpu=0.5")) for n in (1, 2)}
            report["ray_it_per_s"] = speed(pools, args.rounds, args.iters)
        finally:
            ray.shutdown()
    print(json.dumps(report, indent=2))
    print("\n| check | value |\n|---|---|")
    for row in report["gradients"]:
        print(f"| gradient {row['batching']}, TF32 {'on' if row['tf32'] else 'off'}: max abs diff / max abs CPU "
              f"| {row['max_abs_diff_over_max_abs']:.1e} |")
    for section in ("in_process_it_per_s", "ray_it_per_s"):
        for name, rate in report.get(section, {}).items() if isinstance(report.get(section), dict) else ():
            print(f"| {name} it/s | {rate:.3f} |")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
