"""Executors: where the shards of an iteration run, behind one `map`.

- `InProcess`: one shard runner in this process (`num_workers: 0`; evaluation);
- `WorkerPool` (`pool.py`): `num_workers` Ray actors, each a shard runner, with faults
  costing a re-run of one shard.

The learner and evaluation call `share` once per parameter vector and `map` once per
round of shards, and never ask which executor they have."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from distmeta.errors import UserError
from distmeta.runners import ShardRunner
from distmeta.runtime import reduce

if TYPE_CHECKING:
    from distmeta.experiment import Experiment


class Executor(Protocol):
    @property
    def alive(self) -> int:
        """Ray workers ready to take a shard (0 in-process)."""
        ...

    def share(self, flat: np.ndarray) -> Any:
        """The parameter vector as every call of the next `map`s takes it (made once)."""
        ...

    def map(self, method: str, calls: Sequence[tuple], context: str = "", kind: str | None = None
            ) -> tuple[list, int]:
        """`runner.method(*call)` for each call, results in call order, and how many calls
        were re-run after losing their worker. `context` names the calls in messages;
        `kind` (default `method`) groups calls that take alike times, for the automatic
        straggler timeout (meta-RL's first outer step samples episodes, its later ones
        reuse them)."""
        ...

    def map_sum(self, method: str, calls: Sequence[tuple], context: str = "", kind: str | None = None
                ) -> tuple[tuple, int]:
        """`reduce.add_results` of `map`'s results (each a shard's `(gradient, tasks,
        metric sums)`), added in the one order `reduce` defines, and the re-run count."""
        ...

    def close(self) -> None:
        ...


class InProcess:
    """Runs every call on one shard runner in this process, in order."""

    alive = 0

    def __init__(self, runner: ShardRunner):
        self.runner = runner

    def share(self, flat: np.ndarray) -> np.ndarray:
        return flat

    def map(self, method: str, calls: Sequence[tuple], context: str = "", kind: str | None = None
            ) -> tuple[list, int]:
        return [getattr(self.runner, method)(*call) for call in calls], 0

    def map_sum(self, method: str, calls: Sequence[tuple], context: str = "", kind: str | None = None
                ) -> tuple[tuple, int]:
        return reduce.add_results(self.map(method, calls, context)[0]), 0

    def close(self) -> None:
        self.runner.close()


def start_executor(experiment: Experiment, address: str | None = None,
                   on_event: Callable[[dict], None] | None = None) -> Executor:
    """`InProcess` for `num_workers: 0`, else a `WorkerPool` on the Ray cluster at `address`
    (a local Ray is started when none is up and no address is given)."""
    config = experiment.config
    if config.num_workers == 0:
        return InProcess(experiment.make_runner())
    from distmeta.runtime import cluster

    n, cpu = config.num_workers, config.runtime.resources_per_worker.cpu
    # Whether this call started Ray is not kept: Ray stays up for the learner's owner (the
    # CLI shuts down the Ray it started; a library user keeps theirs).
    cluster.ensure_ray(address, n * cpu, lambda have: (
        f"num_workers: {n} workers x runtime.resources_per_worker.cpu {cpu:g} need {n * cpu:g} CPUs; {have}"))
    have_gpus = cluster.cluster_gpus()
    gpu = cluster.gpus_per_worker(config.runtime.resources_per_worker.gpu, have_gpus, n)
    if gpu * n > have_gpus:
        raise UserError(
            f"runtime.resources_per_worker.gpu: {n} workers x {gpu:g} GPU need {gpu * n:g} GPUs; "
            f"the Ray cluster has {have_gpus:g}; unset it to share what there is"
        )
    if config.runtime.device == "cuda" and gpu == 0:
        raise UserError(
            "runtime.device: 'cuda' but the Ray cluster has no GPU for the workers; "
            "set runtime.device=auto or add GPU nodes"
        )
    import ray

    from distmeta.runtime.pool import WorkerPool

    experiment_ref = ray.put(ship_user_code(experiment))  # the dataset reaches every worker once, by reference
    return WorkerPool(
        experiment.runner_class, (experiment_ref, config.runtime.threads or max(1, int(cpu))), n,
        num_cpus=cpu, num_gpus=gpu,
        timeout_s=config.runtime.shard_timeout_s, max_attempts=config.runtime.max_shard_attempts,
        on_event=on_event,
    )


def ship_user_code(experiment: Experiment) -> Experiment:
    """`experiment`, its family's module now pickled by value when it is a user's: the
    module need not be importable on the workers (nor installed on the cluster's nodes)."""
    import ray

    module = type(experiment.family).__module__
    if module.split(".")[0] != "distmeta":
        ray.cloudpickle.register_pickle_by_value(sys.modules[module])
    return experiment


def evaluate_tasks(executor: Executor, meta: np.ndarray, split: str, tasks: int, chunk: int,
                   steps: int, seed: int, context: str = "evaluation",
                   on_progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Per-task pre- and post-adaptation scores of evaluation tasks 0..tasks-1 of `split`,
    `chunk` tasks per call. `on_progress(done, tasks)` hears after each round of calls (one
    per worker, or one in-process); without it, all calls go out at once."""
    shared = executor.share(meta)
    calls = [(shared, split, range(lo, min(lo + chunk, tasks)), steps, seed) for lo in range(0, tasks, chunk)]
    per_round = len(calls) if on_progress is None else max(1, executor.alive)
    rows: list = []
    for lo in range(0, len(calls), per_round):
        rows += executor.map("evaluate", calls[lo:lo + per_round], context)[0]
        if on_progress is not None:
            on_progress(min(tasks, (lo + per_round) * chunk), tasks)
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
