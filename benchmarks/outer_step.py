#!/usr/bin/env python3
"""The learner's outer step on one core: torch's Adam as a per-parameter loop (its CPU
default), `foreach`, and `fused` (distmeta's), on MLP-shaped parameters of --params
floats, each timed in turn in the same rounds (order reversed every other round); the
table gives the median ms per step and the median over rounds of loop's time / its time.

    python3 benchmarks/outer_step.py --params 20M --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

SIZES = {"1M": 1000, "20M": 3160, "100M": 7070}  # two h x h matrices and a bias


def build(h: int, **options) -> torch.optim.Optimizer:
    params = [torch.zeros(h, h, requires_grad=True), torch.zeros(h, requires_grad=True),
              torch.zeros(h, h, requires_grad=True)]
    for p in params:
        p.grad = torch.randn_like(p)
    return torch.optim.Adam(params, lr=1e-3, **options)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="20M", choices=list(SIZES))
    parser.add_argument("--steps", type=int, default=5, help="steps per block")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    h = SIZES[args.params]
    variants = {"loop": build(h, foreach=False), "foreach": build(h, foreach=True), "fused": build(h, fused=True)}
    for opt in variants.values():
        opt.step()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name in (list(variants) if r % 2 == 0 else list(reversed(variants))):
            start = time.perf_counter()
            for _ in range(args.steps):
                variants[name].step()
            times[name].append((time.perf_counter() - start) / args.steps)
    n = sum(p.numel() for group in variants["loop"].param_groups for p in group["params"])
    print(f"| Adam, {n / 1e6:.1f}M float32 parameters, 1 thread | ms per step (median) | loop's time / its time (median of rounds) |")
    print("|---|---:|---:|")
    for name, t in times.items():
        ratio = statistics.median(a / b for a, b in zip(times["loop"], t))
        print(f"| {name} | {statistics.median(t) * 1e3:.1f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
