#!/usr/bin/env python3
"""Meta-iterations per second of second-order MAML: distmeta's `MetaLearner.step()` against a
bare torch.func step that computes only the meta-gradient (what TorchOpt, learn2learn and
higher compute), every variant timed in the same rounds.

Workloads (pinned on top of the presets, so the benchmark measures what it says even if a
preset changes):

  W1  sinusoid regression, MLP 1-40-40-1, meta-batch 25, K=10 support / 10 query,
      1 inner step, second-order MAML, Adam              (preset sinusoid-maml)
  W2  Omniglot 5-way 1-shot 15-query, Conv4, meta-batch 32, 1 inner step,
      second-order MAML, Adam                            (preset omniglot-maml; --data-dir)

Variants:

  bare          written here with torch.func: a plain nn.Module through functional_call,
                one inner SGD step per task, the second-order gradient of the mean
                post-adaptation query loss, Adam. No metrics beyond that loss. Per-task loop
                for Conv4, vmap over the tasks for the MLP (--bare-batching). Only the task
                sampler (same family, same per-task seeds) comes from distmeta.
  inproc-vmap   MetaLearner, num_workers=0, runtime.task_batching=vmap (with its metrics)
  inproc-loop   MetaLearner, num_workers=0, runtime.task_batching=loop
  ray-1, ray-2  MetaLearner with 1 or 2 Ray workers of 1 CPU each (task_batching=auto)
  before        with --before PATH: inproc-<the bare batching> of another checkout, in a
                child process that this one drives block by block

Method: 1 torch thread in this process and in every worker. Every variant is built first
(untimed), then runs --warmup iterations (untimed; Ray actor start-up). Then --rounds
rounds: in each, every variant runs one block of --iters iterations in turn (the order
reversed every other round), so load from other jobs hits all alike; each variant's rate is
divided by `bare`'s in the same round, and the table gives the median of those ratios and of
the rates. All variants start from the same seed and run the same iterations: the first
iteration's post-adaptation loss and the final parameters are compared with `bare`'s.

    python3 benchmarks/throughput.py --workloads W2 --variants bare,inproc-loop --rounds 5
    python3 benchmarks/throughput.py --iters W1=100,W2=1 --rounds 7 --json-out out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = (REPO / ".." / "shared" / "data" / "omniglot").resolve()
VARIANTS = ("bare", "inproc-vmap", "inproc-loop", "ray-1", "ray-2", "before")

WORKLOADS = {
    "W1": {
        "preset": "sinusoid-maml",
        "describe": "sinusoid, MLP 1-40-40-1, meta-batch 25, K=10/10, 1 inner step, 2nd-order MAML",
        "pin": ["meta_batch_size=25", "task.k_support=10", "task.k_query=10", "model.name=mlp",
                "model.hidden_sizes=[40, 40]"],
        "iters": 50,
    },
    "W2": {
        "preset": "omniglot-maml",
        "describe": "Omniglot 5-way 1-shot 15-query, Conv4, meta-batch 32, 1 inner step, 2nd-order MAML",
        "pin": ["meta_batch_size=32", "task.n_way=5", "task.k_shot=1", "task.q_query=15",
                "model.name=conv4"],
        "iters": 1,
    },
}
COMMON_PIN = ["algorithm.name=maml", "algorithm.inner_steps=1", "algorithm.first_order=false",
              "algorithm.outer_optimizer=adam", "algorithm.grad_clip=null", "runtime.device=cpu",
              "iterations=100000000"]


# =========================================================================================
# The bare reference: nothing from distmeta here but the task sampler it is handed.
# =========================================================================================


class BareMLP(nn.Module):
    """ReLU MLP; layers created in the same order as distmeta's (same init for a seed)."""

    def __init__(self, sizes: list[int]):
        super().__init__()
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes[:-1]))
        self.head = nn.Linear(sizes[-2], sizes[-1])

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.head(x)


class _ScaleShift(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))


class BareConv4(nn.Module):
    """4 x [conv3x3, batch-statistics BatchNorm with a per-channel scale/shift, ReLU,
    maxpool 2], then a linear head: MAML's Omniglot network, written as the peers' examples
    write it (same parameter order as distmeta's, so the same init for a seed)."""

    def __init__(self, in_channels: int, image_size: int, channels: int, n_out: int):
        super().__init__()
        self.layers = nn.ModuleList()
        c, size = in_channels, image_size
        for _ in range(4):
            self.layers.append(nn.Conv2d(c, channels, 3, padding=1))
            self.layers.append(_ScaleShift(channels))
            c, size = channels, size // 2
        self.head = nn.Linear(channels * max(size, 1) ** 2, n_out)

    def forward(self, x):
        for i in range(0, len(self.layers), 2):
            conv, ss = self.layers[i], self.layers[i + 1]
            x = F.batch_norm(conv(x), None, None, ss.weight, ss.bias, training=True, eps=1e-5)
            x = F.max_pool2d(F.relu(x), 2)
        return self.head(x.flatten(1))


class BareMAML:
    """Second-order MAML in one process: `step()` = sample, adapt, meta-gradient, Adam."""

    def __init__(self, model, kind, inner_lr, outer_lr, batching, sample):
        self.model, self.kind, self.inner_lr = model, kind, inner_lr
        self.batching, self.sample = batching, sample
        self.params = dict(model.named_parameters())
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=outer_lr, fused=True)  # as distmeta's
        self.iteration = 0

    def _loss(self, p, x, y):
        out = functional_call(self.model, p, (x,))
        return F.cross_entropy(out, y) if self.kind == "classification" else F.mse_loss(out, y)

    def _post_loss(self, p, sx, sy, qx, qy):
        g = torch.func.grad(self._loss)(p, sx, sy)
        return self._loss({k: p[k] - self.inner_lr * g[k] for k in p}, qx, qy)

    def step(self) -> dict:
        t = self.sample(self.iteration)
        sx, sy, qx, qy = t["support_x"], t["support_y"], t["query_x"], t["query_y"]
        n = sx.shape[0]
        p = {k: v.detach() for k, v in self.params.items()}
        if self.batching == "vmap":
            def meta_loss(p):
                return vmap(self._post_loss, in_dims=(None, 0, 0, 0, 0))(p, sx, sy, qx, qy).mean()

            grads, loss = grad_and_value(meta_loss)(p)
        else:
            grads, loss = None, 0.0
            for i in range(n):
                g, value = grad_and_value(self._post_loss)(p, sx[i], sy[i], qx[i], qy[i])
                grads = g if grads is None else {k: grads[k] + g[k] for k in g}
                loss += float(value) / n
            grads = {k: v / n for k, v in grads.items()}
        for k, param in self.params.items():
            param.grad = grads[k]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.iteration += 1
        return {"iteration": self.iteration, "post_loss": float(loss)}

    def param_list(self) -> list[torch.Tensor]:
        return [v.detach().clone() for v in self.params.values()]


# =========================================================================================
# Harness
# =========================================================================================


def overrides(workload: str, variant: str, args) -> list[str]:
    spec = WORKLOADS[workload]
    out = [*spec["pin"], *COMMON_PIN, f"seed={args.seed}"]
    if workload == "W2":
        out.append(f"task.data_dir={args.data_dir}")
    if variant.startswith("ray-"):
        out += [f"num_workers={variant[4:]}", "runtime.resources_per_worker.cpu=1", "runtime.task_batching=auto"]
    else:
        batching = variant.split("-", 1)[1] if variant.startswith("inproc-") else args.batching[workload]
        out += ["num_workers=0", f"runtime.task_batching={batching}"]
    return out + list(args.overrides)


def make_bare(workload: str, args) -> BareMAML:
    from distmeta.loading import load_config
    from distmeta.tasks import make_family, train_task_rng

    config = load_config(WORKLOADS[workload]["preset"], overrides(workload, "bare", args))
    family = make_family(config.task)
    family.prepare()

    def sample(iteration: int):
        rngs = [train_task_rng(config.seed, iteration, i) for i in range(config.meta_batch_size)]
        return family.sample(rngs, "train")

    torch.manual_seed(config.seed)
    shape = family.input_shape
    if config.model.name == "conv4":
        model = BareConv4(shape[0], shape[1], config.model.channels, family.output_dim)
    else:
        model = BareMLP([int(np.prod(shape)), *config.model.hidden_sizes, family.output_dim])
    return BareMAML(model, family.kind, config.algorithm.inner_lr, config.algorithm.outer_lr,
                    args.batching[workload], sample)


# The `before` variant: this program runs in a child process with the other checkout first
# on sys.path, builds its MetaLearner, and answers "N" on stdin with the wall time of N steps.
CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
from distmeta.loading import load_config
from distmeta.runtime import MetaLearner
preset, sets = json.loads(sys.argv[1])
learner = MetaLearner(load_config(preset, sets))
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    if line.strip() == "params":
        print(json.dumps([v.detach().reshape(-1).tolist() for v in learner.meta.values()]), flush=True)
        continue
    start, losses = time.perf_counter(), []
    for _ in range(int(line)):
        losses.append(learner.step()["post_adaptation"]["loss"])
    print(json.dumps({"wall_s": time.perf_counter() - start, "post_loss": losses[0]}), flush=True)
"""


class Variant:
    """One variant of one workload: `block(n) -> wall seconds`, `params()`, `close()`."""

    def __init__(self, workload: str, name: str, args):
        self.name, self.first_post_loss, self.proc, self.learner = name, None, None, None
        if name == "bare":
            self.impl = make_bare(workload, args)
            self._step = lambda: self.impl.step()["post_loss"]
        elif name == "before":
            sets = overrides(workload, name, args)
            env = dict(os.environ, PYTHONPATH=f"{args.before}{os.pathsep}{Path(args.before) / 'envs'}")
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, json.dumps([WORKLOADS[workload]["preset"], sets])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd="/")
            if not json.loads(self.proc.stdout.readline()).get("ready"):
                raise SystemExit("error: --before: the other checkout did not start")
        else:
            from distmeta.loading import load_config
            from distmeta.runtime import MetaLearner

            self.learner = MetaLearner(load_config(WORKLOADS[workload]["preset"], overrides(workload, name, args)))
            self._step = lambda: self.learner.step()["post_adaptation"]["loss"]

    def block(self, n: int) -> float:
        if self.proc is not None:
            self.proc.stdin.write(f"{n}\n")
            self.proc.stdin.flush()
            reply = json.loads(self.proc.stdout.readline())
            self.first_post_loss = self.first_post_loss or reply["post_loss"]
            return reply["wall_s"]
        start = time.perf_counter()
        for _ in range(n):
            loss = self._step()
            self.first_post_loss = self.first_post_loss or loss
        return time.perf_counter() - start

    def params(self) -> list[torch.Tensor]:
        if self.proc is not None:
            self.proc.stdin.write("params\n")
            self.proc.stdin.flush()
            return [torch.tensor(v) for v in json.loads(self.proc.stdout.readline())]
        if self.learner is not None:
            return [v.detach().reshape(-1).clone() for v in self.learner.meta.values()]
        return [v.reshape(-1) for v in self.impl.param_list()]

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        if self.learner is not None:
            self.learner.close()


def measure(workload: str, names: list[str], args) -> dict:
    """Build, warm up, then time every variant round-robin; ratios to `bare` per round."""
    variants = [Variant(workload, name, args) for name in names]
    try:
        for v in variants:
            v.block(args.warmup[workload])
        iters = args.iters[workload]
        rates: dict[str, list[float]] = {v.name: [] for v in variants}
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else variants[::-1]
            for v in order:
                rates[v.name].append(iters / v.block(iters))
            print(f"[{time.strftime('%H:%M:%S')}] {workload} round {r + 1}/{args.rounds}: "
                  + ", ".join(f"{n} {rates[n][-1]:.3f}" for n in rates), file=sys.stderr, flush=True)
        reference = variants[0].params()
        rows = []
        for v in variants:
            final = v.params()
            rows.append({
                "variant": v.name,
                "median_it_per_s": statistics.median(rates[v.name]),
                "rates": rates[v.name],
                "ratio_to_bare": statistics.median(a / b for a, b in zip(rates[v.name], rates["bare"])),
                "first_post_loss": v.first_post_loss,
                "max_abs_param_diff": max(float((a - b).abs().max()) for a, b in zip(reference, final)),
            })
        ratios = {f"{a}/{b}": statistics.median(x / y for x, y in zip(rates[a], rates[b]))
                  for a, b in args.pairs if a in rates and b in rates}
        return {"workload": workload, "iters_per_block": iters, "rounds": args.rounds, "rows": rows,
                "pair_ratios": ratios}
    finally:
        for v in variants:
            v.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="W1,W2")
    parser.add_argument("--variants", default="bare,inproc-vmap,inproc-loop,ray-1,ray-2",
                        help=f"comma list of {', '.join(VARIANTS)}; bare always runs (the reference)")
    parser.add_argument("--iters", default=None, help="iterations per block: N, or W1=N,W2=M")
    parser.add_argument("--warmup", default=None, help="untimed iterations first: N or W1=N,W2=M (default 2)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", help="another checkout of distmeta, timed as the 'before' variant")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="Omniglot for W2")
    parser.add_argument("--bare-batching", default="W1=vmap,W2=loop",
                        help="task batching of bare and before, per workload (default: each model's faster one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every distmeta variant")
    parser.add_argument("--pairs", default="ray-1/inproc-vmap,ray-1/inproc-loop,ray-2/ray-1",
                        help="A/B,...: also the median over rounds of A's rate / B's (pairs of variants run)")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)

    def per_workload(text, default, cast=int):
        out = {w: default for w in WORKLOADS} if not isinstance(default, dict) else dict(default)
        if text is None:
            return out
        if "=" not in text:
            return {w: cast(text) for w in WORKLOADS}
        for item in text.split(","):
            key, _, value = item.partition("=")
            if key not in WORKLOADS:
                parser.error(f"unknown workload '{key}' in '{text}'")
            out[key] = cast(value)
        return out

    workloads = [w for w in args.workloads.split(",") if w]
    names = ["bare"] + [v for v in args.variants.split(",") if v and v != "bare"]
    for w in workloads:
        if w not in WORKLOADS:
            parser.error(f"--workloads: unknown '{w}'; expected {', '.join(WORKLOADS)}")
    for v in names:
        if v not in VARIANTS:
            parser.error(f"--variants: unknown '{v}'; expected {', '.join(VARIANTS)}")
    pairs = [tuple(p.split("/")) for p in args.pairs.split(",") if p]
    if bad := [p for p in pairs if len(p) != 2 or not set(p) <= set(VARIANTS)]:
        parser.error(f"--pairs: {bad[0]} is not A/B of two variants")
    if "before" in names and not args.before:
        parser.error("--variants: 'before' needs --before PATH")
    args.pairs = pairs
    args.iters = per_workload(args.iters, {w: s["iters"] for w, s in WORKLOADS.items()})
    args.warmup = per_workload(args.warmup, 2)
    args.batching = per_workload(args.bare_batching, {"W1": "vmap", "W2": "loop"}, str)

    torch.set_num_threads(1)
    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    uses_ray = any(v.startswith("ray-") for v in names)
    if uses_ray:
        import ray

        # Logical CPUs for every variant's workers at once; only one variant runs at a time.
        ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
    try:
        results = [measure(w, names, args) for w in workloads]
    finally:
        if uses_ray:
            import ray

            ray.shutdown()
    report = {"command": command, "torch": torch.__version__, "python": platform.python_version(),
              "cpus": os.cpu_count(), "results": results}
    print(f"\ncommand: {command}\n")
    print("| workload | variant | median it/s | ratio to bare (median of rounds) | iter-1 post loss | max abs dθ vs bare |")
    print("|---|---|---:|---:|---:|---:|")
    for res in results:
        for row in res["rows"]:
            print(f"| {res['workload']} | {row['variant']} | {row['median_it_per_s']:.3f} "
                  f"| {row['ratio_to_bare']:.2f} | {row['first_post_loss']:.6f} | {row['max_abs_param_diff']:.1e} |")
    if any(res["pair_ratios"] for res in results):
        print("\n| workload | pair | median over rounds of the per-round ratio |")
        print("|---|---|---:|")
        for res in results:
            for pair, ratio in res["pair_ratios"].items():
                print(f"| {res['workload']} | {pair} | {ratio:.2f} |")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
