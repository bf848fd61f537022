"""A user's own task family, outside distmeta, for the dotted-path tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distmeta import TaskFamily


@dataclass
class Linear(TaskFamily):
    """y = a x + b with a, b ~ U[-1, 1]."""

    kind = "regression"
    points: int = 4
    noise: float | None = None

    @property
    def input_shape(self):
        return (1,)

    @property
    def output_dim(self):
        return 1

    def sample_task(self, rng, split):
        a, b = rng.uniform(-1, 1, size=2)
        x = rng.uniform(-1, 1, size=(2 * self.points, 1)).astype(np.float32)
        y = (a * x + b).astype(np.float32)
        return {"support_x": x[: self.points], "support_y": y[: self.points],
                "query_x": x[self.points:], "query_y": y[self.points:]}


class NotAFamily:
    pass


@dataclass
class Picky(Linear):
    """Validates with a plain ValueError, as a user's own code would."""

    def __post_init__(self):
        if self.points > 10:
            raise ValueError("at most 10 points")


@dataclass
class Crashing(Linear):
    """A constructor that fails with neither TypeError nor ValueError (a missing device, a
    bug): still one line, with the exception's type."""

    def __post_init__(self):
        raise RuntimeError("no dataset server\nsecond line")


@dataclass
class Unfinished(TaskFamily):
    """Forgot to implement the abstract methods."""

    kind = "regression"


@dataclass
class AbsoluteLinear(Linear):
    """Linear tasks scored by mean absolute error: a family that brings its own loss."""

    def loss(self, prediction, target):
        return (prediction - target).abs().mean()


@dataclass
class FlatTargets(Linear):
    """Returns targets shaped (points,) in float64: the format's (points, 1) float32 expected."""

    def sample_task(self, rng, split):
        task = super().sample_task(rng, split)
        return {**task, "support_y": task["support_y"][:, 0].astype(np.float64)}
