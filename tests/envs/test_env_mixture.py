"""TaskMixture (a fresh task per reset) and the Ray env registry names."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from ray.tune.registry import ENV_CREATOR, _global_registry

import distmeta_envs
from distmeta_envs import MIXTURE_SUFFIX, TaskMixture, make_mixture
from distmeta_envs.nav2d import Nav2D


def task_sequence(env: gym.Env, seed: int, resets: int = 6) -> list[dict]:
    """The tasks of one seeded reset followed by unseeded ones (how vector envs reset)."""
    tasks = [env.reset(seed=seed)[1]["task"]]
    tasks += [env.reset()[1]["task"] for _ in range(resets - 1)]
    return tasks


def test_mixture_draws_a_new_task_at_every_reset():
    env = make_mixture("distmeta/Nav2D-v0")
    tasks = task_sequence(env, seed=0, resets=8)
    assert len({json_key(t) for t in tasks}) == 8
    for task in tasks:
        assert all(-0.5 <= g <= 0.5 for g in task["goal"])


def json_key(task: dict) -> str:
    return repr(sorted(task.items()))


def test_mixture_is_reproducible_with_the_reset_seed():
    a = task_sequence(make_mixture("distmeta/HalfCheetahVel-v0"), seed=7)
    b = task_sequence(make_mixture("distmeta/HalfCheetahVel-v0"), seed=7)
    c = task_sequence(make_mixture("distmeta/HalfCheetahVel-v0"), seed=8)
    assert a == b and a != c


def test_mixture_episode_runs_on_the_task_it_reports():
    env = make_mixture("distmeta/Nav2D-v0")
    _, info = env.reset(seed=3)
    assert env.unwrapped.get_task() == info["task"]
    goal = info["task"]["goal"]
    obs, reward, *_ = env.step(np.array([0.1, 0.1], dtype=np.float32))
    assert reward == -math.hypot(float(obs[0]) - goal[0], float(obs[1]) - goal[1])


def test_mixture_keeps_the_time_limit_and_a_task_given_in_options():
    env = make_mixture("distmeta/Nav2D-v0", max_episode_steps=3)
    _, info = env.reset(seed=0, options={"task": {"goal": [0.25, 0.0]}})
    assert info["task"] == {"goal": [0.25, 0.0]}
    assert [env.step([0.0, 0.0])[3] for _ in range(3)] == [False, False, True]


def test_mixture_over_a_discrete_family():
    env = make_mixture("distmeta/CartPoleParams-v0")
    lengths = {info["task"]["pole_length"] for info in
               [env.reset(seed=1)[1]] + [env.reset()[1] for _ in range(4)]}
    assert len(lengths) == 5
    assert env.step(env.action_space.sample())[0].shape == (4,)


def test_mixture_refuses_an_env_without_tasks():
    with pytest.raises(TypeError, match="TaskMixture: env got CartPoleEnv; expected a TaskSettableEnv"):
        TaskMixture(gym.make("CartPole-v1"))


def test_register_ray_envs_names_and_creators():
    names = distmeta_envs.register_ray_envs()
    ids = distmeta_envs.ENV_IDS + distmeta_envs.OPTIONAL_ENV_IDS
    expected = [n for env_id in ids for n in (env_id, env_id + MIXTURE_SUFFIX)]
    assert names == expected
    for name in names:
        assert _global_registry.contains(ENV_CREATOR, name)

    plain = _global_registry.get(ENV_CREATOR, "distmeta/Nav2D-v0")({"task": {"goal": [0.1, 0.2]}})
    assert isinstance(plain.unwrapped, Nav2D) and not isinstance(plain, TaskMixture)
    assert plain.unwrapped.get_task() == {"goal": [0.1, 0.2]} and plain.spec.max_episode_steps == 100

    mixture = _global_registry.get(ENV_CREATOR, "distmeta/AntDir-v0:mixture")({"max_episode_steps": 5})
    assert isinstance(mixture, TaskMixture) and mixture.spec.max_episode_steps == 5
    directions = {mixture.reset(seed=s)[1]["task"]["direction"] for s in range(8)}
    assert directions == {-1, 1}
    mixture.close()


def test_ray_creator_accepts_rllibs_env_context():
    from ray.rllib.env.env_context import EnvContext

    distmeta_envs.register_ray_envs()
    creator = _global_registry.get(ENV_CREATOR, "distmeta/PendulumParams-v0")
    env = creator(EnvContext({"task": {"mass": 0.7, "length": 1.2}}, worker_index=2, num_workers=2))
    assert env.unwrapped.get_task() == {"mass": 0.7, "length": 1.2}
    assert env.reset(seed=0)[0].shape == (3,)
