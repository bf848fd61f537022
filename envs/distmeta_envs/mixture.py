"""The task mixture: one env that is a new task of its family at every episode."""
from __future__ import annotations

from typing import Any, cast

import gymnasium as gym
import numpy as np

from distmeta_envs.base import TaskSettableEnv

# Mixed into the reset seed so the task draw is not the same random stream as the inner env's
# own reset noise (both would otherwise be PCG64 seeded with the same integer).
_TASK_STREAM = 0x7A5C


class TaskMixture(gym.Wrapper):
    """Wraps a TaskSettableEnv and sets a freshly sampled task before every ``reset``.

    Used to train multi-task baselines (e.g. RLlib PPO) on the family's task distribution.
    The task draw comes from the wrapper's own generator, reseeded by ``reset(seed=s)``, so a
    seeded reset sequence gives the same tasks every run. ``reset(options={"task": t})`` uses
    ``t`` for that episode instead of sampling. The episode's task is in the reset info under
    ``"task"``.
    """

    def __init__(self, env: gym.Env):
        if not isinstance(env.unwrapped, TaskSettableEnv):
            raise TypeError(f"TaskMixture: env got {type(env.unwrapped).__name__}; "
                             "expected a TaskSettableEnv (e.g. one of distmeta_envs.ENV_IDS)")
        super().__init__(env)
        self._task_rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._task_rng = np.random.default_rng([seed, _TASK_STREAM])
        options = dict(options or {})
        family = cast(TaskSettableEnv, self.env.unwrapped)
        # Before the inner reset: for some families the task decides the initial state.
        task = options.pop("task", None)
        if task is None:
            task = family.sample_tasks(1, seed=int(self._task_rng.integers(2**63)))[0]
        family.set_task(task)
        obs, info = self.env.reset(seed=seed, options=options or None)
        return obs, {**info, "task": family.get_task()}


def make_mixture(env_id: str, **kwargs: Any) -> TaskMixture:
    """``gym.make(env_id, **kwargs)`` wrapped in a :class:`TaskMixture`.

    Example: ``env = make_mixture("distmeta/Nav2D-v0"); env.reset(seed=0)`` starts an episode
    on a random goal; each later ``reset()`` draws another.
    """
    return TaskMixture(gym.make(env_id, **kwargs))
