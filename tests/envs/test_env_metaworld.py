"""Meta-World ML1 behind the task protocol (needs the "metaworld" extra, which CI installs)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import distmeta_envs

ID = "distmeta/MetaWorldML1-v0"
# gym.make's passive checker would warn on every make about the hidden goal's zero-width bounds;
# test_checker_and_spaces runs the full checker itself.
QUIET = {"disable_env_checker": True}


@pytest.fixture(scope="module")
def reach():
    """One reach-v3 env for the module: building ML1's task sets takes about two seconds."""
    env = gym.make(ID, env_name="reach-v3", benchmark_seed=0, **QUIET)
    yield env
    env.close()


def test_checker_and_spaces(reach):
    assert reach.spec.max_episode_steps == 500
    assert reach.observation_space.shape == (39,) and reach.action_space.shape == (4,)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(reach.unwrapped, skip_render_check=True)
    # Meta-World's observation space has unbounded and degenerate (hidden-goal) entries.
    allowed = ("infinity", "maximum and minimum values are equal")
    assert [str(w.message) for w in caught if not any(a in str(w.message) for a in allowed)] == []


def test_tasks_are_indices_into_ml1s_fifty(reach):
    env = reach.unwrapped
    assert env.get_task() == {"task_index": 0}
    tasks = env.sample_tasks(200, seed=4)
    assert tasks == env.sample_tasks(200, seed=4) and tasks != env.sample_tasks(200, seed=5)
    indices = {t["task_index"] for t in tasks}
    assert all(type(i) is int for i in indices) and indices <= set(range(50)) and len(indices) > 40


def rewards(env: gym.Env, task: dict, actions: np.ndarray) -> np.ndarray:
    env.unwrapped.set_task(task)
    env.reset(seed=0)
    return np.array([env.step(a)[1] for a in actions])


def test_the_task_changes_the_reward_deterministically(reach):
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 4)).astype(np.float32)
    first = rewards(reach, {"task_index": 3}, actions)
    np.testing.assert_array_equal(rewards(reach, {"task_index": 3}, actions), first)
    assert not np.allclose(rewards(reach, {"task_index": 17}, actions), first)


def test_same_benchmark_seed_same_goals_across_instances(reach):
    other = gym.make(ID, env_name="reach-v3", benchmark_seed=0, **QUIET)
    actions = np.zeros((5, 4), dtype=np.float32)
    np.testing.assert_array_equal(rewards(other, {"task_index": 9}, actions),
                                  rewards(reach, {"task_index": 9}, actions))
    other.close()


def test_time_limit_matches_metaworlds_horizon(reach):
    reach.reset(seed=1)
    zero = np.zeros(4, dtype=np.float32)
    truncated = [reach.step(zero)[3] for _ in range(500)]
    assert truncated[-1] and not any(truncated[:-1])
    reach.reset()  # and the env is usable again after the horizon


def test_bad_arguments_are_one_line_errors(reach):
    with pytest.raises(ValueError, match="key 'task_index' for MetaWorldML1: got 50; expected an integer in"):
        reach.unwrapped.set_task({"task_index": 50})
    with pytest.raises(ValueError, match="got 2.5; expected an integer in"):
        reach.unwrapped.set_task({"task_index": 2.5})
    with pytest.raises(ValueError, match="MetaWorldML1: env_name got 'reach-v2'; expected a Meta-World v3"):
        gym.make(ID, env_name="reach-v2")
    with pytest.raises(ValueError, match="MetaWorldML1: split got 'val'; expected one of train, test"):
        gym.make(ID, split="val")


def test_mixture_over_ml1_sets_the_task_before_reset():
    env = distmeta_envs.make_mixture(ID, env_name="reach-v3", benchmark_seed=0, **QUIET)
    first = [env.reset(seed=2)[1]["task"]] + [env.reset()[1]["task"] for _ in range(4)]
    again = [env.reset(seed=2)[1]["task"]] + [env.reset()[1]["task"] for _ in range(4)]
    assert first == again and len({t["task_index"] for t in first}) > 1
    # The episode really runs on the reported task: same rewards as that task set directly.
    _, info = env.reset(seed=3)
    actions = np.random.default_rng(1).uniform(-1, 1, (5, 4)).astype(np.float32)
    mixed = np.array([env.step(a)[1] for a in actions])
    direct = gym.make(ID, env_name="reach-v3", benchmark_seed=0, task=info["task"], **QUIET)
    direct.reset(seed=3)
    np.testing.assert_array_equal(mixed, [direct.step(a)[1] for a in actions])
    direct.close()
    env.close()
