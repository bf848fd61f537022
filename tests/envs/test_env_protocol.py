"""The task protocol (sample_tasks / set_task / get_task) on every registered family."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import distmeta_envs

# The task distributions as specified, written out independently of the envs' TaskKeys:
# key -> (low, high) for continuous keys, or a set of allowed values; "size" for list keys.
SPECS = {
    "distmeta/Nav2D-v0": {"goal": ((-0.5, 0.5), 2)},
    "distmeta/HalfCheetahVel-v0": {"velocity": ((0.0, 2.0), None)},
    "distmeta/HalfCheetahDir-v0": {"direction": ({-1, 1}, None)},
    "distmeta/AntDir-v0": {"direction": ({-1, 1}, None)},
    "distmeta/PendulumParams-v0": {"mass": ((0.5, 1.5), None), "length": ((0.5, 1.5), None)},
    "distmeta/CartPoleParams-v0": {"pole_length": ((0.25, 1.0), None), "pole_mass": ((0.05, 0.5), None)},
}
DEFAULTS = {
    "distmeta/Nav2D-v0": {"goal": [0.0, 0.0]},
    "distmeta/HalfCheetahVel-v0": {"velocity": 1.0},
    "distmeta/HalfCheetahDir-v0": {"direction": 1},
    "distmeta/AntDir-v0": {"direction": 1},
    "distmeta/PendulumParams-v0": {"mass": 1.0, "length": 1.0},
    "distmeta/CartPoleParams-v0": {"pole_length": 0.5, "pole_mass": 0.1},
}
# One valid, non-default task per family.
OTHER_TASK = {
    "distmeta/Nav2D-v0": {"goal": [0.3, -0.2]},
    "distmeta/HalfCheetahVel-v0": {"velocity": 1.7},
    "distmeta/HalfCheetahDir-v0": {"direction": -1},
    "distmeta/AntDir-v0": {"direction": -1},
    "distmeta/PendulumParams-v0": {"mass": 0.6, "length": 1.4},
    "distmeta/CartPoleParams-v0": {"pole_length": 0.9, "pole_mass": 0.3},
}
IDS = list(SPECS)


@pytest.fixture(scope="module")
def envs():
    """One unwrapped instance per id, built once (MuJoCo model loading is the slow part)."""
    made = {env_id: gym.make(env_id).unwrapped for env_id in IDS}
    yield made
    for env in made.values():
        env.close()


def assert_in_spec(env_id: str, task: dict) -> None:
    assert set(task) == set(SPECS[env_id])
    for key, (allowed, size) in SPECS[env_id].items():
        values = task[key] if size is not None else [task[key]]
        if size is not None:
            assert isinstance(task[key], list) and len(values) == size
        for value in values:
            if isinstance(allowed, set):
                assert type(value) is int and value in allowed
            else:
                assert type(value) is float and allowed[0] <= value <= allowed[1]


def test_the_ids_listed_are_exactly_the_specified_families():
    assert set(distmeta_envs.ENV_IDS) == set(IDS)


def test_import_needs_neither_ray_nor_mujoco():
    code = ("import sys, distmeta_envs; "
            "print(sorted(m for m in ('ray', 'mujoco') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("env_id", IDS)
def test_default_task_is_set_at_construction(envs, env_id):
    env = envs[env_id]
    assert type(env).default_task() == DEFAULTS[env_id]
    assert gym.make(env_id).unwrapped.get_task() == DEFAULTS[env_id]


@pytest.mark.parametrize("env_id", IDS)
def test_seeded_sample_tasks_are_reproducible_in_range_and_json(envs, env_id):
    env = envs[env_id]
    tasks = env.sample_tasks(40, seed=11)
    assert tasks == env.sample_tasks(40, seed=11)
    assert tasks != env.sample_tasks(40, seed=12)
    for task in tasks:
        assert_in_spec(env_id, task)
        assert json.loads(json.dumps(task)) == task
    # The draws cover the range rather than sitting on one value.
    key, (allowed, _) = next(iter(SPECS[env_id].items()))
    values = np.ravel([t[key] for t in tasks])
    if isinstance(allowed, set):
        assert set(values.tolist()) == allowed
    else:
        assert values.min() < allowed[0] + 0.25 * (allowed[1] - allowed[0])
        assert values.max() > allowed[1] - 0.25 * (allowed[1] - allowed[0])


@pytest.mark.parametrize("env_id", IDS)
def test_unseeded_sample_tasks_follow_the_reset_seed(envs, env_id):
    env = envs[env_id]
    env.reset(seed=5)
    first = env.sample_tasks(20)
    env.reset(seed=5)
    assert env.sample_tasks(20) == first
    env.reset(seed=6)
    assert env.sample_tasks(20) != first


@pytest.mark.parametrize("env_id", IDS)
def test_set_task_get_task_round_trip(envs, env_id):
    env = envs[env_id]
    env.set_task(OTHER_TASK[env_id])
    assert env.get_task() == OTHER_TASK[env_id]
    # get_task hands out a copy: changing it does not change the env.
    got = env.get_task()
    for key in got:
        got[key] = None
    assert env.get_task() == OTHER_TASK[env_id]
    for task in env.sample_tasks(5, seed=0):
        env.set_task(task)
        assert env.get_task() == task
    env.set_task(DEFAULTS[env_id])


@pytest.mark.parametrize("env_id", IDS)
def test_task_given_to_make(env_id):
    env = gym.make(env_id, task=OTHER_TASK[env_id])
    assert env.unwrapped.get_task() == OTHER_TASK[env_id]
    env.reset(seed=0)
    env.close()


def test_numpy_and_int_values_are_normalised_to_python_floats(envs):
    env = envs["distmeta/Nav2D-v0"]
    env.set_task({"goal": np.array([0, 0.25], dtype=np.float32)})
    assert env.get_task() == {"goal": [0.0, 0.25]}
    assert all(type(v) is float for v in env.get_task()["goal"])
    cheetah = envs["distmeta/HalfCheetahDir-v0"]
    cheetah.set_task({"direction": -1.0})
    assert cheetah.get_task() == {"direction": -1} and type(cheetah.get_task()["direction"]) is int


BAD_TASKS = [
    ("distmeta/Nav2D-v0", {"gaol": [0.1, 0.1]},
     "task: unknown key 'gaol' for Nav2D; expected keys: goal"),
    ("distmeta/Nav2D-v0", {}, "task: missing key 'goal' for Nav2D; expected keys: goal"),
    ("distmeta/Nav2D-v0", {"goal": [0.1]}, "key 'goal' for Nav2D: got 1 values [0.1]; expected a list of 2"),
    ("distmeta/Nav2D-v0", {"goal": [0.1, 0.7]}, "key 'goal' for Nav2D: got [0.1, 0.7]; expected a list"),
    ("distmeta/Nav2D-v0", {"goal": 0.1}, "key 'goal' for Nav2D: got 0.1; expected a list of 2 numbers"),
    ("distmeta/Nav2D-v0", {"goal": "0.1,0.2"}, "key 'goal' for Nav2D: got '0.1,0.2'"),
    ("distmeta/Nav2D-v0", {"goal": [0.1, float("nan")]}, "key 'goal' for Nav2D: got [0.1, nan]"),
    ("distmeta/Nav2D-v0", [0.1, 0.2], "task for Nav2D: got list [0.1, 0.2]; expected a dict with keys: goal"),
    ("distmeta/HalfCheetahVel-v0", {"velocity": 2.5},
     "key 'velocity' for HalfCheetahVel: got 2.5; expected a number in [0, 2]"),
    ("distmeta/HalfCheetahVel-v0", {"velocity": True}, "key 'velocity' for HalfCheetahVel: got True"),
    ("distmeta/HalfCheetahDir-v0", {"direction": 0},
     "key 'direction' for HalfCheetahDir: got 0; expected one of {1, -1}"),
    ("distmeta/AntDir-v0", {"direction": "forward"}, "key 'direction' for AntDir: got 'forward'"),
    ("distmeta/PendulumParams-v0", {"mass": 1.0}, "task: missing key 'length' for PendulumParams"),
    ("distmeta/PendulumParams-v0", {"mass": 1.0, "length": 0.1},
     "key 'length' for PendulumParams: got 0.1; expected a number in [0.5, 1.5]"),
    ("distmeta/CartPoleParams-v0", {"pole_length": 0.5, "pole_mass": 0.1, "gravity": 9.8},
     "task: unknown key 'gravity' for CartPoleParams; expected keys: pole_length, pole_mass"),
]


@pytest.mark.parametrize(("env_id", "task", "message"), BAD_TASKS)
def test_bad_task_is_one_line_value_error_naming_the_key(envs, env_id, task, message):
    env = envs[env_id]
    before = env.get_task()
    with pytest.raises(ValueError) as raised:
        env.set_task(task)
    text = str(raised.value)
    assert message in text and "\n" not in text
    assert env.get_task() == before  # a rejected task leaves the env as it was


def test_bad_task_given_to_make_is_rejected():
    with pytest.raises(ValueError, match="unknown key 'gaol' for Nav2D"):
        gym.make("distmeta/Nav2D-v0", task={"gaol": [0.0, 0.0]})


def test_bad_task_count_is_rejected(envs):
    with pytest.raises(ValueError, match="sample_tasks: n_tasks got -1; expected an int >= 0"):
        envs["distmeta/Nav2D-v0"].sample_tasks(-1)
    assert envs["distmeta/Nav2D-v0"].sample_tasks(0, seed=1) == []


@pytest.mark.parametrize("env_id", IDS)
def test_copies_keep_the_task(env_id):
    env = gym.make(env_id, disable_env_checker=True).unwrapped
    env.set_task(OTHER_TASK[env_id])
    assert pickle.loads(pickle.dumps(env)).get_task() == OTHER_TASK[env_id]
    assert copy.deepcopy(env).get_task() == OTHER_TASK[env_id]
    env.close()
