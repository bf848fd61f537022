"""The `ShardRunner` protocol, and the flat parameter vector that runners and the learner
exchange."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from distmeta.errors import UserError

if TYPE_CHECKING:
    from distmeta.experiment import Experiment


class ShardRunner(Protocol):
    """What the learner asks of a worker; each call is one shard of tasks.

    Tasks are named by their indices, not shipped: a runner samples task `i` of iteration
    `t` from `train_task_rng(seed, t, i)`, so a shard gives the same result on any worker
    (and a shard re-run after a fault gives the same bits). Parameters travel as one flat
    float32 vector in `layout` order. Built as `runner_class(experiment, threads)`.

    A runner may also have `idle()`: work done between calls, which the direct channel
    runs after replying to the last call the learner has queued for this worker (the
    supervised runner samples its next iteration's tasks there); it must not change any
    call's result."""

    layout: FlatLayout

    def meta_grad(self, meta: np.ndarray, iteration: int, indices: Sequence[int],
                  sampling_meta: np.ndarray | None = None) -> tuple[np.ndarray, int, dict[str, float]]:
        """The summed meta-gradient (flat) over training tasks `indices` of `iteration`,
        the number of tasks, and metric sums: `pre_<score>` and `post_<score>` for each
        score, `post_loss` (the meta-objective) and, for meta-RL, `env_steps`.
        `sampling_meta`: the parameters that sampled the iteration's data, where it is
        sampled (meta-RL's outer steps after the first); None means `meta`."""
        ...

    def evaluate(self, meta: np.ndarray, split: str, indices: Sequence[int], steps: int,
                 seed: int) -> dict[str, np.ndarray]:
        """Per-task `pre_<score>` and `post_<score>` arrays of evaluation tasks `indices`
        of `split` (drawn from `seed`), adapted with `steps` inner steps."""
        ...

    def close(self) -> None:
        """Release what the runner holds (environments); the worker is stopped after."""
        ...


class RunnerBase:
    """What every shard runner holds: the experiment's config, family and algorithm, and
    its device; the worker's torch threads are set to the CPUs it asked Ray for."""

    def __init__(self, experiment: Experiment, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.config = experiment.config
        self.family = experiment.family
        self.algorithm = experiment.algorithm
        self.device = resolve_device(self.config.runtime.device)

    def close(self) -> None:
        pass


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
