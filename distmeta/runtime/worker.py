"""`ShardRunner`: samples a shard of tasks and computes their summed meta-gradient.

It is the body of each Ray `AdaptationWorker` actor and, with `num_workers: 0`, runs in the
driver's own process: the runtime only moves parameters, task indices, gradients and
metrics, so both paths run the same code. No Ray import here."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from distmeta.algorithms import ALGORITHMS, Problem, evaluate_shard, shard_meta_grad
from distmeta.config import Config
from distmeta.errors import UserError
from distmeta.models import make_model
from distmeta.tasks import TaskFamily, eval_task_rng, train_task_rng


class FlatLayout:
    """Names and shapes of a parameter dict, to move it as one flat float vector: one
    buffer serialises and travels through Ray far cheaper than a dict of small arrays."""

    def __init__(self, params: dict[str, torch.Tensor]):
        self.names = list(params)
        self.shapes = [tuple(v.shape) for v in params.values()]
        self.sizes = [v.numel() for v in params.values()]

    def flatten(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([params[k].detach().reshape(-1) for k in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(flat, self.sizes)
        return {k: p.view(shape) for k, p, shape in zip(self.names, parts, self.shapes)}

    def from_numpy(self, flat: np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The parameter dict of a flat numpy vector, on `device`."""
        # Ray hands over read-only zero-copy views; torch wants writable memory.
        tensor = torch.from_numpy(flat if flat.flags.writeable else flat.copy())
        return self.unflatten(tensor.to(device))


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
        model_params = dict(problem.model.named_parameters())
        self.layout = FlatLayout(self.algorithm.init(model_params, config.algorithm))
        batching = config.runtime.task_batching
        self.batching = problem.model.preferred_batching if batching == "auto" else batching

    def meta_grad(self, meta: np.ndarray, iteration: int, indices: Sequence[int]
                  ) -> tuple[np.ndarray, int, dict[str, float]]:
        """Summed meta-gradient (flat, in `layout` order) and metric sums over the training
        tasks `indices` of `iteration`, given the flat meta-parameters."""
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
        """Per-task pre/post-adaptation metrics on evaluation tasks `indices` of `split`,
        drawn from the evaluation `seed`."""
        tasks = self.family.sample([eval_task_rng(seed, split, i) for i in indices], split)
        metrics = evaluate_shard(
            self.algorithm, self.layout.from_numpy(meta, self.device), self.buffers, self._to_device(tasks),
            self.problem, self.config.algorithm, steps, self.batching,
        )
        return {k: v.cpu().numpy() for k, v in metrics.items()}

    def _to_device(self, tasks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in tasks.items()}


def runner_class(family: TaskFamily) -> type:
    """The worker body for a family: `ShardRunner`, or `RLShardRunner` for meta-RL."""
    if family.kind == "rl":
        from distmeta.runtime.rl_worker import RLShardRunner

        return RLShardRunner
    return ShardRunner


def build_network(config: Config, family: TaskFamily) -> torch.nn.Module:
    """The module whose parameters are meta-learned: the model, or the policy for meta-RL."""
    if family.kind == "rl":
        from distmeta.runtime.rl_worker import build_policy

        return build_policy(config, family)
    return build_problem(config, family).model
