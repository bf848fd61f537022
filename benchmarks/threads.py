#!/usr/bin/env python3
"""In-process meta-iterations per second at each torch thread count, on a quiet machine
and beside busy processes: what `runtime.threads`' default is chosen by.

    python3 benchmarks/threads.py --threads 1,2 --busy 0,1 --rounds 5

Workloads: `sine` (the sinusoid-maml preset in-process: MLP 1-40-40-1, meta-batch 25) and
`conv` (omniglot-maml: Conv4, 5-way 1-shot, meta-batch 8) and `conv-q15` (the same with 15
queries per class and max-pooling, W2's arithmetic per task). For each `--busy` count, that
many processes spinning on the CPU (at normal priority) run for the whole phase; within it,
each round runs one block of every thread count in turn (order reversed every other
round), and the ratio of each count's rate to 1 thread's is taken per round; the table
gives the medians.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data" / "omniglot").resolve()
WORKLOADS = {
    "sine": ("sinusoid-maml", ["num_workers=0"]),
    "conv": ("omniglot-maml", ["num_workers=0", "meta_batch_size=8", f"task.data_dir={DATA}"]),
    "conv-q15": ("omniglot-maml", ["num_workers=0", "meta_batch_size=8", f"task.data_dir={DATA}",
                                   "task.q_query=15", "model.downsample=maxpool"]),
}


def spin(stop) -> None:
    while not stop.is_set():
        pass


def rate(learner, threads: int, iters: int) -> float:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    for _ in range(iters):
        learner.step()
    return iters / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--busy", default="0,1", help="spinning processes beside the runs, per phase")
    parser.add_argument("--workloads", default="sine,conv,conv-q15")
    parser.add_argument("--iters", default="sine=50,conv=2,conv-q15=1", help="iterations per block")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    from distmeta.loading import load_config
    from distmeta.runtime import MetaLearner

    counts = [int(t) for t in args.threads.split(",")]
    iters = dict(item.split("=") for item in args.iters.split(","))
    print("| workload | busy processes | threads | median it/s | ratio to 1 thread (median of rounds) |")
    print("|---|---:|---:|---:|---:|")
    for name in args.workloads.split(","):
        preset, sets = WORKLOADS[name]
        with MetaLearner(load_config(preset, sets)) as learner:
            for n in counts:  # warm-up, untimed
                rate(learner, n, 1)
            for busy in (int(b) for b in args.busy.split(",")):
                stop = multiprocessing.Event()
                spinners = [multiprocessing.Process(target=spin, args=(stop,), daemon=True) for _ in range(busy)]
                for p in spinners:
                    p.start()
                rates: dict[int, list[float]] = {n: [] for n in counts}
                for r in range(args.rounds):
                    for n in (counts if r % 2 == 0 else counts[::-1]):
                        rates[n].append(rate(learner, n, int(iters[name])))
                stop.set()
                for p in spinners:
                    p.join()
                for n in counts:
                    ratio = statistics.median(a / b for a, b in zip(rates[n], rates[counts[0]]))
                    print(f"| {name} | {busy} | {n} | {statistics.median(rates[n]):.2f} | {ratio:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
