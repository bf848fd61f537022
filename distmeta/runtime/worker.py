"""`ShardRunner`: samples a shard of tasks and computes their summed meta-gradient.

It is the body of each Ray `AdaptationWorker` actor and, with `num_workers: 0`, runs in the
driver's own process: the runtime only moves parameters, task indices, gradients and
metrics, so both paths run the same code. No Ray import here."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from distmeta.algorithms import ALGORITHMS, Problem, evaluate_shard, shard_meta_grad
from distmeta.config import Config
from distmeta.errors import UserError
from distmeta.models import make_model
from distmeta.tasks import TaskFamily, eval_task_rng, train_task_rng

NumpyParams = dict[str, np.ndarray]


def resolve_device(choice: str) -> torch.device:
    """`auto` takes the GPU this process sees (Ray exposes only the worker's own), else CPU."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "runtime.device: 'cuda' but this process sees no GPU; "
            "set runtime.device=auto or give workers GPUs (runtime.resources_per_worker.gpu)"
        )
    if choice in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def build_problem(config: Config, family: TaskFamily) -> Problem:
    """The model template and loss for the config's model on this family's tasks."""
    out = None if config.algorithm.name == "protonet" else family.output_dim
    model = make_model(config.model, family.input_shape, out)
    return Problem(model, family.kind, family.output_dim)


class ShardRunner:
    """Adapts to shards of tasks on one device."""

    def __init__(self, config: Config, family: TaskFamily, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.config = config
        self.family = family
        self.device = resolve_device(config.runtime.device)
        problem = build_problem(config, family)
        problem.model.to(self.device)
        self.problem = problem
        self.buffers = {k: b.to(self.device) for k, b in problem.model.named_buffers()}
        self.algorithm = ALGORITHMS[config.algorithm.name]
        batching = config.runtime.task_batching
        self.batching = problem.model.preferred_batching if batching == "auto" else batching

    def meta_grad(self, meta: NumpyParams, iteration: int, indices: Sequence[int]
                  ) -> tuple[NumpyParams, int, dict[str, float]]:
        """Summed meta-gradient and metric sums over training tasks `indices` of `iteration`."""
        seed = self.config.seed
        tasks = self.family.sample([train_task_rng(seed, iteration, i) for i in indices], "train")
        grads, metrics = shard_meta_grad(
            self.algorithm, self._to_device(meta), self.buffers, self._to_device(tasks),
            self.problem, self.config.algorithm, self.batching,
        )
        return (
            {k: g.detach().cpu().numpy() for k, g in grads.items()},
            len(indices),
            {k: float(v) for k, v in metrics.items()},
        )

    def evaluate(self, meta: NumpyParams, split: str, indices: Sequence[int], steps: int
                 ) -> dict[str, np.ndarray]:
        """Per-task pre/post-adaptation metrics on evaluation tasks `indices` of `split`."""
        seed = self.config.seed
        tasks = self.family.sample([eval_task_rng(seed, split, i) for i in indices], split)
        metrics = evaluate_shard(
            self.algorithm, self._to_device(meta), self.buffers, self._to_device(tasks),
            self.problem, self.config.algorithm, steps, self.batching,
        )
        return {k: v.cpu().numpy() for k, v in metrics.items()}

    def _to_device(self, arrays) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in arrays.items():
            if isinstance(v, np.ndarray):
                # Ray hands over read-only zero-copy views; torch wants writable memory.
                v = torch.from_numpy(v if v.flags.writeable else v.copy())
            out[k] = v.to(self.device)
        return out
