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
    preallocated position array rather than building numpy temporaries; meta-training steps
    :class:`Nav2DVector` instead, the same arithmetic on arrays.
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
        # Distance from the float32 position actually observed, so -reward == |obs - goal|;
        # the sum of squares is Nav2DVector's operation for operation (same bits).
        ex, ey = float(pos[0]) - self._goal_x, float(pos[1]) - self._goal_y
        distance = math.sqrt(ex * ex + ey * ey)
        return pos.copy(), -distance, False, False, {"distance": distance}


class Nav2DVector(gym.vector.VectorEnv):
    """``num_envs`` Nav2D environments stepped together as arrays, each with its own task
    (``set_tasks``): the observations and rewards of ``num_envs`` separate :class:`Nav2D`,
    bit for bit. ``gymnasium.make_vec("distmeta/Nav2D-v0", n, vectorization_mode=
    "vector_entry_point")`` makes one. Truncates at ``max_episode_steps`` (when given), and
    an episode that ended restarts at the next step (gymnasium's next-step autoreset)."""

    metadata: ClassVar[dict] = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}  # type: ignore[misc]

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None, render_mode: str | None = None):
        if render_mode is not None:
            raise ValueError(f"Nav2DVector: render_mode got {render_mode!r}; expected None (no rendering)")
        self.num_envs, self.max_episode_steps = num_envs, max_episode_steps
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.single_action_space = gym.spaces.Box(-_MAX_STEP, _MAX_STEP, shape=(2,), dtype=np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._pos = np.zeros((num_envs, 2), dtype=np.float32)
        self._goal = np.zeros((num_envs, 2))
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._ended = np.zeros(num_envs, dtype=bool)
        self.set_tasks([Nav2D.default_task()] * num_envs)

    def set_tasks(self, tasks: list[dict]) -> None:
        """One task per environment, each checked as :meth:`Nav2D.set_task` checks it."""
        if len(tasks) != self.num_envs:
            raise ValueError(f"Nav2DVector.set_tasks: got {len(tasks)} tasks; expected {self.num_envs}")
        # A sampler passes each task once per episode (the same dict): check each once.
        goals: dict[int, list[float]] = {}
        for task in tasks:
            if id(task) not in goals:
                goals[id(task)] = Nav2D.validate_task(task)["goal"]
        self._goal[:] = [goals[id(task)] for task in tasks]

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        # Per-environment seeds change nothing: every episode starts at the origin.
        super().reset(seed=seed if isinstance(seed, int) or seed is None else None)
        self._pos[:] = 0.0
        self._steps[:] = 0
        self._ended[:] = False
        return self._pos.copy(), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, 2):
            raise ValueError(f"Nav2DVector.step: actions of shape {actions.shape}; expected ({self.num_envs}, 2)")
        restarting = self._ended  # replaced, never changed in place, below
        self._pos += np.minimum(np.maximum(actions, -_MAX_STEP), _MAX_STEP).astype(np.float32)
        self._steps += 1
        error = self._pos.astype(np.float64) - self._goal
        reward = -np.sqrt(error[:, 0] * error[:, 0] + error[:, 1] * error[:, 1])
        if restarting.any():
            self._pos[restarting] = 0.0
            self._steps[restarting] = 0
            reward[restarting] = 0.0
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = (self._steps >= self.max_episode_steps if self.max_episode_steps is not None
                     else np.zeros(self.num_envs, dtype=bool))
        self._ended = truncated.copy()  # the caller may change the array it gets
        return self._pos.copy(), reward, terminated, truncated, {}
