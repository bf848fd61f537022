"""MAML's 2-D point robot navigation (Finn et al., 2017, section 5.3)."""
from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from distmeta_envs.base import TaskKey, TaskSettableEnv

_MAX_STEP = 0.1


class Nav2D(TaskSettableEnv, gym.Env):
    """A point in the plane that must walk to a goal.

    Observation: the position, float32 (2,), starting at the origin. Action: a displacement,
    clipped to [-0.1, 0.1] per axis. Reward: minus the Euclidean distance from the new position
    to the goal. Never terminates; ``distmeta/Nav2D-v0`` truncates at 100 steps.
    Task: ``{"goal": [x, y]}`` with x, y ~ U[-0.5, 0.5].

    It is stepped ~1e5 times per meta-iteration, so ``step`` works on python floats and a
    preallocated position array rather than building numpy temporaries.
    """

    metadata: ClassVar[dict] = {"render_modes": []}  # type: ignore[misc]
    task_keys = (TaskKey("goal", low=-0.5, high=0.5, size=2),)

    def __init__(self, task: dict | None = None, render_mode: str | None = None):
        if render_mode is not None:
            raise ValueError(f"Nav2D: render_mode got {render_mode!r}; expected None (no rendering)")
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-_MAX_STEP, _MAX_STEP, shape=(2,), dtype=np.float32)
        self._pos = np.zeros(2, dtype=np.float32)
        self.set_task(task if task is not None else self.default_task())

    def _apply_task(self, task: dict) -> None:
        self._goal_x, self._goal_y = task["goal"]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._pos[:] = 0.0
        return self._pos.copy(), {}

    def step(self, action):
        # Reading the two components as python floats is several times cheaper than np.clip
        # on a fresh array; indexing also accepts lists and tuples.
        try:
            dx, dy = float(action[0]), float(action[1])
            if len(action) != 2:
                raise IndexError
        except (IndexError, TypeError):
            raise ValueError(f"Nav2D.step: action got {action!r}; expected 2 numbers") from None
        dx = min(max(dx, -_MAX_STEP), _MAX_STEP)
        dy = min(max(dy, -_MAX_STEP), _MAX_STEP)
        pos = self._pos
        pos[0] += dx
        pos[1] += dy
        # Distance from the float32 position actually observed, so -reward == |obs - goal|.
        distance = math.hypot(float(pos[0]) - self._goal_x, float(pos[1]) - self._goal_y)
        return pos.copy(), -distance, False, False, {"distance": distance}
