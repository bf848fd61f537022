"""MuJoCo locomotion task families from the MAML paper, on gymnasium's v5 robots.

Each env keeps its base env's observation, action, termination and ``info`` and only replaces
the reward. The info entries ``reward_forward`` and ``reward_ctrl`` are overwritten with the
terms of the reward actually returned (so the ``reward_*`` entries still sum to the reward),
and the task value is added (``task_velocity`` or ``task_direction``).
"""
from __future__ import annotations

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
