#!/usr/bin/env python3
"""Round-trip time of one small call from the learner to a worker, three ways, and what a
waiting worker costs: the numbers behind the direct channel (distmeta/runtime/channel.py).

  ray        a classic Ray actor call (`ray.get(actor.f.remote(...))`)
  compiled   a Ray Compiled Graph of the same method (`experimental_compile`)
  channel    distmeta's direct channel to the same actor

The call carries what a W1 shard call carries (1761 float32 parameters, the iteration, 25
task indices) and returns a gradient of the same size, a count and a dict. Each round times
--calls calls of every way in turn (the order reversed every other round); the table gives
the median microseconds per call and the median over rounds of the ratio to `ray`. Then the
CPU seconds a worker spends in --idle-s seconds of waiting for a call (compiled graph
actor vs channel actor), and whether a compiled graph still returns the other actors'
results when one of its actors is killed.

    python3 benchmarks/call_latency.py --calls 300 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np


class Echo:
    def f(self, x, iteration, indices):
        return x * 0.5, len(indices), {"post_loss": 1.0, "pre_loss": 2.0}

    def slow(self, x, iteration, indices):
        time.sleep(0.5)
        return self.f(x, iteration, indices)

    def pid(self):
        return os.getpid()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=2.0)
    args = parser.parse_args(argv)

    import ray
    from ray.dag import InputNode, MultiOutputNode

    from distmeta.runtime import channel

    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    remote = ray.remote(num_cpus=1)(Echo)
    plain, graphed = remote.remote(), remote.remote()
    ray.get([plain.pid.remote(), graphed.pid.remote()])
    key = os.urandom(32)
    direct = channel.Channel(ray.get(plain.__ray_call__.remote(channel.serve, key)), key)
    with InputNode() as inp:
        dag = graphed.f.bind(inp[0], inp[1], inp[2])
    compiled = dag.experimental_compile()
    x, indices = np.random.default_rng(0).standard_normal(1761, dtype=np.float32), list(range(25))

    def by_ray(n):
        for i in range(n):
            ray.get(plain.f.remote(x, i, indices))

    def by_compiled(n):
        for i in range(n):
            ray.get(compiled.execute(x, i, indices))

    def by_channel(n):
        for i in range(n):
            _, lost = direct.receive(direct.send("f", (x, i, indices)))
            assert lost is None

    ways = {"ray": by_ray, "compiled": by_compiled, "channel": by_channel}
    for f in ways.values():
        f(20)
    times = {name: [] for name in ways}
    for r in range(args.rounds):
        for name in (list(ways) if r % 2 == 0 else list(reversed(ways))):
            start = time.perf_counter()
            ways[name](args.calls)
            times[name].append((time.perf_counter() - start) / args.calls)
    print(f"| way | µs per call (median of {args.rounds} rounds of {args.calls}) | ratio to ray (median of rounds) |")
    print("|---|---:|---:|")
    for name, t in times.items():
        ratio = statistics.median(a / b for a, b in zip(t, times["ray"]))
        print(f"| {name} | {statistics.median(t) * 1e6:.0f} | {ratio:.2f} |")

    pids = {"compiled": ray.get(graphed.__ray_call__.remote(lambda self: os.getpid())),
            "channel": ray.get(plain.pid.remote())}
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    time.sleep(args.idle_s)
    print(f"\n| worker waiting for a call | CPU seconds in {args.idle_s:g} s |")
    print("|---|---:|")
    for k, p in pids.items():
        print(f"| {k} | {cpu_seconds(p) - before[k]:.2f} |")
    compiled.teardown()
    direct.close()

    # One of two actors killed while the other's result is ready.
    pair = [remote.remote() for _ in range(2)]
    with InputNode() as inp:
        dag = MultiOutputNode([pair[0].slow.bind(inp, 0, indices), pair[1].f.bind(inp, 0, indices)])
    compiled = dag.experimental_compile()
    refs = compiled.execute(x)
    time.sleep(0.2)
    ray.kill(pair[0])
    survived = []
    for ref in refs:
        try:
            ray.get(ref)
            survived.append("result")
        except Exception as exc:  # noqa: BLE001 - any error is the answer here
            survived.append(type(exc).__name__)
    print(f"\ncompiled graph, actor 0 killed during its call: actor 0 -> {survived[0]}, "
          f"actor 1 (done) -> {survived[1]}")
    try:
        compiled.teardown()
    except Exception:  # noqa: BLE001, S110 - the graph is already torn down by the kill
        pass
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
