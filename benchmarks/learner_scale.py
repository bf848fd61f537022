#!/usr/bin/env python3
"""The central learner's cost per meta-iteration against the number of workers and the
model's size, on a real multi-raylet Ray cluster (`ray.cluster_utils.Cluster`) whose
workers compute nothing: what is left is the learner's own work (flatten and share the
parameters, dispatch the shards, bring the gradients in, reduce them, step Adam).

The learner is `MetaLearner` itself (sinusoid MLP 1-h-h-1, h chosen for the size), with its
executor replaced by a `WorkerPool` of `NullRunner` actors: each returns a fixed gradient of
the model's size at once, so every byte still travels as in a real run. The cluster: a head
with no CPUs (the driver's node, whose object store receives what the learner gets) and
--nodes worker nodes; the workers are spread over them.

    python3 benchmarks/learner_scale.py --sizes 100k,10M,100M --workers 1,2,4,8,16,32

Two variants of the reduction are timed at every (size, workers) point, round-robin in the
same rounds (--rounds of --iters iterations each, after the workers start): the learner
brings in every shard's gradient and adds them (`learner-adds`), or each group of 8 shards
is added on the cluster and the learner brings in one gradient per group (`cluster-adds`;
distmeta's default does this from 9 shards on, where it measured a gain). The table gives each phase's median seconds and the median
over rounds of the ratio of the two totals; both give the same bits. Points whose gradients would not fit this machine
(workers x size x 4 bytes over --max-gather-gb) are skipped and listed as such.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time

import numpy as np
import torch

SIZES = {"100k": 314, "10M": 3160, "100M": 9998}  # hidden width h of MLP 1-h-h-1


class NullRunner:
    """A shard runner that computes nothing: one gradient of `n_params` floats, returned
    (and so serialised and shipped) by every call."""

    def __init__(self, n_params: int, threads: int = 1):
        self.grad = np.random.default_rng(0).standard_normal(n_params, dtype=np.float32) * 1e-3

    def meta_grad(self, meta, iteration, indices, sampling_meta=None):
        assert meta.shape == self.grad.shape
        return self.grad, len(indices), {"pre_loss": 0.0, "post_loss": 0.0}

    def close(self):
        pass


class Timed:
    """Seconds spent in one method of an object, per call, without changing what it does."""

    def __init__(self, owner, name: str):
        self.calls: list[float] = []
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.calls.append(time.perf_counter() - start)

        setattr(owner, name, timed)

    def take(self) -> float:
        total, self.calls = sum(self.calls), []
        return total


def learner_for(size: str):
    from distmeta.loading import load_config
    from distmeta.runtime import MetaLearner

    h = SIZES[size]
    config = load_config("sinusoid-maml", [f"model.hidden_sizes=[{h}, {h}]", "num_workers=0",
                                           "meta_batch_size=64", "runtime.device=cpu"])
    return MetaLearner(config)


VARIANTS = {"learner-adds": False, "cluster-adds": True}  # WorkerPool.add_on_cluster


def measure(learner, workers: int, iters: int, rounds: int) -> dict:
    """Median seconds per phase of each variant, and the per-round ratio of their totals."""

    from distmeta.runtime.pool import WorkerPool

    n_params = sum(learner.layout.sizes)
    pool = WorkerPool(NullRunner, (n_params,), workers, num_cpus=1, num_gpus=0, timeout_s=None, max_attempts=3)
    learner.executor = pool
    learner.config = dataclasses.replace(learner.config, num_workers=workers)
    timers = {"flatten": Timed(learner.layout, "flatten"), "share": Timed(pool, "share"),
              "gather": Timed(pool, "map_sum"), "adam": Timed(learner.optimizer, "step")}
    rows: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    try:
        deadline = time.monotonic() + 600
        while pool.alive < workers:  # every worker started, outside the timing
            if time.monotonic() > deadline:
                raise SystemExit(f"error: {workers} workers did not all start in 600 s")
            learner.step()
        for t in timers.values():
            t.take()
        for r in range(rounds):
            order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                pool.add_on_cluster = VARIANTS[name]
                for _ in range(iters):
                    start = time.perf_counter()
                    learner.step()
                    total = time.perf_counter() - start
                    row = {k: t.take() for k, t in timers.items()}
                    row["reduce"] = total - sum(row.values())  # the mean, the clip, the metrics
                    row["total"] = total
                    rows[name].append(row)
        nodes = len({node for node, _ in pool.whereabouts()})
        same_bits = _same_bits(learner, pool)
    finally:
        pool.close()
    out = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in rows.items()}
    per_round = [
        statistics.median(r["total"] for r in rows["learner-adds"][i * iters:(i + 1) * iters])
        / statistics.median(r["total"] for r in rows["cluster-adds"][i * iters:(i + 1) * iters])
        for i in range(rounds)]
    return {"variants": out, "speedup": statistics.median(per_round), "nodes_used": nodes, "same_bits": same_bits}


def _same_bits(learner, pool) -> bool:
    """Whether both variants give the same summed gradient for the same calls."""
    from distmeta.runtime.learner import split_shards

    meta = pool.share(learner.layout.flatten(learner.meta).numpy())
    calls = [(meta, 0, s) for s in split_shards(learner.config.meta_batch_size, learner.config.num_workers)]
    sums = []
    for on_cluster in (False, True):
        pool.add_on_cluster = on_cluster
        sums.append(pool.map_sum("meta_grad", calls)[0][0])
    return bool(np.array_equal(*sums))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100k,10M,100M")
    parser.add_argument("--workers", default="1,2,4,8,16,32")
    parser.add_argument("--nodes", type=int, default=4, help="worker nodes (raylets) besides the head")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-gather-gb", type=float, default=6.5,
                        help="skip points whose gradients into the driver exceed this per iteration")
    parser.add_argument("--store-gb", type=float, default=3.0, help="object store per worker node")
    parser.add_argument("--head-store-gb", type=float, default=8.0, help="the head's (driver's) object store")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    sizes = args.sizes.split(",")
    if bad := [s for s in sizes if s not in SIZES]:
        raise SystemExit(f"error: --sizes: unknown {bad}; choose from {list(SIZES)}")
    worker_counts = [int(w) for w in args.workers.split(",")]
    torch.set_num_threads(1)

    import ray
    from ray.cluster_utils import Cluster

    gb = 1024 ** 3
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": int(args.head_store_gb * gb)})
    per_node = -(-max(worker_counts) // args.nodes)  # CPUs for every worker, one each
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=per_node, object_store_memory=int(args.store_gb * gb))
    ray.init(address=cluster.address, logging_level="ERROR")
    results = []
    try:
        for size in sizes:
            learner = learner_for(size)
            n_params = sum(learner.layout.sizes)
            for workers in worker_counts:
                gather_gb = workers * n_params * 4 / 1e9
                point = {"size": size, "params": n_params, "workers": workers, "gather_gb": gather_gb}
                if gather_gb > args.max_gather_gb:
                    point["skipped"] = f"{gather_gb:.1f} GB of gradients a step > --max-gather-gb"
                else:
                    point.update(measure(learner, workers, args.iters, args.rounds))
                results.append(point)
                print(json.dumps(point), flush=True)
            learner.close()
            del learner
    finally:
        ray.shutdown()
        cluster.shutdown()

    print("\n| params | workers | nodes | gradients into the learner (GB, learner adds) | variant | flatten | "
          "share | gather | reduce | adam | total (s) | learner-adds / cluster-adds |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for p in results:
        if "skipped" in p:
            print(f"| {p['size']} | {p['workers']} | | {p['gather_gb']:.2f} | skipped: {p['skipped']} |||||||")
            continue
        for name, v in p["variants"].items():
            ratio = f"{p['speedup']:.2f}" if name == "cluster-adds" else ""
            print(f"| {p['size']} | {p['workers']} | {p['nodes_used']} | {p['gather_gb']:.2f} | {name} | "
                  f"{v['flatten']:.3f} | {v['share']:.3f} | {v['gather']:.3f} | {v['reduce']:.3f} | "
                  f"{v['adam']:.3f} | {v['total']:.3f} | {ratio} |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"command": " ".join(sys.argv), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
