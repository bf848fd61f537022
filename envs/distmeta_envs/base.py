"""The task protocol shared by every environment family in this package.

Ray 2.60 no longer ships RLlib's ``TaskSettableEnv``, so the protocol lives here. Tasks are
plain JSON-able dicts (python floats, ints, lists of floats) so they can be printed as JSON,
stored in checkpoints and given on a command line (``--task goal=[0.3,-0.2]``).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TaskKey:
    """One key of a family's task dict: its value range and shape.

    ``size`` None means a scalar; an int means a list of that many floats. ``choices`` (a
    tuple of allowed values, kept with their own type: ints stay ints in the task dict)
    replaces the ``low``/``high`` range for discrete keys. ``integer`` makes the key an int in
    [low, high] (both ends included), e.g. an index into a fixed task set. ``default`` is the
    value at construction (for a list key, used for every element); without it the range
    midpoint (``low`` for an integer key) or the first choice.
    """

    name: str
    low: float = -math.inf
    high: float = math.inf
    size: int | None = None
    choices: tuple[int | float, ...] | None = None
    integer: bool = False
    default: float | None = None

    def describe(self) -> str:
        """Allowed values in words: "a number in [0, 2]", "a list of 2 numbers, each in [...]"."""
        if self.choices is not None:
            allowed = "one of {" + ", ".join(f"{c:g}" for c in self.choices) + "}"
            scalar = allowed
        else:
            allowed = f"in [{self.low:g}, {self.high:g}]"
            scalar = f"{'an integer' if self.integer else 'a number'} {allowed}"
        return scalar if self.size is None else f"a list of {self.size} numbers, each {allowed}"

    def sample(self, rng: np.random.Generator) -> Any:
        """One value: uniform over the range, or over the choices."""
        if self.choices is not None:
            values = [self.choices[int(i)] for i in rng.integers(len(self.choices), size=self.size or 1)]
        elif self.integer:
            values = rng.integers(int(self.low), int(self.high) + 1, size=self.size or 1).tolist()
        else:
            # .tolist() gives python floats, never numpy scalars, so the task stays JSON-able.
            values = rng.uniform(self.low, self.high, size=self.size or 1).tolist()
        return values[0] if self.size is None else values

    def validate(self, family: str, value: Any) -> Any:
        """Return ``value`` normalised to python floats, or raise a one-line ValueError."""
        where = f"task: key {self.name!r} for {family}"
        if self.size is None:
            return self._check_number(where, value, value)
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
            raise ValueError(f"{where}: got {value!r}; expected {self.describe()}")  # noqa: TRY004
        if len(value) != self.size:
            raise ValueError(f"{where}: got {len(value)} values {list(value)!r}; expected {self.describe()}")
        return [self._check_number(where, v, value) for v in value]

    def _check_number(self, where: str, number: Any, value: Any) -> int | float:
        """Check one number; ``value`` is the whole input, quoted in the error."""
        if isinstance(number, bool) or not isinstance(number, (int, float, np.integer, np.floating)):
            raise ValueError(f"{where}: got {value!r}; expected {self.describe()}")  # noqa: TRY004
        number = float(number)
        if self.choices is not None:
            if number not in self.choices:
                raise ValueError(f"{where}: got {value!r}; expected {self.describe()}")
            return self.choices[self.choices.index(number)]  # 1.0 given for choice 1 -> 1
        if not self.low <= number <= self.high:  # also rejects NaN
            raise ValueError(f"{where}: got {value!r}; expected {self.describe()}")
        if self.integer:
            if not number.is_integer():
                raise ValueError(f"{where}: got {value!r}; expected {self.describe()}")
            return int(number)
        return number


class TaskSettableEnv(ABC):
    """Mixin for a gymnasium.Env whose dynamics or reward depend on a task dict.

    Subclasses list their keys in ``task_keys`` (which also defines the task distribution:
    uniform over each key's range or choices) and implement ``_apply_task`` to push a
    validated task into the simulator. Use it first in the bases, before gymnasium.Env, and
    end ``__init__`` with ``self.set_task(task if task is not None else self.default_task())``
    (``task`` being an optional constructor argument, so ``gym.make(id, task={...})`` and
    RLlib's env_config can fix it), so ``reset`` works without an explicit ``set_task``.
    """

    task_keys: tuple[TaskKey, ...] = ()
    # gymnasium.Env provides np_random; declared here for type checkers only.
    np_random: np.random.Generator

    # -- the protocol --------------------------------------------------------------------------
    def sample_tasks(self, n_tasks: int, seed: int | None = None) -> list[dict]:
        """Draw ``n_tasks`` tasks; with ``seed`` from a fresh generator (same seed, same tasks),
        otherwise from the env's own ``np_random`` (seeded by ``reset(seed=...)``)."""
        if isinstance(n_tasks, bool) or not isinstance(n_tasks, (int, np.integer)) or n_tasks < 0:
            raise ValueError(f"sample_tasks: n_tasks got {n_tasks!r}; expected an int >= 0")
        rng = np.random.default_rng(seed) if seed is not None else self.np_random
        return [self._sample_task(rng) for _ in range(int(n_tasks))]

    def set_task(self, task: dict) -> None:
        """Validate ``task`` against ``task_keys`` and apply it; a bad task raises ValueError."""
        self._task = self.validate_task(task)
        self._apply_task(self._task)
        # gymnasium's MuJoCo envs pickle (and deepcopy) by re-running the
        # constructor with its recorded kwargs; recording the task keeps it across a copy.
        ezpickle_kwargs = getattr(self, "_ezpickle_kwargs", None)
        if isinstance(ezpickle_kwargs, dict):
            ezpickle_kwargs["task"] = self.get_task()

    def get_task(self) -> dict:
        """The current task (a copy, so callers cannot change the env behind its back)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._task.items()}

    # -- helpers for subclasses and callers ----------------------------------------------------
    @classmethod
    def family_name(cls) -> str:
        """The name used in error messages (the class name)."""
        return cls.__name__

    @classmethod
    def validate_task(cls, task: Any) -> dict:
        """Return a normalised copy of ``task`` (python numbers), or raise a one-line ValueError.

        Every malformed task is a ValueError, wrong types included, so callers (command-line
        and config parsing) have one exception to turn into a message.
        """
        family = cls.family_name()
        expected = ", ".join(k.name for k in cls.task_keys)
        if not isinstance(task, dict):
            raise ValueError(f"task for {family}: got {type(task).__name__} {task!r}; "  # noqa: TRY004
                             f"expected a dict with keys: {expected}")
        by_name = {k.name: k for k in cls.task_keys}
        for name in task:
            if name not in by_name:
                raise ValueError(f"task: unknown key {name!r} for {family}; expected keys: {expected}")
        for name in by_name:
            if name not in task:
                raise ValueError(f"task: missing key {name!r} for {family}; expected keys: {expected}")
        return {name: key.validate(family, task[name]) for name, key in by_name.items()}

    @classmethod
    def default_task(cls) -> dict:
        """The task set at construction (see ``TaskKey.default``)."""
        task = {}
        for key in cls.task_keys:
            if key.default is not None:
                value = key.default
            elif key.choices is not None:
                value = key.choices[0]
            elif key.integer:
                value = int(key.low)
            else:
                value = (key.low + key.high) / 2.0
            task[key.name] = value if key.size is None else [value] * key.size
        return task

    def _sample_task(self, rng: np.random.Generator) -> dict:
        return {key.name: key.sample(rng) for key in self.task_keys}

    @abstractmethod
    def _apply_task(self, task: dict) -> None:
        """Push an already validated task into the environment's dynamics or reward."""
