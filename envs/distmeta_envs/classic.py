"""Classic-control families whose task is a physical parameter of the system."""
from __future__ import annotations

from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.classic_control.pendulum import PendulumEnv

from distmeta_envs.base import TaskKey, TaskSettableEnv


class PendulumParams(TaskSettableEnv, PendulumEnv):
    """Pendulum swing-up with task-dependent mass and length.

    Task: ``{"mass": m, "length": l}``, each ~ U[0.5, 1.5] (the default task is gymnasium's
    m = l = 1). Observation, action and reward are Pendulum's; ``distmeta/PendulumParams-v0``
    truncates at 200 steps.
    """

    task_keys = (
        TaskKey("mass", low=0.5, high=1.5, default=1.0),
        TaskKey("length", low=0.5, high=1.5, default=1.0),
    )

    def __init__(self, task: dict | None = None, **kwargs):
        PendulumEnv.__init__(self, **kwargs)
        self.set_task(task if task is not None else self.default_task())

    def _apply_task(self, task: dict) -> None:
        # PendulumEnv.step reads self.m and self.l on every step.
        self.m, self.l = task["mass"], task["length"]


class CartPoleParams(TaskSettableEnv, CartPoleEnv):
    """CartPole balancing (discrete actions) with task-dependent pole half-length and mass.

    Task: ``{"pole_length": l, "pole_mass": m}`` with l ~ U[0.25, 1.0] (half the pole's length,
    as gymnasium's ``length``) and m ~ U[0.05, 0.5]; the default task is gymnasium's l = 0.5,
    m = 0.1. Observation, action, reward and termination are CartPole's;
    ``distmeta/CartPoleParams-v0`` truncates at 200 steps.
    """

    task_keys = (
        TaskKey("pole_length", low=0.25, high=1.0, default=0.5),
        TaskKey("pole_mass", low=0.05, high=0.5, default=0.1),
    )

    def __init__(self, task: dict | None = None, **kwargs):
        CartPoleEnv.__init__(self, **kwargs)
        self.set_task(task if task is not None else self.default_task())

    def _apply_task(self, task: dict) -> None:
        self.length, self.masspole = task["pole_length"], task["pole_mass"]
        # CartPoleEnv computes these once in __init__ and step uses them, not the raw values.
        self.total_mass = self.masspole + self.masscart
        self.polemass_length = self.masspole * self.length
