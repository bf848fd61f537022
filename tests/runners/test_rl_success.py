"""Meta-World's evaluation protocol on the meta-RL runner: success at any step of an
episode, episodes of the most likely action, and every task of a finite task list once."""

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from distmeta.config import Config
from distmeta.errors import ConfigError, UserError
from distmeta.experiment import build_experiment
from distmeta.loading import apply_overrides
from distmeta.runners.rl import SUCCESS_EPISODES
from distmeta.runtime import MetaLearner
from distmeta.runtime.evaluate import evaluate
from distmeta.tasks import eval_task_rng
from distmeta.tasks.gym import _EnvPerEpisode
from distmeta_envs import TaskKey, TaskSettableEnv

FLAG_LINE = "tests/FlagLine-v0"
SILENT_VECTOR = "tests/FlagLineSilentVector-v0"


class FlagLine(TaskSettableEnv, gym.Env):
    """A point on a line moved by its action (clipped to [-1, 1]) from 0. Its success flag is
    set only while the point is in [goal, goal + 1): a policy that keeps moving passes
    through, so the flag is set at one step and cleared after."""

    task_keys = (TaskKey("goal", low=1, high=3, integer=True),)

    def __init__(self, task: dict | None = None):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
        self.set_task(task if task is not None else self.default_task())

    def _apply_task(self, task: dict) -> None:
        self.goal = task["goal"]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.position = 0.0
        return np.array([self.position], dtype=np.float32), {}

    def step(self, action):
        self.position += float(np.clip(action[0], -1, 1))
        reached = self.goal <= self.position < self.goal + 1
        obs = np.array([self.position], dtype=np.float32)
        return obs, -abs(self.goal - self.position), False, False, {"success": float(reached)}


class SilentVector(_EnvPerEpisode):
    """A vector version of FlagLine that drops its envs' infos."""

    def __init__(self, num_envs: int, max_episode_steps: int | None = None):
        super().__init__(lambda: gym.wrappers.TimeLimit(FlagLine(), max_episode_steps or 10), num_envs)
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def step(self, actions):
        return super().step(actions)[:4] + ({},)


if FLAG_LINE not in gym.registry:
    gym.register(FLAG_LINE, entry_point=FlagLine, max_episode_steps=10)
    gym.register(SILENT_VECTOR, entry_point=FlagLine, vector_entry_point=SilentVector, max_episode_steps=10)

BASE = {
    "seed": 0, "iterations": 1, "meta_batch_size": 3, "num_workers": 0, "checkpoint_every": 1,
    "task": {"family": "gym", "env": FLAG_LINE, "horizon": 6},
    "model": {"hidden_sizes": [4]},
    "algorithm": {"name": "maml", "inner_lr": 1e-6, "outer_lr": 0.01},
    "rl": {"episodes_per_task": 2, "outer_steps": 1},
}


def runner(*overrides):
    return build_experiment(Config.from_dict(apply_overrides(BASE, list(overrides)))).make_runner()


def moving_params(runner, speed: float) -> dict:
    """Policy parameters whose most likely action is `speed` at every observation."""
    params = {k: torch.zeros_like(v) for k, v in runner.policy.named_parameters()}
    last_bias = [k for k in params if k.endswith("bias")][-1]
    params[last_bias].fill_(speed)
    return params


def rollout(runner, params, goals, deterministic, episodes=2):
    tasks = [{"goal": g} for g in goals]
    rngs = [eval_task_rng(0, "test", i) for i in range(len(goals))]
    return runner.sampler.rollout([params] * len(goals), tasks, rngs, episodes, deterministic=deterministic)


def test_success_is_the_flag_at_any_step_of_an_episode_not_its_last():
    r = runner()
    forward = moving_params(r, 1.0)
    batches = rollout(r, forward, [1, 2, 3], deterministic=True)
    # Moving at 1 a step, the point is at the goal after `goal` steps and past it after;
    # the flag is set at one step and cleared by the episode's end, and it counts.
    assert [b["success"].tolist() for b in batches] == [[1.0, 1.0]] * 3
    assert all(b["obs"][:, -1, 0].tolist() == [5.0, 5.0] for b in batches)  # past every goal at the end
    backward = rollout(r, moving_params(r, -1.0), [1, 2, 3], deterministic=True)
    assert [b["success"].tolist() for b in backward] == [[0.0, 0.0]] * 3


def test_a_short_horizon_that_ends_before_the_goal_is_no_success():
    r = runner("task.horizon=2")
    batches = rollout(r, moving_params(r, 1.0), [1, 2, 3], deterministic=True)
    assert [b["success"].tolist() for b in batches] == [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]


def test_deterministic_episodes_take_the_most_likely_action_and_sampled_ones_do_not():
    r = runner()
    params = moving_params(r, 0.3)
    mode = rollout(r, params, [2], deterministic=True)[0]
    assert torch.equal(mode["actions"], torch.full_like(mode["actions"], 0.3))
    sampled = rollout(r, params, [2], deterministic=False)[0]
    assert not torch.allclose(sampled["actions"], mode["actions"])


def test_an_env_without_a_success_flag_gives_no_success():
    r = runner("task.env=distmeta/Nav2D-v0", "task.horizon=5")
    assert not r.family.reports_success and runner().family.reports_success
    meta = r.layout.flatten(dict(r.policy.named_parameters())).detach().numpy()
    assert "success" not in r.sampler.rollout([r.layout.from_numpy(meta)], [{"goal": [0.1, 0.1]}],
                                              [np.random.default_rng(0)], 2)[0]
    assert set(r.evaluate(meta, "test", [0, 1], 1, 0)) == {"pre_return", "post_return"}


def test_evaluate_scores_success_before_and_after_adaptation_on_task_i_of_the_list():
    r = runner("task.horizon=2", "task.eval_all_tasks=true")
    meta = r.layout.flatten(moving_params(r, 1.0)).numpy()
    scores = r.evaluate(meta, "test", [0, 1, 2], 1, 0)
    # Task i is goal i + 1; in 2 steps at speed 1 goals 1 and 2 are reached, 3 is not. The
    # inner step (lr 1e-6) leaves the most likely action's success as it was.
    assert scores["pre_success"].tolist() == [1.0, 1.0, 0.0]
    assert scores["post_success"].tolist() == [1.0, 1.0, 0.0]
    # The returns are those episodes' too (Meta-World's): -|goal - 1| - |goal - 2|.
    assert scores["pre_return"] == pytest.approx([-1.0, -1.0, -3.0])
    assert scores["post_return"] == pytest.approx([-1.0, -1.0, -3.0], abs=1e-3)
    assert SUCCESS_EPISODES == 3


def test_a_vector_env_that_drops_the_success_flag_is_one_line_naming_the_fix():
    r = runner(f"task.env={SILENT_VECTOR}")
    meta = r.layout.flatten(moving_params(r, 1.0)).numpy()
    with pytest.raises(ConfigError, match=rf"^task.vectorized: {SILENT_VECTOR}'s env reports info\['success'\] but "
                                          r"its vector env does not; set task.vectorized=false$"):
        r.evaluate(meta, "test", [0], 1, 0)
    assert set(runner(f"task.env={SILENT_VECTOR}", "task.vectorized=false").evaluate(meta, "test", [0], 1, 0)) == {
        "pre_return", "post_return", "pre_success", "post_success"}


def test_the_task_list_is_every_combination_in_order():
    flag = runner("task.eval_all_tasks=true").family
    assert flag.task_list() == [{"goal": 1}, {"goal": 2}, {"goal": 3}]
    assert flag.eval_task_count == 3
    assert [flag.eval_task(np.random.default_rng(0), "test", i) for i in range(3)] == flag.task_list()
    cheetah = runner("task.env=distmeta/HalfCheetahDir-v0", "task.eval_all_tasks=true").family
    assert cheetah.task_list() == [{"direction": 1}, {"direction": -1}]  # the choices in their order
    drawn = runner().family
    assert drawn.eval_task_count is None
    assert drawn.eval_task(eval_task_rng(0, "test", 5), "test", 5)["goal"] in (1, 2, 3)


def test_eval_all_tasks_refuses_an_env_with_continuous_tasks():
    with pytest.raises(ConfigError, match=r"^task.eval_all_tasks: distmeta/Nav2D-v0's task key 'goal' is not an "
                                          r"integer index or a choice, so its tasks are no finite list; set it false$"):
        runner("task.env=distmeta/Nav2D-v0", "task.eval_all_tasks=true")


def test_evaluating_more_tasks_than_the_list_holds_is_one_line_before_any_work(tmp_path):
    config = Config.from_dict(apply_overrides(BASE, ["task.eval_all_tasks=true"]))
    with MetaLearner(config, out_dir=tmp_path / "run") as learner:
        learner.train()
        with pytest.raises(UserError, match=r"^validation tasks: got 5; the family lists 3 evaluation tasks"):
            learner.validate(5)
    result = evaluate(tmp_path / "run", tasks=3)
    assert set(result["post_adaptation"]) == {"return", "success"}
    with pytest.raises(UserError, match=r"^--tasks: got 4; the family lists 3 evaluation tasks "
                                        r"\(task.eval_all_tasks\); expected at most 3$"):
        evaluate(tmp_path / "run", tasks=4)


@pytest.mark.slow
def test_meta_world_ml10_test_split_lists_its_250_tasks_and_reports_success():
    pytest.importorskip("metaworld")
    r = runner("task.env=distmeta/MetaWorldML10-v0", "task.env_kwargs.split=test", "task.horizon=3",
               "task.eval_all_tasks=true")
    assert r.family.eval_task_count == 250
    assert r.family.task_list()[249] == {"task_index": 249}
    meta = r.layout.flatten(dict(r.policy.named_parameters())).detach().numpy()
    scores = r.evaluate(meta, "test", [0, 249], 1, 0)
    assert set(scores) == {"pre_return", "post_return", "pre_success", "post_success"}
    assert all(v in (0.0, 1 / 3, 2 / 3, 1.0) for v in np.concatenate([scores["pre_success"], scores["post_success"]]))


def test_the_sampler_keeps_its_two_latest_sizes_of_envs():
    # Evaluation alternates adaptation episodes and evaluation episodes; rebuilding envs
    # at each switch took about a second per ML10 env.
    sampler = runner().sampler
    six, three = sampler.vector_env(6), sampler.vector_env(3)
    assert sampler.vector_env(6) is six and sampler.vector_env(3) is three
    sampler.vector_env(4)  # a third size: the least recently used one (6) is closed
    assert sampler.vector_env(3) is three and sampler.vector_env(6) is not six
    sampler.close()
