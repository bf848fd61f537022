#!/usr/bin/env python3
"""What two processes on this machine's cores can gain over one on the W2 arithmetic, with
no Ray and no distmeta: the ceiling for "2 Ray workers >= 1.8x one".

Two persistent child processes each hold the bare Conv4 of throughput.py and compute
second-order MAML meta-gradients of W2-shaped tasks (5-way 1-shot, 15 queries per class,
28x28, random pixels: the arithmetic is the same). Per round, in turn (order reversed every
other round): one child computes all --tasks tasks (`one`), and both children compute
half each at the same time (`two`). The ratio is time(one) / time(two) per round; the
table gives its median.

    python3 benchmarks/two_core_ceiling.py --tasks 32 --rounds 5
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time


def child(conn, seed: int) -> None:
    import torch
    import torch.nn.functional as F
    from throughput import BareConv4
    from torch.func import functional_call, grad_and_value

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = BareConv4(1, 28, 64, 5)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, x, y):
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    def post_loss(p, sx, sy, qx, qy):
        g = torch.func.grad(loss)(p, sx, sy)
        return loss({k: p[k] - 0.4 * g[k] for k in p}, qx, qy)

    sx, sy = torch.rand(5, 1, 28, 28), torch.arange(5)
    qx, qy = torch.rand(75, 1, 28, 28), torch.arange(5).repeat(15)
    while (n := conn.recv()) is not None:
        start = time.perf_counter()
        for _ in range(n):
            grad_and_value(post_loss)(params, sx, sy, qx, qy)
        conn.send(time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=32, help="tasks per block (an even number)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.tasks < 2 or args.tasks % 2:
        raise SystemExit(f"error: --tasks: {args.tasks}; expected an even number >= 2")
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for seed in range(2):
        parent, end = ctx.Pipe()
        proc = ctx.Process(target=child, args=(end, seed), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)

    def one() -> float:
        start = time.perf_counter()
        pipes[0].send(args.tasks)
        pipes[0].recv()
        return time.perf_counter() - start

    def two() -> float:
        start = time.perf_counter()
        for p in pipes:
            p.send(args.tasks // 2)
        for p in pipes:
            p.recv()
        return time.perf_counter() - start

    for p in pipes:  # warm-up
        p.send(2)
        p.recv()
    ratios, times = [], {"one": [], "two": []}
    for r in range(args.rounds):
        order = [("one", one), ("two", two)] if r % 2 == 0 else [("two", two), ("one", one)]
        got = {name: f() for name, f in order}
        for name, t in got.items():
            times[name].append(t)
        ratios.append(got["one"] / got["two"])
        print(f"round {r + 1}: one {got['one']:.2f} s, two {got['two']:.2f} s, ratio {ratios[-1]:.2f}", flush=True)
    for p in pipes:
        p.send(None)
    for proc in procs:
        proc.join(timeout=30)
    print(f"\n| tasks | one process (s) | two processes (s) | one / two (median of {args.rounds} rounds) |")
    print("|---:|---:|---:|---:|")
    print(f"| {args.tasks} | {statistics.median(times['one']):.2f} | {statistics.median(times['two']):.2f} | "
          f"{statistics.median(ratios):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
