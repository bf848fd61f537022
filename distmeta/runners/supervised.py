"""`SupervisedShardRunner`: samples a shard of supervised tasks (regression or N-way
classification episodes) and computes their summed meta-gradient."""

from __future__ import annotations

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

    def meta_grad(self, meta: np.ndarray, iteration: int, indices: Sequence[int],
                  sampling_meta: np.ndarray | None = None) -> tuple[np.ndarray, int, dict[str, float]]:
        seed = self.config.seed
        tasks = self.family.sample([train_task_rng(seed, iteration, i) for i in indices], "train")
        grads, metrics = shard_meta_grad(
            self.algorithm, self.layout.from_numpy(meta, self.device), self.buffers, self._to_device(tasks),
            self.problem, self.config.algorithm, self.batching,
        )
        return (
            self.layout.flatten(grads).cpu().numpy(),
            len(indices),
            {k: float(v) for k, v in metrics.items()},
        )

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
