"""Meta-World ML1 (one manipulation skill, 50 goal variations) behind the task protocol.

Needs the optional extra: ``pip install -e ".[metaworld]"`` (metaworld 3.1.1, which needs
mujoco 3.3.0).
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym

from distmeta_envs.base import TaskKey, TaskSettableEnv

# metaworld.ML1 builds this many goal variations per split (its private _N_GOALS).
_N_TASKS = 50
_SPLITS = ("train", "test")


class MetaWorldML1(TaskSettableEnv, gym.Env):
    """One Meta-World ML1 skill; a task is an index into the benchmark's fixed task set.

    ``env_name`` is a Meta-World v3 name (``"reach-v3"``, ``"push-v3"``, ...; see
    ``metaworld.ML1.ENV_NAMES``). ``benchmark_seed`` fixes ML1's 50 goal variations (None draws a
    new set per instance, so different processes would not agree on what index i means);
    ``split`` picks ML1's train or test variations. Task: ``{"task_index": i}``, i an int in
    [0, 49], sampled uniformly. The goal is hidden from the observation (ML1's setting), so only
    the reward tells tasks apart. Observation, action, reward and info are Meta-World's;
    ``distmeta/MetaWorldML1-v0`` truncates at Meta-World's horizon, 500 steps.

    Meta-World's own envs refuse to reset before ``set_task``; this one sets task 0 at
    construction (or the ``task`` argument), like every env in this package.
    """

    task_keys = (TaskKey("task_index", low=0, high=_N_TASKS - 1, integer=True),)

    def __init__(self, env_name: str = "reach-v3", benchmark_seed: int | None = 0, split: str = "train",
                 task: dict | None = None, render_mode: str | None = None):
        try:
            import metaworld
        except ImportError:
            raise ImportError("MetaWorldML1 needs the optional dependency metaworld; "
                              "install it with: pip install -e '.[metaworld]'") from None
        if env_name not in metaworld.ML1.ENV_NAMES:
            raise ValueError(f"MetaWorldML1: env_name got {env_name!r}; expected a Meta-World v3 name "
                             f"such as 'reach-v3' (all: metaworld.ML1.ENV_NAMES)")
        if split not in _SPLITS:
            raise ValueError(f"MetaWorldML1: split got {split!r}; expected one of {', '.join(_SPLITS)}")
        benchmark = metaworld.ML1(env_name, seed=benchmark_seed)
        self._tasks = benchmark.train_tasks if split == "train" else benchmark.test_tasks
        if len(self._tasks) != _N_TASKS:
            # Guards the task_index range above against a metaworld release with another count.
            raise RuntimeError(f"MetaWorldML1: metaworld built {len(self._tasks)} {split} tasks for "
                               f"{env_name}; expected {_N_TASKS} (the version pinned is 3.1.1)")
        self.env_name, self.split = env_name, split
        self._env = benchmark.train_classes[env_name](render_mode=render_mode)
        self.render_mode = render_mode
        self.metadata = self._env.metadata
        self.observation_space = self._env.observation_space
        self.action_space = self._env.action_space
        self.set_task(task if task is not None else self.default_task())

    def _apply_task(self, task: dict) -> None:
        # Takes effect at the next reset, as in Meta-World.
        self._env.set_task(self._tasks[task["task_index"]])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # Meta-World's reset ignores its seed argument; its own seed() is the way in.
            self._env.seed(seed)
        return self._env.reset()

    def step(self, action):
        return self._env.step(action)

    def render(self):
        return self._env.render()

    def close(self):
        self._env.close()
