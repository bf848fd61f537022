"""Gymnasium environment families with settable tasks, for meta-RL.

Importing the package registers these gymnasium ids (namespace ``distmeta``):

=============================  =========================================  ==========
id                             task keys (sampling distribution)          max steps
=============================  =========================================  ==========
distmeta/Nav2D-v0              goal: [x, y], each U[-0.5, 0.5]            100
distmeta/HalfCheetahVel-v0     velocity: U[0, 2]                          200
distmeta/HalfCheetahDir-v0     direction: uniform over {-1, 1}            200
distmeta/AntDir-v0             direction: uniform over {-1, 1}            200
distmeta/PendulumParams-v0     mass, length: each U[0.5, 1.5]             200
distmeta/CartPoleParams-v0     pole_length: U[0.25, 1], pole_mass:        200
                               U[0.05, 0.5]
distmeta/MetaWorldML1-v0       task_index: int uniform over [0, 49]       500
                               (optional extra "metaworld"; kwargs
                               env_name, benchmark_seed, split)
distmeta/MetaWorldML10-v0      task_index: int uniform over [0, 499]      500
                               (10 skills x 50; split="test": [0, 249],
                               5 held-out skills x 50; optional extra
                               "metaworld"; kwargs benchmark_seed, split,
                               max_skill_envs)
=============================  =========================================  ==========

Every env implements :class:`TaskSettableEnv` (``sample_tasks``, ``set_task``, ``get_task``).
``make_mixture(env_id)`` builds the multi-task variant that draws a new task at each reset.
``register_ray_envs()`` exposes all of them to RLlib / Tune by name (see its docstring).
The MuJoCo families import mujoco only when made, so importing this package stays cheap.
"""
from __future__ import annotations

import gymnasium as gym

from distmeta_envs.base import TaskKey, TaskSettableEnv
from distmeta_envs.mixture import TaskMixture, make_mixture

__all__ = [
    "ENV_IDS", "MIXTURE_SUFFIX", "OPTIONAL_ENV_IDS", "TaskKey", "TaskMixture", "TaskSettableEnv",
    "make_mixture", "register_ray_envs",
]

# id -> (entry point, max_episode_steps). Entry points are strings so gymnasium imports the
# module (and mujoco) only when the env is made.
_SPECS: dict[str, tuple[str, int]] = {
    "distmeta/Nav2D-v0": ("distmeta_envs.nav2d:Nav2D", 100),
    "distmeta/HalfCheetahVel-v0": ("distmeta_envs.locomotion:HalfCheetahVel", 200),
    "distmeta/HalfCheetahDir-v0": ("distmeta_envs.locomotion:HalfCheetahDir", 200),
    "distmeta/AntDir-v0": ("distmeta_envs.locomotion:AntDir", 200),
    "distmeta/PendulumParams-v0": ("distmeta_envs.classic:PendulumParams", 200),
    "distmeta/CartPoleParams-v0": ("distmeta_envs.classic:CartPoleParams", 200),
}
ENV_IDS: tuple[str, ...] = tuple(_SPECS)
# Natively vectorised versions (`gymnasium.make_vec(..., vectorization_mode="vector_entry_point")`),
# which meta-training steps instead of one env per episode.
_VECTOR_ENTRY_POINTS = {
    "distmeta/Nav2D-v0": "distmeta_envs.nav2d:Nav2DVector",
    "distmeta/HalfCheetahVel-v0": "distmeta_envs.locomotion:HalfCheetahVelVector",
    "distmeta/HalfCheetahDir-v0": "distmeta_envs.locomotion:HalfCheetahDirVector",
}
# Need the optional extra "metaworld"; making one without metaworld installed is an ImportError
# that says how to install it.
_OPTIONAL_SPECS: dict[str, tuple[str, int]] = {
    "distmeta/MetaWorldML1-v0": ("distmeta_envs.metaworld:MetaWorldML1", 500),
    "distmeta/MetaWorldML10-v0": ("distmeta_envs.metaworld:MetaWorldML10", 500),
}
OPTIONAL_ENV_IDS: tuple[str, ...] = tuple(_OPTIONAL_SPECS)

# Ray names: each id as is (one task at a time, set by the meta-learner) and
# id + MIXTURE_SUFFIX (a fresh task per reset, for multi-task baselines).
MIXTURE_SUFFIX = ":mixture"

for _env_id, (_entry_point, _steps) in {**_SPECS, **_OPTIONAL_SPECS}.items():
    # Re-importing (e.g. importlib.reload) must not warn about overriding our own ids.
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=_entry_point, max_episode_steps=_steps,
                     vector_entry_point=_VECTOR_ENTRY_POINTS.get(_env_id))


def register_ray_envs() -> list[str]:
    """Register every env with ``ray.tune.register_env`` and return the names registered.

    Names: each gymnasium id (``"distmeta/Nav2D-v0"``) gives the plain env, and the id plus
    ``":mixture"`` (``"distmeta/Nav2D-v0:mixture"``) gives the :class:`TaskMixture` over it.
    RLlib's ``env_config`` dict is passed to ``gym.make`` as keyword arguments, e.g.
    ``config.environment("distmeta/AntDir-v0", env_config={"max_episode_steps": 100})``.
    Call it in every process that builds envs by name (the driver; RLlib ships the registry
    to its workers).
    """
    from ray.tune import register_env  # lazy: the envs themselves must not need ray

    names = []
    for env_id in ENV_IDS + OPTIONAL_ENV_IDS:
        register_env(env_id, _Creator(env_id, mixture=False))
        register_env(env_id + MIXTURE_SUFFIX, _Creator(env_id, mixture=True))
        names += [env_id, env_id + MIXTURE_SUFFIX]
    return names


class _Creator:
    """A picklable env creator (Ray serialises creators to its workers; lambdas in a loop
    would also capture the loop variable late)."""

    def __init__(self, env_id: str, mixture: bool):
        self.env_id, self.mixture = env_id, mixture

    def __call__(self, env_config=None) -> gym.Env:
        # RLlib passes an EnvContext (a dict subclass with worker metadata); only its items
        # are gym.make kwargs.
        kwargs = dict(env_config or {})
        return make_mixture(self.env_id, **kwargs) if self.mixture else gym.make(self.env_id, **kwargs)
