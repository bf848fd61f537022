#!/usr/bin/env python3
"""Meta-iterations per second of second-order MAML, distmeta against a bare torch.func step.

Workloads (the configs are pinned here, on top of the presets, so the benchmark measures
what it says even if a preset changes):

  W1  sinusoid regression, MLP 1-40-40-1, meta-batch 25, K=10 support / 10 query,
      1 inner step, second-order MAML, Adam              (preset sinusoid-maml)
  W2  Omniglot 5-way 1-shot 15-query, Conv4, meta-batch 32, 1 inner step,
      second-order MAML, Adam                            (preset omniglot-maml; --data-dir)

Variants (all on CPU):

  bare         the same meta-step written directly with torch.func in this file: a plain
               nn.Module used through functional_call, one inner SGD step, second-order outer
               grad of the mean post-adaptation query loss, Adam; it also computes the pre- and
               post-adaptation query scores distmeta reports. Only the task sampler (the same
               family and the same per-task seeds) comes from distmeta. Task batching:
               --bare-batching (default: the model's preferred batching in distmeta).
  inproc-vmap  distmeta MetaLearner, num_workers=0, runtime.task_batching=vmap
  inproc-loop  distmeta MetaLearner, num_workers=0, runtime.task_batching=loop
  ray-1        MetaLearner, num_workers=1, resources_per_worker.cpu=1, task_batching=auto
  ray-2        MetaLearner, num_workers=2, resources_per_worker.cpu=1, task_batching=auto

Method: torch.set_num_threads(1) in this process (Ray workers get 1 thread each from cpu=1);
Ray is started once, ray.init(num_cpus=2, include_dashboard=False), and shut down at the end.
Per variant: build (untimed), --warmup iterations (untimed; they include Ray actor start-up),
then --repeats timed blocks of --iters iterations; it/s = median over blocks. All variants
start from the same seed, so they see the same tasks and the same initial parameters: the
iteration-0 losses must agree across variants, and so must the parameters at the end (the
"max |dθ|" column, against the first variant run).

    python3 benchmarks/throughput.py                                   # everything
    python3 benchmarks/throughput.py --workloads W1 --variants bare,inproc-vmap --iters 5 --repeats 2
    python3 benchmarks/throughput.py --iters W1=50,W2=2 --repeats W1=5,W2=3 --json-out out.json
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
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
from torch.func import functional_call, grad, vmap

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = (REPO / ".." / "shared" / "data" / "omniglot").resolve()

VARIANTS = ("bare", "inproc-vmap", "inproc-loop", "ray-1", "ray-2")

WORKLOADS = {
    "W1": {
        "preset": "sinusoid-maml",
        "describe": "sinusoid, MLP 1-40-40-1, meta-batch 25, K=10/10, 1 inner step, 2nd-order MAML",
        "pin": [
            "meta_batch_size=25", "task.k_support=10", "task.k_query=10",
            "model.name=mlp", "model.hidden_sizes=[40, 40]",
            "algorithm.name=maml", "algorithm.inner_steps=1", "algorithm.first_order=false",
            "algorithm.outer_optimizer=adam", "algorithm.grad_clip=null",
        ],
        "iters": 50,
    },
    "W2": {
        "preset": "omniglot-maml",
        "describe": "Omniglot 5-way 1-shot 15-query, Conv4, meta-batch 32, 1 inner step, "
                    "2nd-order MAML",
        "pin": [
            "meta_batch_size=32", "task.n_way=5", "task.k_shot=1", "task.q_query=15",
            "model.name=conv4",
            "algorithm.name=maml", "algorithm.inner_steps=1", "algorithm.first_order=false",
            "algorithm.outer_optimizer=adam", "algorithm.grad_clip=null",
        ],
        "iters": 2,
    },
}

TARGETS = {
    "vmap_over_loop": 3.0,   # inproc-vmap / inproc-loop on W1
    "inproc_over_bare": 0.9,  # inproc(best) / bare
    "ray1_over_inproc": 0.9,  # ray-1 / inproc (same batching as ray's 'auto')
    "ray2_over_ray1": 1.8,    # ray-2 / ray-1 on W2
}


# =========================================================================================
# The bare reference. Nothing from distmeta below this line until the harness: the task
# sampler it is handed (same family, same per-task seeds) is its only link to distmeta.
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
    """4 x [conv3x3, batch-statistics BatchNorm, per-channel scale/shift, ReLU, maxpool 2],
    then a linear head (MAML's Omniglot network; same layer order as distmeta's)."""

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
            x = F.batch_norm(conv(x), None, None, training=True, eps=1e-5)
            x = x * ss.weight[:, None, None] + ss.bias[:, None, None]
            x = F.max_pool2d(F.relu(x), 2)
        return self.head(x.flatten(1))


class BareMAML:
    """Second-order MAML, one model, one process: `step()` = sample, adapt, meta-grad, Adam."""

    def __init__(self, model: nn.Module, kind: str, inner_lr: float, inner_steps: int,
                 outer_lr: float, batching: str, sample):
        self.model = model
        self.kind = kind
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.batching = batching
        self.sample = sample  # iteration -> dict of (B, ...) tensors
        self.params = dict(model.named_parameters())
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=outer_lr)
        self.iteration = 0

    # -- pure functions of (params, task) -------------------------------------------------

    def _forward(self, p, x):
        return functional_call(self.model, p, (x,))

    def _loss(self, out, y):
        return F.cross_entropy(out, y) if self.kind == "classification" else F.mse_loss(out, y)

    def _scores(self, out, y):
        s = {"loss": self._loss(out, y)}
        if self.kind == "classification":
            s["accuracy"] = (out.argmax(-1) == y).float().mean()
        return s

    def _adapted(self, p, sx, sy):
        for _ in range(self.inner_steps):
            g = grad(lambda q: self._loss(self._forward(q, sx), sy))(p)
            p = {k: p[k] - self.inner_lr * g[k] for k in p}
        return p

    def _post(self, p, sx, sy, qx, qy):
        """Post-adaptation query loss (differentiable) and its scores (detached)."""
        out = self._forward(self._adapted(p, sx, sy), qx)
        return self._loss(out, qy), {k: v.detach() for k, v in self._scores(out, qy).items()}

    def _pre(self, p, qx, qy):
        return self._scores(self._forward(p, qx), qy)

    # -- one meta-iteration -----------------------------------------------------------------

    def step(self) -> dict:
        t = self.sample(self.iteration)
        sx, sy, qx, qy = t["support_x"], t["support_y"], t["query_x"], t["query_y"]
        n = sx.shape[0]
        p = {k: v.detach() for k, v in self.params.items()}
        if self.batching == "vmap":
            def meta_loss(p):
                post, scores = vmap(self._post, in_dims=(None, 0, 0, 0, 0))(p, sx, sy, qx, qy)
                return post.mean(), scores

            grads, post = grad(meta_loss, has_aux=True)(p)
            with torch.no_grad():
                pre = vmap(self._pre, in_dims=(None, 0, 0))(p, qx, qy)
            post = {k: v.mean() for k, v in post.items()}
            pre = {k: v.mean() for k, v in pre.items()}
        else:
            grads, post, pre = None, None, None
            for i in range(n):
                g, s = grad(self._post, has_aux=True)(p, sx[i], sy[i], qx[i], qy[i])
                with torch.no_grad():
                    s0 = self._pre(p, qx[i], qy[i])
                grads = g if grads is None else {k: grads[k] + g[k] for k in g}
                post = s if post is None else {k: post[k] + s[k] for k in s}
                pre = s0 if pre is None else {k: pre[k] + s0[k] for k in s0}
            grads = {k: v / n for k, v in grads.items()}
            post = {k: v / n for k, v in post.items()}
            pre = {k: v / n for k, v in pre.items()}
        for k, param in self.params.items():
            param.grad = grads[k]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.iteration += 1
        return {
            "iteration": self.iteration,
            "meta_loss": float(post["loss"]),
            "pre_adaptation": {k: float(v) for k, v in pre.items()},
            "post_adaptation": {k: float(v) for k, v in post.items()},
        }

    def param_list(self) -> list[torch.Tensor]:
        return [v.detach().clone() for v in self.params.values()]


# =========================================================================================
# Harness
# =========================================================================================


def per_workload(text: str | None, defaults: dict[str, int], flag: str) -> dict[str, int]:
    """`N` (every workload) or `W1=N,W2=M` (named ones; the rest keep their default)."""
    out = dict(defaults)
    if text is None:
        return out
    text = text.strip()
    if "=" not in text:
        return {w: int(text) for w in out}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key.strip() not in out:
            raise SystemExit(f"error: {flag}: unknown workload '{key}' in '{text}'")
        out[key.strip()] = int(value)
    return out


def make_config(workload: str, args, variant: str):
    from distmeta.loading import load_config

    spec = WORKLOADS[workload]
    overrides = list(spec["pin"]) + ["runtime.device=cpu"]
    if workload == "W2":
        overrides.append(f"task.data_dir={args.data_dir}")
    if variant.startswith("inproc-"):
        overrides += ["num_workers=0", f"runtime.task_batching={variant.split('-', 1)[1]}"]
    elif variant.startswith("ray-"):
        overrides += [f"num_workers={int(variant.split('-', 1)[1])}",
                      "runtime.resources_per_worker.cpu=1", "runtime.task_batching=auto"]
    else:
        overrides += ["num_workers=0"]
    overrides += [f"seed={args.seed}", "iterations=100000000"] + list(args.overrides)
    return load_config(spec["preset"], overrides)


def preferred_batching(config) -> str:
    from distmeta.experiment import build_experiment

    return build_experiment(config).network().preferred_batching


def make_bare(config, batching: str) -> BareMAML:
    """The bare reference for a config: plain values out of it, plus distmeta's sampler."""
    from distmeta.tasks import make_family, train_task_rng

    family = make_family(config.task)
    family.prepare()
    seed, n_tasks = config.seed, config.meta_batch_size

    def sample(iteration: int):
        return family.sample([train_task_rng(seed, iteration, i) for i in range(n_tasks)], "train")

    algo = config.algorithm
    if (algo.name, algo.first_order, algo.outer_optimizer, algo.grad_clip) != (
            "maml", False, "adam", None):
        raise SystemExit("error: the bare variant implements second-order MAML with Adam and "
                         "no clipping only; drop the --set that changes algorithm.*")
    torch.manual_seed(seed)
    shape = family.input_shape
    if config.model.name == "conv4" or (config.model.name == "auto" and len(shape) == 3):
        model = BareConv4(shape[0], shape[1], config.model.channels, family.output_dim)
    else:
        model = BareMLP([int(np.prod(shape)), *config.model.hidden_sizes, family.output_dim])
    return BareMAML(model, family.kind, algo.inner_lr, algo.inner_steps, algo.outer_lr,
                    batching, sample)


class Runner:
    """One variant of one workload: `step()`, `params()`, `close()`."""

    def __init__(self, workload: str, variant: str, args, bare_batching: dict):
        self.variant = variant
        if variant == "bare":
            config = make_config(workload, args, variant)
            batching = args.bare_batching
            if batching == "auto":
                batching = bare_batching[workload]
            self.batching = batching
            self.impl = make_bare(config, batching)
            self.step = self.impl.step
            self.params = self.impl.param_list
            self.close = lambda: None
        else:
            from distmeta.runtime import MetaLearner

            config = make_config(workload, args, variant)
            self.learner = MetaLearner(config)
            learner = self.learner
            self.batching = (learner.executor.runner.batching if config.num_workers == 0
                             else f"auto ({bare_batching[workload]})")
            self.step = learner.step
            self.params = lambda: [v.detach().clone() for v in learner.meta.values()]
            self.close = learner.close
        self.config = config


def run_variant(workload: str, variant: str, args, iters: int, repeats: int, warmup: int,
                bare_batching: dict) -> dict:
    t0 = time.perf_counter()
    runner = Runner(workload, variant, args, bare_batching)
    setup_s = time.perf_counter() - t0
    first = None
    try:
        t0 = time.perf_counter()
        for _ in range(warmup):
            line = runner.step()
            first = first or line
        warmup_s = time.perf_counter() - t0
        blocks = []
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(iters):
                line = runner.step()
                first = first or line
            wall = time.perf_counter() - t0
            blocks.append({"wall_s": wall, "it_per_s": iters / wall,
                           "driver_cpu_per_wall": (time.process_time() - c0) / wall})
        final = runner.params()
        last = line if (warmup or repeats * iters) else None
    finally:
        runner.close()
    rates = [b["it_per_s"] for b in blocks]
    tasks = runner.config.meta_batch_size
    result = {
        "workload": workload,
        "variant": variant,
        "batching": runner.batching,
        "num_workers": runner.config.num_workers,
        "iters": iters,
        "repeats": repeats,
        "warmup": warmup,
        "setup_s": setup_s,
        "warmup_s": warmup_s,
        "blocks": blocks,
        "median_it_per_s": statistics.median(rates) if rates else float("nan"),
        "min_it_per_s": min(rates) if rates else float("nan"),
        "max_it_per_s": max(rates) if rates else float("nan"),
        "tasks_per_s": (statistics.median(rates) * tasks) if rates else float("nan"),
        "iterations_run": warmup + iters * repeats,
        "first_iteration": _metric_view(first),
        "last_iteration": _metric_view(last),
    }
    del runner
    gc.collect()
    return result, final


def _metric_view(line: dict | None) -> dict | None:
    if line is None:
        return None
    return {"iteration": line["iteration"], "pre_adaptation": line["pre_adaptation"],
            "post_adaptation": line["post_adaptation"]}


def ratios(results: list[dict], bare_batching: dict) -> list[dict]:
    rows = []
    by = {(r["workload"], r["variant"]): r["median_it_per_s"] for r in results}

    def add(name, workload, num, den, target_key, applies=True):
        a, b = by.get((workload, num[0])), by.get((workload, den[0]))
        if a is None or b is None:
            return
        value = a / b
        target = TARGETS[target_key] if applies else None
        rows.append({"ratio": name.format(num=num[1], den=den[1]), "workload": workload,
                     "value": value, "target": target,
                     "met": None if target is None else bool(value >= target)})

    for w in WORKLOADS:
        add("{num} / {den}", w, ("inproc-vmap", "inproc-vmap"), ("inproc-loop", "inproc-loop"),
            "vmap_over_loop", applies=(w == "W1"))
        inproc = [v for v in ("inproc-vmap", "inproc-loop") if (w, v) in by]
        if inproc:
            best = max(inproc, key=lambda v: by[(w, v)])
            add("inproc(best={num}) / {den}", w, (best, best), ("bare", "bare"),
                "inproc_over_bare")
            same = f"inproc-{bare_batching.get(w, '')}"
            ref = same if (w, same) in by else best
            add("{num} / {den}", w, ("ray-1", "ray-1"), (ref, ref), "ray1_over_inproc")
        add("{num} / {den}", w, ("ray-2", "ray-2"), ("ray-1", "ray-1"), "ray2_over_ray1",
            applies=(w == "W2"))
    return rows


def environment() -> dict:
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except Exception:  # noqa: BLE001 - informational only
        commit, dirty = "?", ""
    import ray

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "git_commit": commit + ("+dirty" if dirty else ""),
        "loadavg_start": list(os.getloadavg()),
    }


def fmt(x, spec=".3f"):
    if x is None:
        return "—"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return format(x, spec)


def markdown(report: dict) -> str:
    out = []
    env = report["environment"]
    out.append(f"torch {env['torch']}, ray {env['ray']}, python {env['python']}, "
               f"{env['cpus']} CPUs, commit {env['git_commit']}, load average at start "
               f"{', '.join(f'{v:.2f}' for v in env['loadavg_start'])}, at end "
               f"{', '.join(f'{v:.2f}' for v in report['loadavg_end'])}")
    out.append("")
    for w, desc in report["workloads"].items():
        out.append(f"- {w}: {desc}")
    out.append("")
    out.append("| workload | variant | batching | median it/s | min–max it/s | s/it | tasks/s "
               "| driver CPU/wall | iter-1 pre loss | iter-1 post loss | iter-1 post acc "
               "| max abs dθ vs first |")
    out.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in report["results"]:
        f = r["first_iteration"] or {}
        pre, post = f.get("pre_adaptation", {}), f.get("post_adaptation", {})
        cpu = [b["driver_cpu_per_wall"] for b in r["blocks"]]
        med = r["median_it_per_s"]
        out.append(
            f"| {r['workload']} | {r['variant']} | {r['batching']} | {fmt(med, '.3f')} "
            f"| {fmt(r['min_it_per_s'], '.3f')}–{fmt(r['max_it_per_s'], '.3f')} "
            f"| {fmt(1 / med if med else None, '.4f')} | {fmt(r['tasks_per_s'], '.1f')} "
            f"| {fmt(statistics.median(cpu) if cpu else None, '.2f')} "
            f"| {fmt(pre.get('loss'), '.6f')} | {fmt(post.get('loss'), '.6f')} "
            f"| {fmt(post.get('accuracy'), '.4f')} | {fmt(r.get('max_abs_param_diff'), '.2e')} |"
        )
    out.append("")
    out.append("iter-1 = the first meta-iteration (tasks of iteration 0, initial parameters); "
               "dθ = parameters after all iterations of the variant, against the first variant "
               "run of the workload (same number of iterations). driver CPU/wall < 1 for a "
               "1-thread in-process variant means this process did not get a whole core.")
    out.append("")
    if report["ratios"]:
        out.append("| ratio | workload | value | target | met |")
        out.append("|---|---|---:|---:|---|")
        for q in report["ratios"]:
            met = "—" if q["met"] is None else ("yes" if q["met"] else "NO")
            out.append(f"| {q['ratio']} | {q['workload']} | {q['value']:.3f} "
                       f"| {fmt(q['target'], '.2f')} | {met} |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="W1,W2", help="comma list of W1, W2")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma list of {', '.join(VARIANTS)} (run in the order given)")
    parser.add_argument("--iters", default=None,
                        help="timed iterations per block: N, or W1=N,W2=M (default W1=50,W2=2)")
    parser.add_argument("--repeats", default=None,
                        help="timed blocks: N or W1=N,W2=M (default 5); median it/s over blocks")
    parser.add_argument("--warmup", default=None,
                        help="untimed iterations first: N or W1=N,W2=M (default 2)")
    parser.add_argument("--skip", default="",
                        help="comma list of WORKLOAD:VARIANT pairs not to run, e.g. "
                             "W2:inproc-vmap (25 s/iteration and 6 GB there)")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                        help=f"Omniglot for W2 (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--bare-batching", choices=("auto", "vmap", "loop"), default="auto",
                        help="task batching of the bare variant (auto: distmeta's preferred "
                             "batching of the model, vmap for the MLP, loop for Conv4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="extra config override for every variant (bare reads inner_lr, "
                             "outer_lr, meta_batch_size, model sizes and task options from it)")
    parser.add_argument("--json-out", help="also write the full report as JSON here")
    args = parser.parse_args(argv)

    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for w in workloads:
        if w not in WORKLOADS:
            parser.error(f"--workloads: unknown '{w}'; expected {', '.join(WORKLOADS)}")
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"--variants: unknown '{v}'; expected {', '.join(VARIANTS)}")
    skip = set()
    for item in filter(None, (x.strip() for x in args.skip.split(","))):
        w, _, v = item.partition(":")
        if w not in WORKLOADS or v not in VARIANTS:
            parser.error(f"--skip: got '{item}'; expected WORKLOAD:VARIANT, e.g. W2:inproc-vmap")
        skip.add((w, v))
    iters = per_workload(args.iters, {w: s["iters"] for w, s in WORKLOADS.items()}, "--iters")
    repeats = per_workload(args.repeats, {w: 5 for w in WORKLOADS}, "--repeats")
    warmup = per_workload(args.warmup, {w: 2 for w in WORKLOADS}, "--warmup")
    uses_ray = any(v.startswith("ray-") for w in workloads for v in variants
                   if (w, v) not in skip)
    if uses_ray and any(warmup[w] < 1 for w in workloads):
        print("warning: --warmup 0 with Ray variants: the first timed block includes the "
              "actors' start-up", file=sys.stderr)

    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    print(f"command: {command}", flush=True)

    torch.set_num_threads(1)
    env = environment()
    bare_batching = {w: preferred_batching(make_config(w, args, "bare")) for w in workloads}

    if uses_ray:
        import ray

        ray.init(num_cpus=2, include_dashboard=False)
    results = []
    try:
        for w in workloads:
            reference = None
            for v in variants:
                if (w, v) in skip:
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] {w} {v}: {warmup[w]} warm-up + "
                      f"{repeats[w]} x {iters[w]} iterations ...", file=sys.stderr, flush=True)
                result, final = run_variant(w, v, args, iters[w], repeats[w], warmup[w],
                                            bare_batching)
                if reference is None:
                    reference, result["max_abs_param_diff"] = (v, final), 0.0
                else:
                    ref = reference[1]
                    if len(ref) == len(final) and all(a.shape == b.shape
                                                      for a, b in zip(ref, final)):
                        result["max_abs_param_diff"] = max(
                            float((a - b).abs().max()) for a, b in zip(ref, final))
                    else:
                        result["max_abs_param_diff"] = None
                result["param_reference"] = reference[0]
                results.append(result)
                print(f"    median {result['median_it_per_s']:.3f} it/s "
                      f"(setup {result['setup_s']:.1f} s, warm-up {result['warmup_s']:.1f} s)",
                      file=sys.stderr, flush=True)
    finally:
        if uses_ray:
            import ray

            ray.shutdown()

    report = {
        "command": command,
        "environment": env,
        "loadavg_end": list(os.getloadavg()),
        "workloads": {w: WORKLOADS[w]["describe"] for w in workloads},
        "bare_batching": {w: (args.bare_batching if args.bare_batching != "auto"
                              else bare_batching[w]) for w in workloads},
        "results": results,
        "ratios": ratios(results, bare_batching),
        "targets": TARGETS,
    }
    print()
    print(markdown(report))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nJSON: {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
