"""Meta-RL task families: a gymnasium environment whose tasks are set through the task
protocol of `distmeta_envs` (`sample_tasks(n, seed)`, `set_task(task)`, `get_task()`).

    task: {family: gym, env: distmeta/Nav2D-v0}

A task here is the environment's task dict (e.g. `{"goal": [0.3, -0.2]}`); the worker's
sampler (`distmeta.rl`) turns it into trajectories. Any registered gymnasium id works if its
unwrapped env has the protocol, flat `Box` observations and `Box` or `Discrete` actions; name
your own as `package.module:Name-v0` so that every Ray worker imports the module that
registers it.
"""

from __future__ import annotations

import importlib
import itertools
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from distmeta.errors import ConfigError
from distmeta.tasks.base import TaskFamily

PROTOCOL = ("sample_tasks", "set_task", "get_task")


@dataclass
class GymTasks(TaskFamily):
    """Tasks of a gymnasium task-family environment; each split is its own seed stream of
    the same task distribution (RL task families have no held-out data, only held-out draws)."""

    kind = "rl"

    env: str = "distmeta/Nav2D-v0"
    """A registered gymnasium id; `distmeta_envs` registers distmeta/Nav2D-v0,
    HalfCheetahVel-v0, HalfCheetahDir-v0, AntDir-v0, PendulumParams-v0, CartPoleParams-v0."""
    horizon: int | None = None
    """Steps per episode; default: the id's registered `max_episode_steps`."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of `gymnasium.make` for this id."""
    vectorized: bool = True
    """Step the environment's own vectorised version when its id registers one (gymnasium's
    `vector_entry_point`, e.g. distmeta/Nav2D-v0), else one env per episode stepped in a
    loop. Both give the same episodes; false is for comparing them."""
    eval_all_tasks: bool = False
    """Evaluation task i is the env's i-th task, not a draw: for an env whose tasks are a
    finite list (each task key an integer index or a set of choices), in order. `eval
    --tasks` with the list's length scores every task once: Meta-World's protocol, every
    held-out skill and goal (ML10's test split: 5 x 50). Training draws as before."""

    def __post_init__(self):
        import distmeta_envs  # noqa: F401 - registers the distmeta/* ids

        module, sep, env_id = self.env.rpartition(":")
        if sep:  # gymnasium.make imports the module; spec lookups need it done by hand
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(f"task.env: cannot import module '{module}': {exc}") from None
        try:
            spec = gym.spec(env_id)
        except gym.error.Error as exc:
            raise ConfigError(f"task.env: {exc}") from None
        if self.horizon is None:
            if spec.max_episode_steps is None:
                raise ConfigError(
                    f"task.horizon: {self.env} registers no max_episode_steps; set task.horizon"
                )
            self.horizon = int(spec.max_episode_steps)
        if self.horizon < 1:
            raise ConfigError(f"task.horizon: got {self.horizon}; expected >= 1")
        try:
            probe = self.make_env()
        except Exception as exc:  # noqa: BLE001 - any constructor failure is the user's kwargs
            raise ConfigError(f"task.env_kwargs: gymnasium.make('{self.env}') failed: {exc}") from None
        missing = [m for m in PROTOCOL if not callable(getattr(probe.unwrapped, m, None))]
        obs_space, act_space = probe.observation_space, probe.action_space
        if missing:
            probe.close()
            raise ConfigError(
                f"task.env: {self.env} lacks the task protocol ({', '.join(missing)}); "
                "subclass distmeta_envs.TaskSettableEnv"
            )
        # An env with Meta-World's info["success"] is scored by success at evaluation.
        probe.reset(seed=0)
        self.reports_success = "success" in probe.step(act_space.sample())[4]
        task_keys = probe.unwrapped.task_keys  # type: ignore[attr-defined]  # the protocol, checked above
        probe.close()
        if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
            raise ConfigError(f"task.env: {self.env} observations are {obs_space}; expected a flat Box")
        if not isinstance(act_space, (gym.spaces.Box, gym.spaces.Discrete)):
            raise ConfigError(f"task.env: {self.env} actions are {act_space}; expected Box or Discrete")
        self.observation_space, self.action_space = obs_space, act_space
        self._task_env = None
        if self.eval_all_tasks:
            open_keys = [k.name for k in task_keys
                         if k.size is not None or not (k.integer or k.choices is not None)]
            if open_keys:
                raise ConfigError(f"task.eval_all_tasks: {self.env}'s task key {open_keys[0]!r} is not an "
                                  "integer index or a choice, so its tasks are no finite list; set it false")

    def make_env(self) -> gym.Env:
        import distmeta_envs  # noqa: F401 - on a Ray worker, the ids are registered here

        return gym.make(self.env, max_episode_steps=self.horizon, disable_env_checker=True,
                        **self.env_kwargs)

    def make_vector_env(self, num_envs: int) -> gym.vector.VectorEnv:
        """`num_envs` environments stepped together, with `set_tasks(one task per env)`."""
        import distmeta_envs  # noqa: F401 - on a Ray worker, the ids are registered here

        env_id = self.env.rpartition(":")[2]
        if self.vectorized and gym.spec(env_id).vector_entry_point is not None:
            vec = gym.make_vec(self.env, num_envs, vectorization_mode="vector_entry_point",
                               max_episode_steps=self.horizon, **self.env_kwargs)
            if not callable(getattr(vec, "set_tasks", None)):
                raise ConfigError(f"task.env: {self.env}'s vector_entry_point has no set_tasks(tasks); "
                                  "add one or set task.vectorized=false")
            return vec
        return _EnvPerEpisode(self.make_env, num_envs)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.observation_space.shape)

    @property
    def output_dim(self) -> int:
        if isinstance(self.action_space, gym.spaces.Discrete):
            return int(self.action_space.n)
        return int(np.prod(self.action_space.shape))

    def sample_task(self, rng: np.random.Generator, split: str) -> dict:
        return self.task_from_seed(int(rng.integers(2**31)))

    def eval_task(self, rng: np.random.Generator, split: str, index: int) -> dict:
        """Evaluation task `index` of `split`: a draw with `rng`, or with `eval_all_tasks`
        the env's task `index` (`eval_task_count` of them)."""
        if not self.eval_all_tasks:
            return self.sample_task(rng, split)
        tasks = self.task_list()
        if not 0 <= index < len(tasks):
            raise ConfigError(f"task.eval_all_tasks: evaluation task {index} asked of {self.env}'s "
                              f"{len(tasks)} tasks; evaluate at most {len(tasks)}")
        return tasks[index]

    @property
    def eval_task_count(self) -> int | None:
        return len(self.task_list()) if self.eval_all_tasks else None

    def task_list(self) -> list[dict]:
        """The env's tasks in order: every combination of its task keys' values (the first
        key varies slowest). Only for keys that are integer indices or choices."""
        values = [list(k.choices) if k.choices is not None else list(range(int(k.low), int(k.high) + 1))
                  for k in self._env().task_keys]
        names = [k.name for k in self._env().task_keys]
        return [dict(zip(names, combo)) for combo in itertools.product(*values)]

    def task_from_seed(self, seed: int | None) -> dict:
        """The task `env.sample_tasks(1, seed=seed)` draws."""
        return self._env().sample_tasks(1, seed=seed)[0]

    def check_task(self, task: dict) -> dict:
        """The task as the environment accepts it; its ValueError otherwise."""
        env = self._env()
        saved = env.get_task()
        env.set_task(task)
        checked = env.get_task()
        env.set_task(saved)
        return checked

    def _env(self):
        if self._task_env is None:
            self._task_env = self.make_env().unwrapped
        return self._task_env

    def __getstate__(self):  # environments stay out of pickles (Ray ships the family)
        state = dict(self.__dict__)
        state["_task_env"] = None
        return state


class _EnvPerEpisode(gym.vector.VectorEnv):
    """One environment per episode, stepped in a loop, with `set_tasks`: gymnasium's
    `SyncVectorEnv` with next-step autoreset (the same observations, rewards and flags)
    without its per-environment info merging, which took about a tenth of a HalfCheetah
    rollout. The one info key the sampler reads, Meta-World's `success`, comes back as an
    array (0 for an env restarting this step) when the envs report it."""

    def __init__(self, make_env, num_envs: int):
        self.envs = [make_env() for _ in range(num_envs)]
        self.num_envs = num_envs
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._restart = np.zeros(num_envs, dtype=bool)

    def set_tasks(self, tasks: list[dict]) -> None:
        for env, task in zip(self.envs, tasks, strict=True):
            env.unwrapped.set_task(task)  # type: ignore[attr-defined]

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        if isinstance(seed, list):
            seeds = seed
        else:  # as SyncVectorEnv: env i gets seed + i
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        self._restart[:] = False
        return self._stack([env.reset(seed=s)[0] for env, s in zip(self.envs, seeds, strict=True)]), {}

    def step(self, actions):
        n = self.num_envs
        obs, rewards, success = [], np.zeros(n), np.zeros(n)
        terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        reported = False
        for i, (env, action) in enumerate(zip(self.envs, actions, strict=True)):
            if self._restart[i]:
                obs.append(env.reset()[0])
            else:
                o, rewards[i], terminated[i], truncated[i], info = env.step(action)
                obs.append(o)
                if "success" in info:
                    success[i], reported = info["success"], True
        self._restart = terminated | truncated
        return self._stack(obs), rewards, terminated, truncated, ({"success": success} if reported else {})

    def close_extras(self, **kwargs) -> None:
        for env in self.envs:
            env.close()

    def _stack(self, obs: list) -> np.ndarray:
        return np.stack(obs).astype(self.single_observation_space.dtype, copy=False)
