"""MuJoCo locomotion task families from the MAML paper, on gymnasium's v5 robots.

Each env keeps its base env's observation, action, termination and ``info`` and only replaces
the reward. The info entries ``reward_forward`` and ``reward_ctrl`` are overwritten with the
terms of the reward actually returned (so the ``reward_*`` entries still sum to the reward),
and the task value is added (``task_velocity`` or ``task_direction``).
"""
from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.utils import EzPickle

from distmeta_envs.base import TaskKey, TaskSettableEnv

# MAML's cheetah control cost weight (gymnasium's own default is 0.1).
_CHEETAH_CTRL_COST = 0.05
_DIRECTION = TaskKey("direction", choices=(1, -1))  # default +1: run forward


class _CheetahTask(TaskSettableEnv, HalfCheetahEnv):
    """HalfCheetah v5 with reward = task term(x_velocity) - 0.05 * |a|^2."""

    def __init__(self, task: dict | None = None, **kwargs):
        HalfCheetahEnv.__init__(self, **kwargs)
        # Re-record the constructor arguments: the base records its own positional ones, which
        # do not match this signature, so pickling would rebuild the wrong env.
        EzPickle.__init__(self, task=task, **kwargs)
        self.set_task(task if task is not None else self.default_task())

    def _task_term(self, x_velocity: float) -> float:
        raise NotImplementedError

    def _task_info(self) -> dict:
        raise NotImplementedError

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        forward = self._task_term(float(info["x_velocity"]))
        ctrl_cost = _CHEETAH_CTRL_COST * float(np.square(action).sum())
        info.update(reward_forward=forward, reward_ctrl=-ctrl_cost, **self._task_info())
        return obs, forward - ctrl_cost, terminated, truncated, info


class HalfCheetahVel(_CheetahTask):
    """Run at a target forward velocity: reward = -|x_velocity - v| - 0.05 * |a|^2.

    Task: ``{"velocity": v}``, v ~ U[0, 2]. ``distmeta/HalfCheetahVel-v0`` truncates at 200 steps.
    """

    task_keys = (TaskKey("velocity", low=0.0, high=2.0),)

    def _apply_task(self, task: dict) -> None:
        self._target_velocity = task["velocity"]

    def _task_term(self, x_velocity: float) -> float:
        return -abs(x_velocity - self._target_velocity)

    def _task_info(self) -> dict:
        return {"task_velocity": self._target_velocity}


class HalfCheetahDir(_CheetahTask):
    """Run forward or backward: reward = direction * x_velocity - 0.05 * |a|^2.

    Task: ``{"direction": d}``, d uniform over {-1, 1}. ``distmeta/HalfCheetahDir-v0`` truncates
    at 200 steps.
    """

    task_keys = (_DIRECTION,)

    def _apply_task(self, task: dict) -> None:
        self._direction = task["direction"]

    def _task_term(self, x_velocity: float) -> float:
        return self._direction * x_velocity

    def _task_info(self) -> dict:
        return {"task_direction": self._direction}


class AntDir(TaskSettableEnv, AntEnv):
    """Ant v5 walking forward or backward along x.

    Reward = direction * x_velocity + healthy_reward - ctrl_cost - contact_cost, the last three
    from Ant's own info terms. Ant's termination (unhealthy torso height) is kept.
    Task: ``{"direction": d}``, d uniform over {-1, 1}. ``distmeta/AntDir-v0`` truncates at 200
    steps.
    """

    task_keys = (_DIRECTION,)

    def __init__(self, task: dict | None = None, **kwargs):
        AntEnv.__init__(self, **kwargs)
        EzPickle.__init__(self, task=task, **kwargs)  # see _CheetahTask
        self.set_task(task if task is not None else self.default_task())

    def _apply_task(self, task: dict) -> None:
        self._direction = task["direction"]

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        forward = self._direction * float(info["x_velocity"])
        reward = forward + info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]
        info.update(reward_forward=forward, task_direction=self._direction)
        return obs, float(reward), terminated, truncated, info


class _CheetahVector(gym.vector.VectorEnv):
    """``num_envs`` cheetahs of one task family stepped in one loop over their MuJoCo data,
    with rewards and observations computed as arrays: the observations, rewards and flags
    of ``num_envs`` separate envs (truncation at ``max_episode_steps`` and gymnasium's
    next-step autoreset included), bit for bit, without gymnasium's per-env step code.
    ``info`` is empty."""

    env_class: type[_CheetahTask]
    metadata: ClassVar[dict] = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}  # type: ignore[misc]

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None, **kwargs):
        self.envs = [self.env_class(**kwargs) for _ in range(num_envs)]
        self.num_envs, self.max_episode_steps = num_envs, max_episode_steps
        first = self.envs[0]
        self.single_observation_space, self.single_action_space = first.observation_space, first.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._obs = np.zeros((num_envs, first.observation_space.shape[0]))  # type: ignore[index]
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._restart = np.zeros(num_envs, dtype=bool)

    def set_tasks(self, tasks: list[dict]) -> None:
        if len(tasks) != self.num_envs:
            raise ValueError(f"{type(self).__name__}.set_tasks: got {len(tasks)} tasks; expected {self.num_envs}")
        for env, task in zip(self.envs, tasks):
            env.set_task(task)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        seeds = seed if isinstance(seed, list) else [None if seed is None else seed + i for i in range(self.num_envs)]
        for i, (env, s) in enumerate(zip(self.envs, seeds, strict=True)):
            self._obs[i] = env.reset(seed=s)[0]
        self._steps[:] = 0
        self._restart[:] = False
        return self._obs.copy(), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=self.single_action_space.dtype)
        x_velocity = np.zeros(self.num_envs)
        for i, env in enumerate(self.envs):
            if self._restart[i]:
                self._obs[i] = env.reset()[0]
                self._steps[i] = 0
                continue
            model, data = env.model, env.data
            x_before = data.qpos[0]
            data.ctrl[:] = actions[i]
            mujoco.mj_step(model, data, nstep=env.frame_skip)
            mujoco.mj_rnePostConstraint(model, data)
            x_velocity[i] = (data.qpos[0] - x_before) / env.dt
            self._obs[i] = np.concatenate((data.qpos.flatten()[1:], data.qvel.flatten()))
            self._steps[i] += 1
        ctrl_cost = _CHEETAH_CTRL_COST * np.square(actions).sum(axis=1).astype(np.float64)
        reward = np.array([env._task_term(float(v)) for env, v in zip(self.envs, x_velocity)]) - ctrl_cost
        reward[self._restart] = 0.0
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = (self._steps >= self.max_episode_steps) & ~self._restart if self.max_episode_steps \
            else np.zeros(self.num_envs, dtype=bool)
        self._restart = truncated.copy()
        return self._obs.copy(), reward, terminated, truncated, {}

    def close_extras(self, **kwargs) -> None:
        for env in self.envs:
            env.close()


class HalfCheetahVelVector(_CheetahVector):
    env_class = HalfCheetahVel


class HalfCheetahDirVector(_CheetahVector):
    env_class = HalfCheetahDir
