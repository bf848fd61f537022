"""Meta-World ML1 and ML10 behind the task protocol (needs the "metaworld" extra, which CI installs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import distmeta_envs
from distmeta_envs import metaworld as mw_envs

ID = "distmeta/MetaWorldML1-v0"
ML10 = "distmeta/MetaWorldML10-v0"
# gym.make's passive checker would warn on every make about the hidden goal's zero-width bounds;
# test_checker_and_spaces runs the full checker itself.
QUIET = {"disable_env_checker": True}


@pytest.fixture(scope="module")
def reach():
    """One reach-v3 env for the module: building ML1's task sets takes about two seconds."""
    env = gym.make(ID, env_name="reach-v3", benchmark_seed=0, **QUIET)
    yield env
    env.close()


def checker_warnings(env: gym.Env) -> list[str]:
    """gymnasium's check_env warnings, less the known ones about Meta-World's observation space
    (unbounded entries, and zero-width bounds for the hidden goal)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    allowed = ("infinity", "maximum and minimum values are equal")
    return [str(w.message) for w in caught if not any(a in str(w.message) for a in allowed)]


def test_checker_and_spaces(reach):
    assert reach.spec.max_episode_steps == 500
    assert reach.observation_space.shape == (39,) and reach.action_space.shape == (4,)
    assert checker_warnings(reach) == []


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


# ---- ML10 ------------------------------------------------------------------------------------

TRAIN_SKILLS = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-close-v3",
                "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "sweep-v3", "basketball-v3"]
TEST_SKILLS = ["drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3", "lever-pull-v3"]


@pytest.fixture(scope="module")
def ml10():
    """One ML10 train-split env for the module: metaworld.ML10 takes several seconds to build (once
    per process for a given seed; later instances take about a second)."""
    env = gym.make(ML10, benchmark_seed=0, **QUIET)
    yield env
    env.close()


@pytest.mark.slow
def test_ml10_checker_and_spaces(ml10):
    assert ml10.spec.max_episode_steps == 500
    assert ml10.observation_space.shape == (39,)
    assert ml10.action_space == gym.spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)
    assert checker_warnings(ml10) == []


@pytest.mark.slow
def test_ml10_indices_are_blocks_of_fifty_per_skill(ml10):
    env = ml10.unwrapped
    assert env.skill_names == tuple(TRAIN_SKILLS) and env.task_keys[0].high == 499
    assert env.get_task() == {"task_index": 0}
    assert [env.skill_of({"task_index": i}) for i in range(500)] == [s for s in TRAIN_SKILLS for _ in range(50)]
    for index in (0, 149, 499):
        env.set_task({"task_index": index})
        assert ml10.reset(seed=0)[1]["skill"] == TRAIN_SKILLS[index // 50]
        assert ml10.step(np.zeros(4, dtype=np.float32))[4]["skill"] == TRAIN_SKILLS[index // 50]


@pytest.mark.slow
def test_ml10_sampling_is_seeded_and_uniform_over_skills(ml10):
    env = ml10.unwrapped
    tasks = env.sample_tasks(2000, seed=7)
    assert tasks == env.sample_tasks(2000, seed=7) and tasks != env.sample_tasks(2000, seed=8)
    assert all(type(t["task_index"]) is int and 0 <= t["task_index"] <= 499 for t in tasks)
    counts = {skill: 0 for skill in TRAIN_SKILLS}
    for t in tasks:
        counts[env.skill_of(t)] += 1
    assert all(120 <= n <= 280 for n in counts.values()), counts  # 200 each expected, sd about 13


@pytest.mark.slow
def test_ml10_set_task_switches_skill_at_the_next_reset(ml10):
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 4)).astype(np.float32)
    reach = rewards(ml10, {"task_index": 3}, actions)
    np.testing.assert_array_equal(rewards(ml10, {"task_index": 3}, actions), reach)
    push = rewards(ml10, {"task_index": 53}, actions)  # same goal slot, another skill
    assert not np.allclose(push, reach)
    # A task set mid-episode waits for the reset, as in Meta-World: the episode stays on push.
    ml10.unwrapped.set_task({"task_index": 410})
    assert ml10.step(actions[0])[4]["skill"] == "push-v3"
    assert ml10.reset()[1]["skill"] == "sweep-v3"


@pytest.mark.slow
def test_ml10_same_benchmark_seed_same_tasks_across_instances(ml10):
    other = gym.make(ML10, benchmark_seed=0, **QUIET)
    actions = np.zeros((5, 4), dtype=np.float32)
    for index in (9, 333):
        np.testing.assert_array_equal(rewards(other, {"task_index": index}, actions),
                                      rewards(ml10, {"task_index": index}, actions))
    other.close()


@pytest.mark.slow
def test_ml10_a_skills_env_built_at_its_first_task_runs_the_episode_of_one_built_before(ml10):
    """Skill envs are built when a task of theirs is first set: push's env built late (after
    a seeded reset on reach) gives the episode of a push env built before that reset."""
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 4)).astype(np.float32)
    late = gym.make(ML10, benchmark_seed=0, **QUIET)
    late.unwrapped.set_task({"task_index": 0})
    late.reset(seed=3)
    early = gym.make(ML10, benchmark_seed=0, **QUIET)
    early.unwrapped.set_task({"task_index": 53})
    early.unwrapped.set_task({"task_index": 0})
    early.reset(seed=3)
    episodes = []
    for env in (late, early):
        env.unwrapped.set_task({"task_index": 53})
        obs, info = env.reset()
        assert info["skill"] == "push-v3"
        episodes.append([obs] + [env.step(a)[0] for a in actions])
        env.close()
    np.testing.assert_array_equal(np.array(episodes[0]), np.array(episodes[1]))


@pytest.mark.slow
def test_ml10_keeps_the_episodes_skill_env_and_a_rebuilt_one_runs_the_same_episode():
    """An evaluation worker's 260 ML10 envs each holding all 5 test skills' envs took 13 GB:
    after a reset an instance keeps its episode's skill only (the next one's too between a
    set_task and the reset). An env closed and built again gives the episode of one kept all
    along, from a seeded reset."""
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 4)).astype(np.float32)
    env = gym.make(ML10, benchmark_seed=0, **QUIET)
    kept = rewards(env, {"task_index": 53}, actions)  # push
    for index in (0, 110, 160, 210):  # reach, pick-place, door-open, drawer-close
        rewards(env, {"task_index": index}, actions[:1])
        assert list(env.unwrapped._envs) == [env.unwrapped.skill_of({"task_index": index})]
    np.testing.assert_array_equal(rewards(env, {"task_index": 53}, actions), kept)
    # Tasks set mid-episode never close the running episode's env.
    env.unwrapped.set_task({"task_index": 0})
    env.reset(seed=1)
    env.unwrapped.set_task({"task_index": 60})
    env.unwrapped.set_task({"task_index": 120})
    assert env.step(actions[0])[4]["skill"] == "reach-v3"
    assert env.reset()[1]["skill"] == "pick-place-v3"
    assert list(env.unwrapped._envs) == ["pick-place-v3"]
    env.close()
    two = gym.make(ML10, benchmark_seed=0, max_skill_envs=2, **QUIET)
    for index in (0, 60, 110):
        rewards(two, {"task_index": index}, actions[:1])
    assert list(two.unwrapped._envs) == ["push-v3", "pick-place-v3"]
    two.close()
    with pytest.raises(ValueError, match=r"^MetaWorldML10: max_skill_envs got 0; expected an integer >= 1$"):
        gym.make(ML10, max_skill_envs=0, **QUIET)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_ml10_hands_a_closed_skill_envs_memory_back_to_the_os(monkeypatch):
    """glibc's heap keeps what a closed skill env frees: 20 envs through the 5 test skills
    twice grew from 0.6 to 1.6 GB untrimmed and stayed at 0.6 trimmed
    (benchmarks/ml10_memory.py). The heap is trimmed once per reset that closes an env."""
    assert mw_envs._MALLOC_TRIM is not None  # found in this process's libc
    trims: list[int] = []
    real = mw_envs._MALLOC_TRIM
    monkeypatch.setattr(mw_envs, "_MALLOC_TRIM", lambda pad: trims.append(pad) or real(pad))
    env = gym.make(ML10, benchmark_seed=0, **QUIET)
    env.reset(seed=0)  # task 0: reach, the env it was built with
    env.unwrapped.set_task({"task_index": 60})  # push, built beside reach until the reset
    assert trims == []
    env.reset(seed=0)
    assert trims == [0] and list(env.unwrapped._envs) == ["push-v3"]
    env.close()


@pytest.mark.slow
def test_ml10_task_lists_are_kept_in_the_cache_and_a_new_process_reads_the_same_goals(ml10):
    """ML10(seed 0) is built once (by the fixture, or read from the session's cache folder) and
    kept there; a new process reads it back and scores tasks of three skills exactly as here."""
    (kept,) = Path(os.environ["DISTMETA_CACHE_DIR"]).glob("metaworld-*-ml10-seed0.json")
    assert {len(v) for v in json.loads(kept.read_text()).values()} == {500, 250}
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 4)).astype(np.float32)
    here = [rewards(ml10, {"task_index": i}, actions).tolist() for i in (3, 53, 410)]
    script = f"""
import json, gymnasium as gym, numpy as np, distmeta_envs
env = gym.make("{ML10}", benchmark_seed=0, disable_env_checker=True)
out = []
for i in (3, 53, 410):
    env.unwrapped.set_task({{"task_index": i}})
    env.reset(seed=0)
    out.append([float(env.step(a)[1]) for a in np.array({actions.tolist()}, dtype=np.float32)])
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == here


@pytest.mark.parametrize("damage", [b"not json", b'{"train": [["reach-v3", "@@"]], "test": []}', b'{"train": 1}'])
def test_a_damaged_ml10_cache_file_is_ignored(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("DISTMETA_CACHE_DIR", str(tmp_path))
    (tmp_path / mw_envs._ml10_cache_name(0)).write_bytes(damage)
    assert mw_envs._cached_ml10(0) is None


@pytest.mark.slow
def test_ml10_full_episodes_across_skills(ml10):
    zero = np.zeros(4, dtype=np.float32)
    for index in (10, 210, 10):  # back to a skill whose env already ran to the horizon
        ml10.unwrapped.set_task({"task_index": index})
        ml10.reset(seed=1)
        truncated = [ml10.step(zero)[3] for _ in range(500)]
        assert truncated[-1] and not any(truncated[:-1])


@pytest.mark.slow
def test_ml10_bad_tasks_are_one_line_errors(ml10):
    env = ml10.unwrapped
    with pytest.raises(ValueError, match=r"key 'task_index' for MetaWorldML10: got 500; expected an integer in \[0, 499\]"):
        env.set_task({"task_index": 500})
    with pytest.raises(ValueError, match="unknown key 'skill' for MetaWorldML10; expected keys: task_index"):
        env.set_task({"task_index": 1, "skill": "reach-v3"})
    with pytest.raises(ValueError, match="missing key 'task_index' for MetaWorldML10"):
        env.skill_of({})
    with pytest.raises(ValueError, match="MetaWorldML10: split got 'val'; expected one of train, test"):
        gym.make(ML10, split="val")


@pytest.mark.slow
def test_ml10_mixture_draws_skills_and_reports_them(ml10):
    env = distmeta_envs.TaskMixture(ml10)  # not closed: that would close the module's env
    infos = [env.reset(seed=0)[1]] + [env.reset()[1] for _ in range(9)]
    assert all(info["skill"] == ml10.unwrapped.skill_of(info["task"]) for info in infos)
    assert len({info["skill"] for info in infos}) > 3


@pytest.mark.slow
def test_ml10_test_split_has_five_held_out_skills(ml10):  # ml10: builds the cached benchmark
    env = gym.make(ML10, benchmark_seed=0, split="test", **QUIET)
    test = env.unwrapped
    assert test.skill_names == tuple(TEST_SKILLS) and test.task_keys[0].high == 249
    assert [test.skill_of({"task_index": i}) for i in range(0, 250, 50)] == TEST_SKILLS
    assert {test.skill_of(t) for t in test.sample_tasks(200, seed=0)} == set(TEST_SKILLS)
    with pytest.raises(ValueError, match=r"key 'task_index' for MetaWorldML10: got 250; expected an integer in \[0, 249\]"):
        test.set_task({"task_index": 250})
    test.set_task({"task_index": 249})
    assert env.reset(seed=0)[1]["skill"] == "lever-pull-v3"
    env.close()
