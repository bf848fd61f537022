"""The `TaskFamily` interface: a distribution over tasks, sampled one task per seed.

A task is a dict of numpy arrays with a support set (what adaptation sees) and a query set
(what the adapted model is scored on):

    support_x (K, *input_shape)   support_y (K, 1) float  | (K,) int64 class ids 0..n-1
    query_x   (Q, *input_shape)   query_y   (Q, 1) float  | (Q,) int64

To add a family, subclass `TaskFamily`, set `kind`, `input_shape` and `output_dim`, write
`sample_task`, and name it in a config as `task: {family: "mypkg.mod:MyFamily", ...}`: every
other key of `task:` is passed to the constructor. A dataclass family gets its fields typed
and checked like the rest of the config. Put cheap validation in the constructor (it runs
when the config is built, before Ray starts) and heavy loading in `prepare`. The task loss
is mean squared error for regression and cross-entropy for classification; override
`loss` (and `scores`, for more metrics) to bring your own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from distmeta.errors import UserError

SPLITS = ("train", "val", "test")
_TRAIN_STREAM, _EVAL_STREAM = 0, 1


class TaskFamily(ABC):
    """A distribution over tasks; subclasses are plain data, picklable to Ray workers."""

    kind: ClassVar[Literal["regression", "classification", "rl"]]
    """`regression` scores with mean squared error; `classification` with cross-entropy
    over `output_dim` classes, and reports accuracy too; `rl` tasks are environment tasks
    whose data the worker samples (`distmeta.tasks.gym`)."""

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example, e.g. (1,) or (1, 28, 28)."""

    @property
    @abstractmethod
    def output_dim(self) -> int:
        """Regression targets per example, or classes per task (N of N-way)."""

    @abstractmethod
    def sample_task(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        """One task drawn with `rng` from `split` (one of train, val, test)."""

    @property
    def examples_per_task(self) -> int | None:
        """Support plus query examples of one task, where the config alone gives it: a size
        too large for memory is then refused before a task is drawn. None: unknown (the
        first drawn tasks are measured instead)."""
        return None

    @property
    def eval_task_count(self) -> int | None:
        """How many distinct evaluation tasks there are (a family that scores a fixed task
        list); None: draws, without end."""
        return None

    def check_eval_tasks(self, tasks: int, flag: str) -> None:
        """Refuse to score more evaluation tasks than the family has."""
        count = self.eval_task_count
        if count is not None and tasks > count:
            raise UserError(f"{flag}: got {tasks}; the family lists {count} evaluation tasks "
                            f"(task.eval_all_tasks); expected at most {count}")

    def check_split(self, split: str, flag: str) -> None:
        """Refuse a split the family does not hold out (`flag` names the input at fault)."""
        if split not in SPLITS:
            raise UserError(f"{flag}: got '{split}'; expected one of {', '.join(SPLITS)}")

    def prepare(self) -> None:
        """Load whatever is heavy (datasets). Called once in the driver, before the family
        is shipped to workers through Ray's object store. Must be idempotent."""

    def sample(self, rngs: Sequence[np.random.Generator], split: str) -> dict[str, torch.Tensor]:
        """A task batch: each array of `sample_task` stacked on a new leading task axis."""
        tasks = [self.sample_task(rng, split) for rng in rngs]
        return {k: torch.from_numpy(np.stack([t[k] for t in tasks])) for k in tasks[0]}

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The scalar loss of one task's predictions, minimised by the inner loop and
        scored on the query set: mean squared error for `regression`, cross-entropy over
        the logits for `classification`. It runs under `torch.func` transforms (`grad`,
        `vmap`): use torch operations only, and no data-dependent Python control flow."""
        if self.kind == "classification":
            return F.cross_entropy(prediction, target)
        return F.mse_loss(prediction, target)

    def scores(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The metrics of one task's query predictions, reported before and after
        adaptation; `loss` is the one every family has (and the meta-objective), and
        classification adds `accuracy`."""
        scores = {"loss": self.loss(prediction, target)}
        if self.kind == "classification":
            scores["accuracy"] = (prediction.argmax(-1) == target).float().mean()
        return scores


def train_task_rng(seed: int, iteration: int, index: int) -> np.random.Generator:
    """The generator of task `index` of meta-iteration `iteration`: a function of the run
    seed and the task's place alone, so tasks do not depend on how shards are split."""
    return np.random.default_rng([seed, _TRAIN_STREAM, iteration, index])


def eval_task_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of evaluation task `index` of `split`; disjoint from training draws."""
    return np.random.default_rng([seed, _EVAL_STREAM, SPLITS.index(split), index])
