#!/usr/bin/env python3
"""W2's shard meta-gradient (Omniglot 5-way 1-shot 15-query, Conv4 with 64 channels, one
second-order MAML step) computed every way tried, timed round-robin in one process with one
torch thread: milliseconds per task and the ratio to distmeta's loop, median over rounds.

  distmeta-loop        distmeta's `shard_meta_grad`, a loop over tasks (what W2 runs)
  distmeta-vmap        the same with `vmap` over the shard's tasks
  loop-channels-last   distmeta's loop on images laid out channels-last
  grouped-conv         written here: every task of the shard in one forward, the tasks'
                       adapted weights as the groups of a grouped convolution, per-task
                       BatchNorm as channels, plain autograd (no torch.func)
  scale-shift          the loop with Conv4 as it was: BatchNorm without affine, then a
                       separate per-channel scale and shift, ReLU before max-pool
  relu-then-pool       the loop with the usual ReLU-then-pool order
  composite-bn         the loop with BatchNorm written as var_mean + addcmul

Each variant's meta-gradient is compared with distmeta-loop's (max abs difference over
parameters, float32), so a fast wrong variant shows.

    python3 benchmarks/conv4_alternatives.py --tasks 8 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import grad

from distmeta.algorithms import shard_meta_grad
from distmeta.experiment import build_experiment
from distmeta.loading import load_config
from distmeta.tasks import train_task_rng

DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "omniglot").resolve()


def block(x, conv_w, conv_b, bn_w, bn_b, form):
    x = F.conv2d(x, conv_w, conv_b, padding=1)
    if form == "scale-shift":
        x = F.batch_norm(x, None, None, training=True, eps=1e-5) * bn_w[:, None, None] + bn_b[:, None, None]
        return F.max_pool2d(F.relu(x), 2)
    if form == "composite-bn":
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
        scale = bn_w * torch.rsqrt(var + 1e-5)
        x = torch.addcmul((bn_b - mean * scale)[:, None, None], x, scale[:, None, None])
        return F.relu(F.max_pool2d(x, 2))
    x = F.batch_norm(x, None, None, bn_w, bn_b, training=True, eps=1e-5)
    return F.max_pool2d(F.relu(x), 2)  # relu-then-pool


def conv4(p, x, form):
    for i in range(4):
        x = block(x, p[f"body.{4 * i}.weight"], p[f"body.{4 * i}.bias"], p[f"body.{4 * i + 1}.weight"],
                  p[f"body.{4 * i + 1}.bias"], form)
    return F.linear(x.flatten(1), p["head.weight"], p["head.bias"])


def loop_with_form(meta, tasks, lr, form):
    total = None
    for t in range(tasks["support_x"].shape[0]):
        sx, sy, qx, qy = (tasks[k][t] for k in ("support_x", "support_y", "query_x", "query_y"))

        def post(p, sx=sx, sy=sy, qx=qx, qy=qy):
            g = grad(lambda q: F.cross_entropy(conv4(q, sx, form), sy))(p)
            return F.cross_entropy(conv4({k: p[k] - lr * g[k] for k in p}, qx, form), qy)

        g = grad(post)(meta)
        total = g if total is None else {k: total[k] + g[k] for k in g}
    return total


def grouped(meta, tasks, lr):
    """All tasks in one forward: input (N, T*C, H, W), weights (T*C_out, C_in, 3, 3), groups=T."""
    n_tasks = tasks["support_x"].shape[0]

    def forward(p, x):
        n = x.shape[1]
        x = x.transpose(0, 1).reshape(n, -1, *x.shape[3:])
        for i in range(4):
            w = p[f"body.{4 * i}.weight"]
            x = F.conv2d(x, w.reshape(-1, *w.shape[2:]), p[f"body.{4 * i}.bias"].reshape(-1), padding=1,
                         groups=n_tasks)
            x = F.batch_norm(x, None, None, p[f"body.{4 * i + 1}.weight"].reshape(-1),
                             p[f"body.{4 * i + 1}.bias"].reshape(-1), training=True, eps=1e-5)
            x = F.relu(F.max_pool2d(x, 2))
        z = x.reshape(n, n_tasks, -1).transpose(0, 1)
        return torch.baddbmm(p["head.bias"][:, None, :], z, p["head.weight"].transpose(1, 2))

    m = {k: v.detach().requires_grad_() for k, v in meta.items()}
    per_task = {k: v.expand(n_tasks, *v.shape) for k, v in m.items()}

    def loss(p, phase):
        out = forward(p, tasks[f"{phase}_x"])
        y = tasks[f"{phase}_y"]
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="sum") / y.shape[1]

    # The tasks' losses are independent: the gradient of their sum wrt task t's copy of the
    # parameters is task t's own gradient.
    inner = torch.autograd.grad(loss(per_task, "support"), list(per_task.values()), create_graph=True)
    adapted = {k: per_task[k] - lr * g for k, g in zip(per_task, inner)}
    return dict(zip(m, torch.autograd.grad(loss(adapted, "query"), list(m.values()))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=8, help="tasks in the shard")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default=str(DATA))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config("omniglot-maml", [
        "meta_batch_size=32", "task.n_way=5", "task.k_shot=1", "task.q_query=15", "model.name=conv4",
        "algorithm.inner_steps=1", "algorithm.first_order=false", f"task.data_dir={args.data_dir}",
        "num_workers=0"])
    experiment = build_experiment(config)
    runner = experiment.make_runner()
    tasks = runner.family.sample([train_task_rng(0, 0, i) for i in range(args.tasks)], "train")
    channels_last = {k: v.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3) if v.dim() == 5 else v
                     for k, v in tasks.items()}
    meta = {k: v.detach() for k, v in experiment.initial_meta_params().items()}
    cfg, lr = config.algorithm, config.algorithm.inner_lr

    def distmeta(batching, t):
        return shard_meta_grad(runner.algorithm, meta, runner.buffers, t, runner.problem, cfg, batching)[0]

    variants = {
        "distmeta-loop": lambda: distmeta("loop", tasks),
        "distmeta-vmap": lambda: distmeta("vmap", tasks),
        "loop-channels-last": lambda: distmeta("loop", channels_last),
        "grouped-conv": lambda: grouped(meta, tasks, lr),
        "scale-shift": lambda: loop_with_form(meta, tasks, lr, "scale-shift"),
        "relu-then-pool": lambda: loop_with_form(meta, tasks, lr, "relu-then-pool"),
        "composite-bn": lambda: loop_with_form(meta, tasks, lr, "composite-bn"),
    }
    reference = variants["distmeta-loop"]()
    diffs = {}
    for name, run in variants.items():
        got = run()
        diffs[name] = max(float((got[k] - reference[k]).abs().max()) for k in reference)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        order = list(variants.items())
        for name, run in (order if r % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) / args.tasks)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {times[n][-1] * 1e3:.0f}" for n in times),
              file=sys.stderr, flush=True)
    print(f"\n{args.tasks} tasks a shard, {args.rounds} rounds, torch {torch.__version__}, 1 thread\n")
    print("| variant | ms per task (median) | ratio to distmeta-loop (median of rounds) | max abs grad diff |")
    print("|---|---:|---:|---:|")
    for name in variants:
        ratio = statistics.median(a / b for a, b in zip(times["distmeta-loop"], times[name]))
        print(f"| {name} | {statistics.median(times[name]) * 1e3:.0f} | {ratio:.2f} | {diffs[name]:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
