#!/usr/bin/env python3
"""Fault-tolerance figures for RELIABILITY.md: what faults cost and whether runs survive.

Parts (each prints its markdown rows; `--json-out` keeps the raw numbers):

  overhead  Median iteration time with the `WorkerPool` dispatch (fault handling on)
            against a bare `ray.get` over the same two actors (no fault handling), in
            --blocks pairs of blocks in one process, ABBA order, so both see the same
            machine state; also the median over pairs of each pair's ratio.
            Workloads: sinusoid-maml (tiny iterations: the worst case for a fixed per-call
            cost) and omniglot-maml (Conv4, 5-way 1-shot; meta-batch --omniglot-batch).
  kills     --kill-runs Omniglot runs with 2 workers; a thread SIGKILLs a random worker
            process every U(lo, hi) s (--kill-interval lo,hi). A run survives when it
            completes and its final meta-parameters equal a fault-free run's bit for bit.
  nodes     A `ray.cluster_utils.Cluster` (head with 0 CPUs, two 1-CPU worker nodes); every
            U(3, 6) s one worker node is removed and, 2 s later, a fresh one added.
            Survived = the same bit-for-bit check.
  resume    `distmeta train` (sinusoid, 2 workers) SIGKILLed U(0.5, 15) s after its first
            iteration, then
            rerun with --resume; equal = final checkpoint bitwise equal to an uninterrupted run.
  memory    RSS of the driver and of each worker over 500 sinusoid iterations (2 workers),
            without faults and with a worker killed every 100 iterations.

    python3 benchmarks/fault_tolerance.py                       # all parts
    python3 benchmarks/fault_tolerance.py --parts overhead --json-out bench_out/ft.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import ray
import torch
from ray.exceptions import RayError

from distmeta.errors import RunError
from distmeta.loading import load_config
from distmeta.runtime import MetaLearner
from distmeta.runtime.checkpoint import list_checkpoints, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = (REPO / ".." / "shared" / "data" / "omniglot").resolve()
DISTMETA = shutil.which("distmeta")


def sinusoid(**sets):
    base = {"num_workers": 2, "checkpoint_every": 10_000, "runtime.resources_per_worker.cpu": 1}
    return load_config("sinusoid-maml", [f"{k}={v}" for k, v in {**base, **sets}.items()])


def omniglot(args, **sets):
    base = {"num_workers": 2, "checkpoint_every": 10_000, "runtime.resources_per_worker.cpu": 1,
            "meta_batch_size": args.omniglot_batch, "task.data_dir": args.data_dir}
    return load_config("omniglot-maml", [f"{k}={v}" for k, v in {**base, **sets}.items()])


def params_of(learner):
    return {k: v.detach().clone() for k, v in learner.meta.items()}


def bitwise_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RandomKiller(threading.Thread):
    """SIGKILLs a random ready worker of `learner` every U(lo, hi) seconds."""

    def __init__(self, learner, lo, hi, rng):
        super().__init__(daemon=True)
        self.learner, self.lo, self.hi, self.rng = learner, lo, hi, rng
        self.kills = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(self.rng.uniform(self.lo, self.hi)):
            ready = self.learner.executor.whereabouts()
            if not ready:
                continue
            _, pid = self.rng.choice(ready)
            try:
                os.kill(pid, signal.SIGKILL)
                self.kills += 1
            except ProcessLookupError:
                pass


def replacement_start_times(events_file: Path) -> list[float]:
    """Seconds from each worker_lost event to its slot's next worker_replaced event."""
    lost_at, times = {}, []
    for line in events_file.read_text().splitlines() if events_file.exists() else []:
        event = json.loads(line)
        if event["event"] == "worker_lost":
            lost_at.setdefault(event["worker"], event["time"])
        elif event["event"] == "worker_replaced" and event["worker"] in lost_at:
            times.append(event["time"] - lost_at.pop(event["worker"]))
    return times


# -- parts ----------------------------------------------------------------------------


def bare_map(pool):
    """The dispatch without fault handling: one call per worker, one ray.get."""
    def map_(method, calls, context=""):
        slots = pool._slots
        return ray.get([getattr(slots[i % len(slots)].actor, method).remote(*c)
                        for i, c in enumerate(calls)]), 0
    return map_


def overhead(args):
    rows = []
    for name, config, block in [("sinusoid-maml", sinusoid(), 50), ("omniglot-maml", omniglot(args), 3)]:
        times = {"pool": [], "bare": []}
        pair_ratios = []
        with MetaLearner(config) as learner:
            for _ in range(max(3, block // 5)):  # start-up and warm-up, untimed
                learner.step()
            pool_map, plain = learner.executor.map, bare_map(learner.executor)
            for pair in range(args.blocks):
                # ABBA order: drift of the machine's state over the run cancels out.
                order = (("pool", pool_map), ("bare", plain))[::1 if pair % 2 == 0 else -1]
                block_ms = {}
                for variant, fn in order:
                    learner.executor.map = fn
                    block_times = [learner.step()["time_s"] for _ in range(block)]
                    times[variant].extend(block_times)
                    block_ms[variant] = statistics.median(block_times)
                pair_ratios.append(block_ms["pool"] / block_ms["bare"])
            learner.executor.map = pool_map
        pool_ms = statistics.median(times["pool"]) * 1e3
        bare_ms = statistics.median(times["bare"]) * 1e3
        rows.append({"workload": name, "iterations_each": block * args.blocks, "pool_ms": pool_ms,
                     "bare_ms": bare_ms, "overhead_pct": 100 * (pool_ms / bare_ms - 1),
                     "pair_ratios": pair_ratios,
                     "median_pair_overhead_pct": 100 * (statistics.median(pair_ratios) - 1)})
    print("| workload | iterations each | median iteration, pool | median, bare ray.get | overhead "
          "(ratio of medians) | median of the per-pair ratios |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['iterations_each']} | {r['pool_ms']:.2f} ms | {r['bare_ms']:.2f} ms "
              f"| {r['overhead_pct']:+.1f}% | {r['median_pair_overhead_pct']:+.1f}% |")
    return rows


def kills(args):
    rng = random.Random(args.seed)
    config = omniglot(args, iterations=args.kill_iterations,
                      **{"runtime.max_shard_attempts": args.max_shard_attempts})
    with MetaLearner(config) as learner:
        learner.train()
        reference = params_of(learner)
    runs = []
    for n in range(args.kill_runs):
        start = time.perf_counter()
        out = Path(tempfile.mkdtemp(prefix="ft-kills-")) / "run"
        with MetaLearner(config, out_dir=out) as learner:
            killer = RandomKiller(learner, *args.kill_interval, rng)
            killer.start()
            try:
                learner.train()
                survived, error = bitwise_equal(params_of(learner), reference), None
            except (RunError, RayError) as exc:  # a lost run is a result here, not a crash
                survived, error = False, f"{type(exc).__name__}: {exc}"
            finally:
                killer.stop.set()
                killer.join()
        runs.append({"kills": killer.kills, "survived": survived, "error": error,
                     "wall_s": time.perf_counter() - start,
                     "replacement_start_s": replacement_start_times(out / "events.jsonl")})
        shutil.rmtree(out.parent)
    tried = sum(r["kills"] for r in runs)
    survived = sum(r["kills"] for r in runs if r["survived"])
    lo, hi = args.kill_interval
    errors = "; ".join(sorted({r["error"] for r in runs if r["error"]})) or "none"
    starts = [s for r in runs for s in r["replacement_start_s"]]
    print(f"| worker SIGKILLs every U({lo:g}, {hi:g}) s (omniglot-maml, {args.kill_iterations} iterations "
          f"x {args.kill_runs} runs, max_shard_attempts {args.max_shard_attempts}) | {survived} of {tried} survived; {sum(r['survived'] for r in runs)} "
          f"of {len(runs)} runs bitwise equal to the fault-free run; a replacement was ready "
          f"{statistics.median(starts):.1f} s (median of {len(starts)}) after its worker was found lost; "
          f"errors: {errors} |")
    return runs


def nodes(args):
    from ray.cluster_utils import Cluster

    rng = random.Random(args.seed + 1)
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    removals, result = 0, {}
    try:
        ray.init(address=cluster.address, logging_level="ERROR")
        config = omniglot(args, iterations=args.node_iterations)
        with MetaLearner(config) as learner:
            learner.train()
            reference = params_of(learner)
        # Ray adds nodes only from the main thread: the training runs beside it.
        with MetaLearner(config) as learner:
            def training():
                try:
                    learner.train()
                    result.update(survived=bitwise_equal(params_of(learner), reference), error=None)
                except (RunError, RayError) as exc:  # a lost run is a result here, not a crash
                    result.update(survived=False, error=f"{type(exc).__name__}: {exc}")

            thread = threading.Thread(target=training)
            thread.start()
            while True:
                thread.join(rng.uniform(3.0, 6.0))
                if not thread.is_alive():
                    break
                cluster.remove_node(workers.pop(rng.randrange(len(workers))))
                removals += 1
                thread.join(2.0)
                workers.append(cluster.add_node(num_cpus=1))
    finally:
        ray.shutdown()
        cluster.shutdown()
    result["removals"] = removals
    print(f"| node removals (Cluster, omniglot-maml, {args.node_iterations} iterations) | "
          f"{removals if result['survived'] else 0} of {removals} survived; final parameters "
          f"{'bitwise equal' if result['survived'] else 'NOT equal'} to the fault-free run; "
          f"error: {result['error'] or 'none'} |")
    return result


def resume(args):
    rng = random.Random(args.seed + 2)
    sets = ["--set", f"iterations={args.resume_iterations}", "--set", "num_workers=2",
            "--set", "checkpoint_every=50"]
    work = Path(tempfile.mkdtemp(prefix="ft-resume-"))
    trials = []
    try:
        subprocess.run([DISTMETA, "train", "sinusoid-maml", *sets, "--out", work / "whole"],
                       check=True, capture_output=True)
        reference = load_checkpoint(list_checkpoints(work / "whole" / "checkpoints")[-1])["meta_params"]
        for t in range(args.resume_trials):
            out = work / f"killed{t}"
            proc = subprocess.Popen([DISTMETA, "train", "sinusoid-maml", *sets, "--out", out],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            metrics = out / "metrics.jsonl"
            while proc.poll() is None and not (metrics.exists() and metrics.read_text()):  # iterating
                time.sleep(0.05)
            time.sleep(rng.uniform(0.5, 15.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            found = list_checkpoints(out / "checkpoints")
            at = load_checkpoint(found[-1])["iteration"] if found else 0
            if found:
                subprocess.run([DISTMETA, "train", "sinusoid-maml", *sets, "--out", out, "--resume"],
                               check=True, capture_output=True)
            else:  # killed before the first checkpoint: start again, as a user would
                shutil.rmtree(out, ignore_errors=True)
                subprocess.run([DISTMETA, "train", "sinusoid-maml", *sets, "--out", out],
                               check=True, capture_output=True)
            final = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])["meta_params"]
            trials.append({"killed_after_checkpoint": at, "equal": bitwise_equal(final, reference)})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    resumed = [t for t in trials if t["killed_after_checkpoint"]]
    print(f"| driver SIGKILL + `--resume` (sinusoid-maml, {args.resume_iterations} iterations) | "
          f"{sum(t['equal'] for t in resumed)} of {len(resumed)} resumed runs bitwise equal to the "
          f"uninterrupted run (killed after checkpoints {[t['killed_after_checkpoint'] for t in trials]}; "
          f"0 = before the first, restarted: {sum(t['equal'] for t in trials if t not in resumed)} equal) |")
    return trials


def memory(args):
    rows = {}
    for label, kill_every in (("no faults", None), ("a worker killed every 100 iterations", 100)):
        series = []
        with MetaLearner(sinusoid(iterations=500)) as learner:
            for it in range(1, 501):
                learner.step()
                if it % 50 == 0:
                    workers = [rss_mib(pid) for _, pid in learner.executor.whereabouts()]
                    series.append({"iteration": it, "driver_mib": rss_mib(os.getpid()),
                                   "workers_mib": workers})
                if kill_every and it % kill_every == 0:
                    os.kill(learner.executor.whereabouts()[0][1], signal.SIGKILL)
        rows[label] = series
        first, last = series[0], series[-1]
        print(f"| {label} | driver {first['driver_mib']:.0f} -> {last['driver_mib']:.0f} MiB "
              f"(max {max(s['driver_mib'] for s in series):.0f}) | workers "
              f"{[round(w) for w in first['workers_mib']]} -> {[round(w) for w in last['workers_mib']]} MiB |")
    return rows


PARTS = {"overhead": overhead, "kills": kills, "nodes": nodes, "resume": resume, "memory": memory}
LOCAL_RAY_PARTS = {"overhead", "kills", "memory"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--omniglot-batch", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--kill-runs", type=int, default=3)
    parser.add_argument("--kill-iterations", type=int, default=40)
    parser.add_argument("--max-shard-attempts", type=int, default=3)
    parser.add_argument("--kill-interval", default="3,6",
                        type=lambda text: tuple(float(x) for x in text.split(",")))
    parser.add_argument("--node-iterations", type=int, default=60)
    parser.add_argument("--resume-trials", type=int, default=5)
    parser.add_argument("--resume-iterations", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    parts = args.parts.split(",")
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}; expected some of {sorted(PARTS)}")
    torch.set_num_threads(1)
    results = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    for part in parts:
        local = part in LOCAL_RAY_PARTS
        if local:
            ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        try:
            print(f"\n## {part}", flush=True)
            results[part] = PARTS[part](args)
        finally:
            if local:
                ray.shutdown()
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
