"""`SupervisedShardRunner`: samples a shard of supervised tasks (regression or N-way
classification episodes) and computes their summed meta-gradient."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from distmeta.algorithms import Problem, evaluate_shard, shard_meta_grad
from distmeta.runners.base import FlatLayout, RunnerBase
from distmeta.tasks import eval_task_rng, train_task_rng

if TYPE_CHECKING:
    from distmeta.algorithms.core import Batching
    from distmeta.experiment import Experiment


class SupervisedShardRunner(RunnerBase):
    """Adapts to shards of supervised tasks on one device (a `ShardRunner`)."""

    def __init__(self, experiment: Experiment, threads: int | None = None):
        super().__init__(experiment, threads)
        config, family = self.config, self.family
        model = experiment.network().to(self.device)
        self.problem = Problem(model, family.loss, family.scores, family.output_dim)
        self.buffers = {k: b.to(self.device) for k, b in model.named_buffers()}
        self.layout = FlatLayout(self.algorithm.init(dict(model.named_parameters()), config.algorithm))
        batching = config.runtime.task_batching
        self.batching = cast("Batching", model.preferred_batching) if batching == "auto" else batching
        # The channel's thread runs `idle`; a call through Ray runs on the actor's own thread.
        self._tasks_lock = threading.Lock()
        self._last_shard: tuple[int, tuple[int, ...]] | None = None
        self._prefetched: tuple[tuple[int, tuple[int, ...]], dict[str, torch.Tensor]] | None = None

    def meta_grad(self, meta: np.ndarray, iteration: int, indices: Sequence[int],
                  sampling_meta: np.ndarray | None = None) -> tuple[np.ndarray, int, dict[str, float]]:
        tasks = self._train_tasks(iteration, tuple(indices))
        grads, metrics = shard_meta_grad(
            self.algorithm, self.layout.from_numpy(meta, self.device), self.buffers, self._to_device(tasks),
            self.problem, self.config.algorithm, self.batching,
        )
        return (
            self.layout.flatten(grads).cpu().numpy(),
            len(indices),
            {k: float(v) for k, v in metrics.items()},
        )

    def idle(self) -> None:
        """Sample the tasks of the call that most likely comes next, the same shard of the
        next iteration, while the learner takes its outer step (the direct channel calls
        this after each reply). Tasks are a function of their place alone, so a call
        served from here gets the same bits; any other call samples its own."""
        with self._tasks_lock:
            if self._last_shard is None:
                return
            iteration, indices = self._last_shard
            self._last_shard = None
            try:
                self._prefetched = ((iteration + 1, indices), self._sample_train(iteration + 1, indices))
            except Exception:  # noqa: BLE001 - the call itself samples again and raises it there
                self._prefetched = None

    def _train_tasks(self, iteration: int, indices: tuple[int, ...]) -> dict[str, torch.Tensor]:
        with self._tasks_lock:
            prefetched, self._prefetched = self._prefetched, None
            self._last_shard = (iteration, indices)
        if prefetched is not None and prefetched[0] == (iteration, indices):
            return prefetched[1]
        return self._sample_train(iteration, indices)

    def _sample_train(self, iteration: int, indices: tuple[int, ...]) -> dict[str, torch.Tensor]:
        return self.family.sample([train_task_rng(self.config.seed, iteration, i) for i in indices], "train")

    def evaluate(self, meta: np.ndarray, split: str, indices: Sequence[int], steps: int,
                 seed: int) -> dict[str, np.ndarray]:
        tasks = self.family.sample([eval_task_rng(seed, split, i) for i in indices], split)
        metrics = evaluate_shard(
            self.algorithm, self.layout.from_numpy(meta, self.device), self.buffers, self._to_device(tasks),
            self.problem, self.config.algorithm, steps, self.batching,
        )
        return {k: v.cpu().numpy() for k, v in metrics.items()}

    def _to_device(self, tasks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in tasks.items()}
