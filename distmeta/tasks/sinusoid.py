"""Sinusoid regression as in MAML (Finn et al. 2017, section 5.1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distmeta.errors import ConfigError
from distmeta.tasks.base import TaskFamily


@dataclass
class Sinusoid(TaskFamily):
    """y = A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5].

    The three splits share the distribution; their tasks come from disjoint seed streams.
    """

    kind = "regression"

    k_support: int = 10
    """Support points per task (K of K-shot)."""
    k_query: int = 10
    """Query points per task."""

    def __post_init__(self):
        for name in ("k_support", "k_query"):
            if getattr(self, name) < 1:
                raise ConfigError(f"task.{name}: got {getattr(self, name)}; expected >= 1")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1,)

    @property
    def output_dim(self) -> int:
        return 1

    @property
    def examples_per_task(self) -> int:
        return self.k_support + self.k_query

    def sample_task(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        amplitude = rng.uniform(0.1, 5.0)
        phase = rng.uniform(0.0, np.pi)
        x = rng.uniform(-5.0, 5.0, size=(self.k_support + self.k_query, 1)).astype(np.float32)
        y = (amplitude * np.sin(x - phase)).astype(np.float32)
        k = self.k_support
        return {"support_x": x[:k], "support_y": y[:k], "query_x": x[k:], "query_y": y[k:]}
