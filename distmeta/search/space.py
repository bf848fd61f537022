"""One searched key's distribution, as a search config writes it and as Tune takes it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from distmeta.errors import ConfigError

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")


@dataclass(frozen=True)
class Distribution:
    """One searched key: `{loguniform: [low, high]}`, `{uniform: [low, high]}`,
    `{randint: [low, high]}` (integers, high exclusive, as `tune.randint`),
    `{choice: [a, b, ...]}` (sampled) or `{grid: [a, b, ...]}` (every value, times
    `num_samples`; random searcher only)."""

    kind: str
    values: tuple

    @classmethod
    def parse(cls, key: str, spec: Any) -> Distribution:
        where = f"search_space.{key}"
        if not (isinstance(spec, Mapping) and len(spec) == 1):
            raise ConfigError(
                f"{where}: got {spec!r}; expected one distribution, e.g. {{loguniform: [0.001, 0.1]}} "
                f"or {{choice: [1, 2]}} ({', '.join(DISTRIBUTIONS)})"
            )
        kind, values = next(iter(spec.items()))
        if kind not in DISTRIBUTIONS:
            raise ConfigError(f"{where}: unknown distribution '{kind}'; expected one of {', '.join(DISTRIBUTIONS)}")
        if not isinstance(values, (list, tuple)):
            raise ConfigError(f"{where}.{kind}: got {values!r}; expected a list")
        if kind in ("choice", "grid"):
            if not values:
                raise ConfigError(f"{where}.{kind}: empty; expected at least one value")
            return cls(kind, tuple(values))
        if len(values) != 2:
            raise ConfigError(f"{where}.{kind}: got {list(values)}; expected [low, high]")
        low, high = values
        number = int if kind == "randint" else (int, float)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, number) or not math.isfinite(v):
                raise ConfigError(
                    f"{where}.{kind}: got {list(values)}; expected two "
                    f"{'integers' if kind == 'randint' else 'finite numbers'}"
                )
        if not low < high:
            raise ConfigError(f"{where}.{kind}: low {low} >= high {high}; expected low < high")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"{where}.loguniform: low {low}; expected low > 0 on a log scale")
        return cls(kind, (low, high))

    def extremes(self) -> tuple:
        """Values whose configs must all be valid for every draw to be: the ends, and for
        continuous ranges a non-integer inside (an integer key cannot take a float)."""
        if self.kind == "randint":
            return (self.values[0], self.values[1] - 1)
        if self.kind in ("choice", "grid"):
            return self.values
        low, high = self.values
        inside = math.sqrt(low * high) if self.kind == "loguniform" else (low + high) / 2
        if float(inside).is_integer():
            inside = low + (high - low) / math.pi
        return (low, float(inside), high)

    def clip(self, value):
        """A PBT-perturbed value (scaled by 0.8 or 1.2) brought back into the range."""
        if self.kind in ("choice", "grid"):
            return value
        if self.kind == "randint":
            return int(min(max(round(value), self.values[0]), self.values[1] - 1))
        return min(max(value, self.values[0]), self.values[1])

    def to_tune(self):
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        if self.kind == "choice":
            return tune.choice(list(self.values))
        return getattr(tune, self.kind)(*self.values)

    def to_mutation(self):
        """PBT's resampling space for this key."""
        if self.kind in ("grid", "choice"):
            return list(self.values)
        return self.to_tune()
