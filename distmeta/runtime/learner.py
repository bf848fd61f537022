"""`MetaLearner`: the central meta-learner (the driver of a training run).

Per meta-iteration: the meta-parameters travel as one flat numpy vector (cheap to
serialise), put into Ray's object store once when large so that every `AdaptationWorker`
reads the same object. Each worker gets them with the indices of its shard of tasks,
samples and adapts to those tasks on its own device, and returns
`(grad_sum, n_tasks, metric_sums)`. The learner sums the shards in shard order (a shard
re-run after a fault gives the same bits, see `pool.py`), takes the task-weighted mean,
clips, steps its outer optimiser, appends a metrics line and checkpoints.

    learner = MetaLearner(load_config("sinusoid-maml"), out_dir="runs/sine")
    learner.train()
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

from distmeta.algorithms import ALGORITHMS
from distmeta.config import Config
from distmeta.errors import UserError
from distmeta.runtime.checkpoint import (
    atomic_write,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    shape_mismatch,
)
from distmeta.runtime.worker import FlatLayout, build_network, runner_class


class DivergedError(UserError):
    """Training produced a non-finite meta-gradient; the last checkpoint is intact."""


# Ray's own limit for passing an argument by value rather than through the object store.
INLINE_PARAMS_BYTES = 100 * 1024

# Keys that may change between a run and its resumption without changing its results.
RESUMABLE_CHANGES = {"iterations", "num_workers", "checkpoint_every", "runtime", "task.data_dir"}


def split_shards(n_tasks: int, n_shards: int) -> list[list[int]]:
    """Task indices 0..n_tasks-1 in `n_shards` contiguous shards whose sizes differ by <= 1."""
    bounds = np.linspace(0, n_tasks, n_shards + 1).round().astype(int)
    return [list(range(bounds[i], bounds[i + 1])) for i in range(n_shards)]


def initial_meta_params(config: Config, family) -> dict[str, torch.Tensor]:
    """Meta-parameters at iteration 0: a function of the seed alone (the caller's global
    torch RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_network(config, family)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    return ALGORITHMS[config.algorithm.name].init(params, config.algorithm)


class MetaLearner:
    """Runs meta-training for one config, in-process (`num_workers: 0`) or on Ray workers.

    `out_dir` (optional) receives `config.yaml`, `metrics.jsonl` and `checkpoints/`;
    `resume=True` continues from its newest checkpoint. `address` names a running Ray
    cluster; without it a local Ray is started (or the one already initialised is used)."""

    def __init__(self, config: Config, out_dir: str | Path | None = None,
                 address: str | None = None, resume: bool = False):
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        state = self._check_out_dir(resume)
        self.family = config.task.make_family()
        self.family.prepare()

        self.meta = {k: v.requires_grad_() for k, v in initial_meta_params(config, self.family).items()}
        self.layout = FlatLayout(self.meta)
        algo = config.algorithm
        optimizer_cls = torch.optim.Adam if algo.outer_optimizer == "adam" else torch.optim.SGD
        self.optimizer = optimizer_cls(list(self.meta.values()), lr=algo.outer_lr)
        self.iteration = 0
        if state is not None:
            self.load_state(state)

        self._pool = None
        self._local = None
        if config.num_workers == 0:
            self._local = runner_class(self.family)(config, self.family)
        else:
            self._start_workers(address)
        self._metrics_file = None
        if self.out_dir is not None:  # only now that every check has passed
            self.out_dir.mkdir(parents=True, exist_ok=True)
            _truncate_metrics(self.out_dir / "metrics.jsonl", self.iteration)
            _write_yaml(self.out_dir / "config.yaml", self.config.to_dict())
            # Opened once, line-buffered: each line reaches the OS whole as it is written.
            self._metrics_file = open(self.out_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 - closed in close()

    # -- the meta-iteration -----------------------------------------------------------

    def step(self) -> dict:
        """One meta-iteration; returns its metrics line. Meta-RL takes `rl.outer_steps`
        optimiser steps on the meta-batch its workers sampled once."""
        start = time.perf_counter()
        outer_steps = self.config.rl.outer_steps if self.family.kind == "rl" else 1
        env_steps, reissued, sampled, sampling_meta = 0.0, 0, None, None
        for _ in range(outer_steps):
            meta = self._params_arg(self.layout.flatten(self.meta).cpu().numpy())
            n_tasks, sums, norm, lost = self._outer_step(meta, sampling_meta)
            env_steps += sums.pop("env_steps", 0.0)
            reissued += lost
            if sampled is None:  # the first step's: at the policy that sampled the meta-batch
                sampled, grad_norm, sampling_meta = sums, norm, meta
        self.iteration += 1

        elapsed = time.perf_counter() - start
        line = {
            "iteration": self.iteration,
            "meta_loss": sampled["post_loss"] / n_tasks,
            "pre_adaptation": _scores(sampled, "pre", n_tasks),
            "post_adaptation": _scores(sampled, "post", n_tasks),
            "grad_norm": grad_norm,
            "tasks_per_s": n_tasks / elapsed,
            "time_s": elapsed,
            "workers": self._pool.alive if self._pool is not None else 0,
            "shards_reissued": reissued,
        }
        if self.family.kind == "rl":
            line["env_steps_per_s"] = env_steps / elapsed
        if self._metrics_file is not None:
            self._metrics_file.write(json.dumps(line) + "\n")
        return line

    def _outer_step(self, meta, sampling_meta) -> tuple[int, dict, float, int]:
        """Gather the shards' meta-gradients, reduce, clip, step the outer optimiser; also
        how many shards were re-run. `meta` (and `sampling_meta`: on meta-RL's further outer
        steps, the parameters that sampled the iteration's episodes, which a shard re-run on
        a fresh worker samples again) come from `_params_arg`."""
        config = self.config
        shards = split_shards(config.meta_batch_size, max(config.num_workers, 1))
        extra = () if sampling_meta is None else (sampling_meta,)
        calls = [(meta, self.iteration, s, *extra) for s in shards]
        if self._local is not None:
            results, reissued = [self._local.meta_grad(*call) for call in calls], 0
        else:
            results, reissued = self._pool.map("meta_grad", calls, f"iteration {self.iteration + 1}")

        n_tasks = sum(n for _, n, _ in results)
        grad = torch.from_numpy(sum(g for g, _, _ in results) / n_tasks)
        sums = {k: sum(m[k] for _, _, m in results) for k in results[0][2]}
        grad_norm = float(torch.linalg.vector_norm(grad))
        if not math.isfinite(grad_norm):
            raise DivergedError(
                f"meta-gradient: not finite at iteration {self.iteration + 1} (norm {grad_norm}); "
                "lower algorithm.inner_lr or algorithm.outer_lr, or set algorithm.grad_clip"
            )
        clip = config.algorithm.grad_clip
        if clip is not None and grad_norm > clip:
            grad = grad * (clip / grad_norm)
        for k, g in self.layout.unflatten(grad).items():
            self.meta[k].grad = g.to(self.meta[k].dtype)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return n_tasks, sums, grad_norm, reissued

    def train(self, on_iteration: Callable[[dict], None] | None = None,
              time_budget_s: float | None = None) -> dict | None:
        """Iterate up to `config.iterations`, or until `time_budget_s` seconds have passed,
        checkpointing on schedule and where it stops."""
        line = None
        deadline = math.inf if time_budget_s is None else time.perf_counter() + time_budget_s
        while self.iteration < self.config.iterations and time.perf_counter() < deadline:
            line = self.step()
            if on_iteration is not None:
                on_iteration(line)
            if self.out_dir is not None and self.iteration % self.config.checkpoint_every == 0:
                self.save_checkpoint()
        if self.out_dir is not None and line is not None \
                and self.iteration % self.config.checkpoint_every != 0:
            self.save_checkpoint()
        return line

    # -- state ------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "version": 1,
            "iteration": self.iteration,
            "meta_params": {k: v.detach().clone() for k, v in self.meta.items()},
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "config": self.config.to_dict(),
        }

    def save_checkpoint(self) -> Path:
        return save_checkpoint(self.out_dir / "checkpoints", self.iteration, self.state(),
                               self.config.runtime.keep_checkpoints)

    def load_state(self, state: dict) -> None:
        """Continue from another learner's `state()`: meta-parameters, optimiser moments,
        iteration and RNG. Its config may differ in anything that keeps the network's shape;
        the outer learning rate stays this learner's `algorithm.outer_lr` (PBT restores one
        trial's state into another trial's hyperparameters)."""
        mismatch = shape_mismatch({k: tuple(v.shape) for k, v in self.meta.items()}, state["meta_params"])
        if mismatch is not None:
            key, found, expected = mismatch
            raise UserError(
                f"checkpoint: its parameter {key} has shape {found}; this config's "
                f"network needs {expected}; restore it into a config with the same model"
            )
        with torch.no_grad():
            for k, v in self.meta.items():
                v.copy_(state["meta_params"][k])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.algorithm.outer_lr
        torch.set_rng_state(state["torch_rng"])
        self.iteration = int(state["iteration"])

    def validate(self, tasks: int, split: str = "val", seed: int = 0) -> dict:
        """Mean pre- and post-adaptation scores of the current meta-parameters on `tasks`
        held-out tasks of `split`, adapted with `algorithm.eval_inner_steps` on the workers.
        The tasks come from `seed`, so every call (and every trial of a search) scores the
        same tasks."""
        steps = self.config.algorithm.steps_for_eval
        meta_flat = self.layout.flatten(self.meta).cpu().numpy()
        chunk = self.config.meta_batch_size
        chunks = [range(lo, min(lo + chunk, tasks)) for lo in range(0, tasks, chunk)]
        if self._local is not None:
            rows = [self._local.evaluate(meta_flat, split, c, steps, seed) for c in chunks]
        else:
            meta = self._params_arg(meta_flat)
            rows, _ = self._pool.map("evaluate", [(meta, split, c, steps, seed) for c in chunks],
                                     f"validation at iteration {self.iteration}")
        means = {k: float(np.concatenate([r[k] for r in rows]).mean()) for k in rows[0]}
        return {"pre_adaptation": _scores(means, "pre", 1), "post_adaptation": _scores(means, "post", 1)}

    def _check_out_dir(self, resume: bool) -> dict | None:
        """Validate the run directory before any work (writing nothing); the resume state."""
        if self.out_dir is None:
            if resume:
                raise UserError("--resume: needs the run directory to resume (--out DIR)")
            return None
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UserError(f"--out: {self.out_dir} is a file; expected a run directory")
        ckpt_dir = self.out_dir / "checkpoints"
        metrics = self.out_dir / "metrics.jsonl"
        if not resume:
            if list_checkpoints(ckpt_dir) or metrics.exists():
                raise UserError(
                    f"--out: {self.out_dir} already holds a run; pass --resume to continue it "
                    "or choose another --out"
                )
            return None
        found = list_checkpoints(ckpt_dir)
        if not found:
            raise UserError(f"--resume: no checkpoint in {ckpt_dir}; start it without --resume")
        state, path = _newest_readable(found)
        _check_resumable(state["config"], self.config.to_dict(), path)
        if state["iteration"] > self.config.iterations:
            raise UserError(
                f"iterations: got {self.config.iterations}, but the checkpoint is at iteration "
                f"{state['iteration']}; expected at least that"
            )
        return state

    # -- Ray --------------------------------------------------------------------------

    def _params_arg(self, flat: np.ndarray):
        """Flat parameters as the shards' calls take them, made once for all of them: the
        array itself in-process and when small (measured ~2.4 ms a step cheaper on the
        sinusoid MLP), else one object in Ray's store."""
        if self._pool is None or flat.nbytes <= INLINE_PARAMS_BYTES:
            return flat
        import ray

        return ray.put(flat)

    def _start_workers(self, address: str | None) -> None:
        import ray

        from distmeta.runtime.pool import WorkerPool

        config = self.config
        cpu = config.runtime.resources_per_worker.cpu
        needed_cpus = config.num_workers * cpu
        if not ray.is_initialized():
            usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            if address is None and needed_cpus > (usable or 1):
                raise UserError(
                    f"num_workers: {config.num_workers} workers x runtime.resources_per_worker.cpu "
                    f"{cpu:g} need {needed_cpus:g} CPUs; this machine has {usable}"
                )
            connect_ray(address)
        total = ray.cluster_resources()
        if needed_cpus > total.get("CPU", 0):
            raise UserError(
                f"num_workers: {config.num_workers} workers x runtime.resources_per_worker.cpu "
                f"{cpu:g} need {needed_cpus:g} CPUs; the Ray cluster has {total.get('CPU', 0):g}"
            )
        gpu = gpus_per_worker(config.runtime.resources_per_worker.gpu, total.get("GPU", 0),
                              config.num_workers)
        if gpu * config.num_workers > total.get("GPU", 0):
            raise UserError(
                f"runtime.resources_per_worker.gpu: {config.num_workers} workers x {gpu:g} GPU "
                f"need {gpu * config.num_workers:g} GPUs; the Ray cluster has "
                f"{total.get('GPU', 0):g}; unset it to share what there is"
            )
        if config.runtime.device == "cuda" and gpu == 0:
            raise UserError(
                "runtime.device: 'cuda' but the Ray cluster has no GPU for the workers; "
                "set runtime.device=auto or add GPU nodes"
            )
        module = type(self.family).__module__
        if module.split(".")[0] != "distmeta":
            # A user's family module need not be importable on the workers (nor installed on
            # the cluster's nodes): ship its code with the pickled family instead.
            ray.cloudpickle.register_pickle_by_value(sys.modules[module])
        family_ref = ray.put(self.family)  # the dataset reaches every worker once, by reference
        # The actors: the family's runner (ShardRunner, RLShardRunner) in their own processes.
        self._pool = WorkerPool(
            runner_class(self.family), (config, family_ref, max(1, int(cpu))), config.num_workers,
            num_cpus=cpu, num_gpus=gpu, timeout_s=config.runtime.shard_timeout_s,
            max_attempts=config.runtime.max_shard_attempts, on_event=self._log_event,
        )

    def _log_event(self, event: dict) -> None:
        """Every worker event goes to events.jsonl; a loss or a replacement also to stderr."""
        event = {"iterations_done": self.iteration, **event}
        if event["event"] != "worker_started":
            where = f"node {event['node'][:8]}, pid {event['pid']}" if event["pid"] else "starting"
            print(f"distmeta: worker {event['worker']} ({where}): {event['detail']}",
                  file=sys.stderr, flush=True)
        if self.out_dir is not None:
            with open(self.out_dir / "events.jsonl", "a") as f:
                f.write(json.dumps(event) + "\n")

    def close(self) -> None:
        """Stop the workers (Ray itself stays up for whoever started it)."""
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
        if self._local is not None and hasattr(self._local, "close"):
            self._local.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def gpus_per_worker(requested: float | None, cluster_gpus: float, num_workers: int) -> float:
    """Unset: one GPU each when there are enough, else an even share (packing several
    workers per GPU), none on a CPU-only cluster."""
    if requested is not None:
        return requested
    if cluster_gpus <= 0:
        return 0
    return min(1.0, math.floor(cluster_gpus / num_workers * 1e4) / 1e4)


def connect_ray(address: str | None) -> None:
    """Start a local Ray (no dashboard), or connect to the cluster at `address`."""
    import ray

    if address is None:
        try:
            ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:  # e.g. a stale RAY_ADDRESS
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"ray: cannot start a local Ray: {reason}") from None
        return
    if address != "auto":
        host, _, port = address.rpartition(":")
        host = host.removeprefix("ray://")
        if not host or not port.isdigit():
            raise UserError(f"--address: got '{address}'; expected HOST:PORT or 'auto'")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise UserError(f"--address: cannot reach a Ray cluster at {address}: {exc}") from None
    try:
        ray.init(address=address, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--address: cannot connect to Ray at {address}: {reason}") from None


def _newest_readable(found: list[Path]) -> tuple[dict, Path]:
    """The newest checkpoint that loads, with its path. A damaged newer one (cut short by a
    disk error or a copy, which an atomic rename alone cannot prevent) is skipped with a
    warning: resuming from the one before costs only the iterations since."""
    for path in reversed(found):
        try:
            return load_checkpoint(path), path
        except UserError as exc:
            print(f"warning: --resume: skipping {path.name} ({exc}); trying the checkpoint before it",
                  file=sys.stderr, flush=True)
    raise UserError(f"--resume: no readable checkpoint in {found[0].parent}; start it without --resume")


def _scores(sums: dict, prefix: str, n: int) -> dict:
    return {k.removeprefix(prefix + "_"): v / n for k, v in sums.items() if k.startswith(prefix + "_")}


def _check_resumable(saved: dict, current: dict, path: Path, prefix: str = "") -> None:
    for key in sorted(set(saved) | set(current)):
        dotted = prefix + key
        if dotted in RESUMABLE_CHANGES or saved.get(key) == current.get(key):
            continue
        if isinstance(saved.get(key), dict) and isinstance(current.get(key), dict):
            _check_resumable(saved[key], current[key], path, dotted + ".")
            continue
        raise UserError(
            f"--resume: config key '{dotted}' is {current.get(key)!r} but the run in "
            f"{path.parent.parent} used {saved.get(key)!r}; resume with the run's config"
        )


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop metrics lines past the checkpoint so the resumed run appends without gaps."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut short by the kill that ended the run
        if not isinstance(entry, dict) or not isinstance(entry.get("iteration"), int):
            break
        if entry["iteration"] <= iteration:
            kept.append(line)
    atomic_write(path, lambda f: f.write("".join(k + "\n" for k in kept).encode()))


def _write_yaml(path: Path, data: dict) -> None:
    atomic_write(path, lambda f: f.write(yaml.safe_dump(data, sort_keys=False).encode()))
