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
    from distmeta.tasks.episodes import EpisodeFamily


# Training-split episodes whose BatchNorm statistics `model.batch_norm: population` averages.
POPULATION_EPISODES = 100


class SupervisedShardRunner(RunnerBase):
    """Adapts to shards of supervised tasks on one device (a `ShardRunner`)."""

    def __init__(self, experiment: Experiment, threads: int | None = None):
        super().__init__(experiment, threads)
        config, family = self.config, self.family
        model = experiment.network().to(self.device)
        self.problem = Problem(model, family.loss, family.scores, family.output_dim)
        self.buffers = {k: b.to(self.device) for k, b in model.named_buffers()}
        # Test-time adaptation and prediction (`model.batch_norm: population`: fixed statistics).
        self.test_problem = self.problem
        if config.model.batch_norm == "population":
            self.test_problem = Problem(experiment.test_network().to(self.device), family.loss, family.scores,
                                        family.output_dim)
        self._population: tuple[np.ndarray, dict[str, torch.Tensor]] | None = None
        self._population_family = family
        if experiment.trained_shape is not None:
            self._population_family = cast("EpisodeFamily", family).reshaped(**experiment.trained_shape)
        self.layout = FlatLayout(self.algorithm.init(dict(model.named_parameters()), config.algorithm))
        batching = config.runtime.task_batching
        self.batching = cast("Batching", model.preferred_batching) if batching == "auto" else batching
        # The channel's thread runs `idle`; a call through Ray runs on the actor's own thread.
        self._tasks_lock = threading.Lock()
        self._iteration: int | None = None  # the newest training iteration served
        self._ahead: tuple[int, tuple[int, ...]] | None = None  # what `idle` samples
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
        """Sample ahead the tasks of the call most likely to come first next: the next
        iteration's copy of the first shard this runner took in its newest iteration (the
        pool sends call i to worker i each iteration). The direct channel runs this after
        a reply when the learner has no other call queued for this worker, i.e. while the
        learner takes its outer step. Tasks are a function of their place alone, so a call
        served from here gets the same bits; any other call samples its own."""
        with self._tasks_lock:
            ahead, self._ahead = self._ahead, None
            if ahead is None:
                return
            try:
                self._prefetched = (ahead, self._sample_train(*ahead))
            except Exception:  # noqa: BLE001 - the call itself samples again and raises it there
                self._prefetched = None

    def _train_tasks(self, iteration: int, indices: tuple[int, ...]) -> dict[str, torch.Tensor]:
        with self._tasks_lock:
            if iteration != self._iteration:
                self._iteration, self._ahead = iteration, (iteration + 1, indices)
            prefetched = self._prefetched
            if prefetched is not None and prefetched[0][0] <= iteration:  # its iteration has come: used or stale
                self._prefetched = None
        if prefetched is not None and prefetched[0] == (iteration, indices):
            return prefetched[1]
        return self._sample_train(iteration, indices)

    def _sample_train(self, iteration: int, indices: tuple[int, ...]) -> dict[str, torch.Tensor]:
        return self.family.sample([train_task_rng(self.config.seed, iteration, i) for i in indices], "train")

    def evaluate(self, meta: np.ndarray, split: str, indices: Sequence[int], steps: int,
                 seed: int) -> dict[str, np.ndarray]:
        tasks = self.family.sample([eval_task_rng(seed, split, i) for i in indices], split)
        metrics = evaluate_shard(
            self.algorithm, self.layout.from_numpy(meta, self.device), self.test_buffers(meta),
            self._to_device(tasks), self.test_problem, self.config.algorithm, steps, self.batching,
        )
        return {k: v.cpu().numpy() for k, v in metrics.items()}

    def test_buffers(self, meta: np.ndarray) -> dict[str, torch.Tensor]:
        """The buffers of `test_problem` at the flat meta-parameters `meta`: the training
        ones, or with `model.batch_norm: population` each BatchNorm's batch statistics
        averaged over POPULATION_EPISODES training-split episodes of the run's training
        shape (`Experiment.trained_shape`; the batches the algorithm's prediction forms
        at the meta-parameters; evaluation's own task stream, so every worker finds the
        same bits). Kept for the last `meta`."""
        if self.test_problem is self.problem:
            return self.buffers
        if self._population is None or not np.array_equal(self._population[0], meta):
            self._population = (meta.copy(), self._population_stats(self.layout.from_numpy(meta, self.device)))
        return self._population[1]

    def _population_stats(self, meta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        norms = {name: m for name, m in self.problem.model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
        sums: dict[str, list] = {}  # per BatchNorm: [sum of batch means, of batch variances, batches]

        def record(name):
            def hook(module, inputs, output):
                x = inputs[0]
                got = sums.setdefault(name, [0.0, 0.0, 0])
                got[0] = got[0] + x.mean((0, 2, 3))
                got[1] = got[1] + x.var((0, 2, 3), unbiased=True)  # what BatchNorm's running average takes
                got[2] += 1
            return hook

        hooks = [m.register_forward_hook(record(name)) for name, m in norms.items()]
        params = self.algorithm.model_params(meta)
        try:
            with torch.no_grad():
                for first in range(0, POPULATION_EPISODES, 10):
                    rngs = [eval_task_rng(self.config.seed, "train", i) for i in range(first, first + 10)]
                    tasks = self._to_device(self._population_family.sample(rngs, "train"))
                    for i in range(len(rngs)):
                        support = (tasks["support_x"][i], tasks["support_y"][i])
                        self.algorithm.predict(params, self.buffers, support, tasks["query_x"][i], self.problem)
        finally:
            for h in hooks:
                h.remove()
        out: dict[str, torch.Tensor] = {}
        for name, (mean, var, batches) in sums.items():
            out[f"{name}.running_mean"] = mean / batches
            out[f"{name}.running_var"] = var / batches
            out[f"{name}.num_batches_tracked"] = torch.tensor(batches, device=self.device)
        return out

    def _to_device(self, tasks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in tasks.items()}
