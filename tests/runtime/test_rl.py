"""Meta-RL on the runtime: real gymnasium envs, real Ray actors, held-out evaluation."""

import itertools
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from distmeta.algorithms.maml_rl import BATCH_KEYS
from distmeta.config import Config
from distmeta.errors import ConfigError
from distmeta.experiment import build_experiment
from distmeta.loading import apply_overrides
from distmeta.runtime import MetaLearner
from distmeta.runtime.evaluate import evaluate
from distmeta.tasks import train_task_rng

BASE = {
    "seed": 1, "iterations": 3, "meta_batch_size": 4, "num_workers": 0, "checkpoint_every": 10,
    "task": {"family": "gym", "env": "distmeta/Nav2D-v0", "horizon": 20},
    "model": {"hidden_sizes": [16]},
    "algorithm": {"name": "maml", "inner_lr": 0.1, "outer_lr": 0.01},
    "rl": {"episodes_per_task": 3, "outer_steps": 2},
}


def nav_config(*overrides, base=BASE):
    return Config.from_dict(apply_overrides(base, list(overrides)))


def final_params(config, **kwargs):
    with MetaLearner(config, **kwargs) as learner:
        learner.train()
        return {k: v.detach().clone() for k, v in learner.meta.items()}


def test_a_tasks_episodes_do_not_depend_on_its_shard_mates():
    config = nav_config()
    runner = build_experiment(config).make_runner()
    meta = {k: v.detach() for k, v in runner.policy.named_parameters()}
    rngs = lambda idx: [train_task_rng(0, 0, i) for i in idx]
    tasks = lambda idx: [runner.family.sample_task(r, "train") for r in rngs(idx)]
    alone = runner.sampler.rollout([meta], tasks([2]), rngs([2]), 3)[0]
    for mates in ([0, 1, 2], list(range(12))):  # one batched policy forward for all of them
        shared = runner.sampler.rollout([meta] * len(mates), tasks(mates), rngs(mates), 3)[2]
        for k in alone:
            assert torch.equal(alone[k], shared[k]), (len(mates), k)
    other = runner.sampler.rollout([meta], tasks([1]), rngs([1]), 3)[0]
    assert not torch.equal(alone["rewards"], other["rewards"])


@pytest.mark.parametrize("env", ["distmeta/Nav2D-v0", "distmeta/CartPoleParams-v0"])
def test_logp_old_is_each_tasks_policy_log_prob_of_its_sampled_actions(env):
    """The sampler takes `logp_old` from its own batched forward: it must be what the task's
    policy gives the sampled actions afresh (to float rounding), Gaussian and categorical,
    each task under its own parameters, episodes that end early included."""
    runner = build_experiment(nav_config(f"task.env={env}", "task.horizon=60")).make_runner()
    meta = {k: v.detach() for k, v in runner.policy.named_parameters()}
    params = [{k: v + 0.1 * i for k, v in meta.items()} for i in range(3)]
    rngs = [train_task_rng(0, 0, i) for i in range(3)]
    tasks = [runner.family.sample_task(r, "train") for r in rngs]
    batches = runner.sampler.rollout(params, tasks, rngs, 4)
    for p, batch in zip(params, batches):
        live = batch["mask"].bool()
        fresh = runner.policy.log_prob(p, batch["obs"], batch["actions"])
        torch.testing.assert_close(batch["logp_old"][live], fresh[live], rtol=1e-5, atol=1e-5)
    if env == "distmeta/CartPoleParams-v0":
        assert not bool(batches[0]["mask"].all())  # some pole fell: the masked tail was exercised


def test_nav2ds_native_vector_env_samples_the_episodes_of_one_env_per_episode():
    runners = [build_experiment(nav_config(f"task.vectorized={flag}")).make_runner() for flag in (True, False)]
    assert [type(r.sampler.vector_env(6)).__name__ for r in runners] == ["Nav2DVector", "_EnvPerEpisode"]
    meta = {k: v.detach() for k, v in runners[0].policy.named_parameters()}
    rngs = lambda: [train_task_rng(0, 0, i) for i in range(3)]
    tasks = [runners[0].family.sample_task(r, "train") for r in rngs()]
    native, separate = (r.sampler.rollout([meta] * 3, tasks, rngs(), 2) for r in runners)
    for a, b in zip(native, separate):
        for k in a:
            assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("env", ["distmeta/AntDir-v0", "distmeta/CartPoleParams-v0"])
def test_one_env_per_episode_steps_as_gymnasiums_sync_vector_env(env):
    """Episodes that end (Ant falling, the pole down), the next step's restart and discrete
    actions included: the same observations, rewards and flags as SyncVectorEnv."""
    family = build_experiment(nav_config(f"task.env={env}", "task.horizon=40")).family
    ours = family.make_vector_env(4)
    theirs = gym.vector.SyncVectorEnv([family.make_env] * 4)
    tasks = [family.sample_task(train_task_rng(0, 0, i), "train") for i in range(4)]
    ours.set_tasks(tasks)
    for sub, task in zip(theirs.envs, tasks):
        sub.unwrapped.set_task(task)
    assert np.array_equal(ours.reset(seed=[1, 2, 3, 4])[0], theirs.reset(seed=[1, 2, 3, 4])[0])
    space, ended = theirs.action_space, 0
    space.seed(0)
    for t in range(120):
        actions = space.sample() if env.endswith("CartPoleParams-v0") else 3 * space.sample()
        got, want = ours.step(actions), theirs.step(actions)
        for a, b in zip(got[:4], want[:4]):
            assert a.dtype == b.dtype and np.array_equal(a, b), t
        ended += int(want[2].sum() + want[3].sum())
    assert ended >= 4  # restarts were exercised
    ours.close()
    theirs.close()


def test_outer_steps_reuse_the_sampled_episodes():
    config = nav_config()
    runner = build_experiment(config).make_runner()
    flat = runner.layout.flatten(dict(runner.policy.named_parameters())).numpy()
    g1, n, m1 = runner.meta_grad(flat, 0, [0, 1])
    assert n == 2 and m1["env_steps"] == 2 * 2 * 3 * 20  # tasks x (pre + post) x episodes x T
    g2, _, m2 = runner.meta_grad(flat, 0, [0, 1])
    assert m2["env_steps"] == 0 and m2["pre_return"] == m1["pre_return"]
    np.testing.assert_array_equal(g1, g2)
    _, _, m3 = runner.meta_grad(flat, 1, [0, 1])
    assert m3["env_steps"] == m1["env_steps"] and m3["pre_return"] != m1["pre_return"]


def test_metrics_line_and_resume_is_exact(tmp_path):
    whole = final_params(nav_config("iterations=4"))
    final_params(nav_config("iterations=2"), out_dir=tmp_path)
    resumed = final_params(nav_config("iterations=4"), out_dir=tmp_path, resume=True)
    for k in whole:
        assert torch.equal(whole[k], resumed[k]), k
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [1, 2, 3, 4]
    assert set(lines[0]["pre_adaptation"]) == {"return"}
    assert set(lines[0]["post_adaptation"]) == {"return", "loss"}
    assert lines[0]["env_steps_per_s"] > 0


def test_promp_kl_coefficient_follows_the_inner_kl_and_resumes(tmp_path):
    """Each line reports the inner KL after the iteration's outer steps and the coefficient
    it used; the next line's coefficient is ProMP's update of it; a checkpoint carries it."""
    from distmeta.algorithms.maml_rl import adapt_kl_coeffs

    final_params(nav_config("iterations=5", "rl.inner_kl_target=0.001"), out_dir=tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["inner_kl_coeff"] == 0.01 and all(line["inner_kl"] > 0 for line in lines)
    for before, after in itertools.pairwise(lines):
        expected = adapt_kl_coeffs(np.array([before["inner_kl_coeff"]]), np.array([before["inner_kl"]]), 0.001)
        assert after["inner_kl_coeff"] == pytest.approx(float(expected[0]))
    assert len({line["inner_kl_coeff"] for line in lines}) > 1  # it moved
    state = torch.load(max((tmp_path / "checkpoints").iterdir()), weights_only=True)
    assert state["kl_coeffs"] == [float(adapt_kl_coeffs(np.array([lines[-1]["inner_kl_coeff"]]),
                                                        np.array([lines[-1]["inner_kl"]]), 0.001)[0])]
    off = MetaLearner(nav_config("rl.inner_kl_target=null"))
    with off:
        assert "inner_kl" not in off.step() and "kl_coeffs" not in off.state()


def test_same_seed_same_policy_for_0_and_2_ray_workers(ray_local):
    inproc = final_params(nav_config())
    with MetaLearner(nav_config("num_workers=2", "runtime.resources_per_worker.cpu=1")) as learner:
        learner.train()
        two = {k: v.detach().clone() for k, v in learner.meta.items()}
        # The straggler timeout times the sampling outer step apart from the ones that
        # reuse its episodes (and ProMP's KL): 3 iterations x 2 shards of each.
        durations = learner.executor.durations
        assert sorted((k, len(v)) for k, v in durations.items()) == [
            ("inner_kl", 6), ("meta_grad", 6), ("meta_grad on kept episodes", 6)]
    for k in inproc:  # one shard against two: the same up to the order of the sums
        torch.testing.assert_close(inproc[k], two[k], rtol=1e-5, atol=1e-6)
    same_shards = final_params(nav_config("runtime.shards=2"))
    for k, v in two.items():
        assert torch.equal(same_shards[k], v), k
    other = final_params(nav_config("seed=2"))
    assert any(not torch.equal(inproc[k], other[k]) for k in inproc)


def test_short_nav2d_run_adapts_on_held_out_goals(tmp_path):
    """40 iterations of MAML-RL: one inner step raises the return on 20 held-out goals, by
    far more than the paired difference's own 95% interval and by over 15% of the return."""
    config = nav_config("iterations=40", "meta_batch_size=10", "task.horizon=50",
                        "rl.episodes_per_task=10", "rl.outer_steps=3", "algorithm.outer_lr=0.003",
                        "model.hidden_sizes=[32,32]", "checkpoint_every=40")
    with MetaLearner(config, out_dir=tmp_path) as learner:
        learner.train()
        flat = learner.layout.flatten(learner.meta).numpy()
    runner = build_experiment(config).make_runner()
    per_task = runner.evaluate(flat, "test", range(20), steps=1, seed=0)
    gain = per_task["post_return"] - per_task["pre_return"]
    half_width = 1.96 * gain.std(ddof=1) / np.sqrt(len(gain))
    assert gain.mean() > 3 * half_width, (gain.mean(), half_width)
    assert gain.mean() > 0.15 * abs(per_task["pre_return"].mean()), per_task
    # The CLI's evaluation reports the same numbers for the same tasks and seed.
    result = evaluate(tmp_path, tasks=20, steps=1)
    assert result["post_adaptation"]["return"]["mean"] == pytest.approx(per_task["post_return"].mean())


@pytest.mark.parametrize("overrides, message", [
    (["algorithm.name=protonet"], r"^algorithm.name: got protonet for a meta-RL family; expected maml or maml_rl"),
    (["model.name=conv4"], r"^model.name: got conv4 for a meta-RL family"),
    (["task.env=distmeta/Nav2D-v9"], r"^task.env: .*Nav2D"),
    (["task.env=CartPole-v1"], r"^task.env: CartPole-v1 lacks the task protocol"),
    (["task.horizon=0"], r"^task.horizon: got 0; expected >= 1"),
    (["task.env_kwargs={size: 3}"], r"^task.env_kwargs: gymnasium.make"),
    (["rl.gamma=1.5"], r"^rl.gamma: got 1.5; expected a number in \[0, 1\]"),
    (["rl.outer_steps=0"], r"^rl.outer_steps: got 0"),
    (["rl.episode_per_task=3"], r"^unknown key 'rl.episode_per_task'"),
])
def test_bad_rl_configs_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_experiment(nav_config(*overrides))


@pytest.mark.parametrize("env", ["distmeta/CartPoleParams-v0", "distmeta/PendulumParams-v0",
                                 "distmeta/HalfCheetahVel-v0", "distmeta/AntDir-v0",
                                 pytest.param("distmeta/MetaWorldML10-v0", marks=pytest.mark.slow)])
def test_every_family_meta_trains(env):
    """One iteration on each kind of env: discrete actions (categorical policy), classic
    control, MuJoCo, Ant's early termination (masked steps), Meta-World ML10 (optional extra,
    installed by .ci/run)."""
    config = nav_config(f"task.env={env}", "iterations=1", "meta_batch_size=2",
                        "rl.episodes_per_task=2", "task.horizon=30")
    with MetaLearner(config) as learner:
        before = {k: v.detach().clone() for k, v in learner.meta.items()}
        line = learner.step()
    assert np.isfinite(line["pre_adaptation"]["return"]) and np.isfinite(line["meta_loss"])
    assert line["grad_norm"] > 0
    assert any(not torch.equal(before[k], learner.meta[k]) for k in before)
    assert ("log_std" in before) == (env != "distmeta/CartPoleParams-v0")


def test_early_termination_masks_the_rest_of_the_episode():
    config = nav_config("task.env=distmeta/AntDir-v0", "task.horizon=200")
    runner = build_experiment(config).make_runner()
    meta = {k: v.detach() * 0 for k, v in runner.policy.named_parameters()}
    meta["log_std"] = torch.full_like(meta["log_std"], 1.0)  # flailing: the ant falls over
    rngs = [train_task_rng(0, 0, i) for i in range(2)]
    tasks = [runner.family.sample_task(r, "train") for r in rngs]
    batch = runner.sampler.rollout([meta] * 2, tasks, rngs, 4)[0]
    lengths = batch["mask"].sum(1)
    assert (lengths < 200).any(), lengths
    for e, n in enumerate(lengths.long().tolist()):
        assert torch.all(batch["mask"][e, :n] == 1) and torch.all(batch["mask"][e, n:] == 0)
        assert torch.all(batch["rewards"][e, n:] == 0)


def test_step_by_step_adaptation_is_the_algorithms_adapt():
    """Evaluation adapts one step at a time, sampling between steps; the adapted parameters
    are those `MAMLRL.adapt` computes from the same episodes in one go (meta-training's)."""
    config = nav_config()
    runner = build_experiment(config).make_runner()
    meta = {k: v.detach() for k, v in runner.policy.named_parameters()}
    rngs = [train_task_rng(0, 0, 0)]
    task = [runner.family.sample_task(rngs[0], "train")]
    batches, returns, adapted = runner.sample_adaptation(meta, task, rngs, 2, 3)
    assert returns.shape == (1, 3) and len(batches[0]) == 3
    support = {k: torch.stack([b[k] for b in batches[0][:2]]) for k in BATCH_KEYS}
    in_one_go = runner.algorithm.adapt(meta, {}, support, runner.problem, config.algorithm, 2)
    for k, start in meta.items():
        torch.testing.assert_close(adapted[0][k], in_one_go[k].detach())
        assert not torch.equal(adapted[0][k], start)


def test_configs_without_rl_keys_read_and_resume_as_before(tmp_path):
    """Supervised configs (and runs saved before the `rl` section existed) carry no `rl:`."""
    sine = Config.from_dict({"task": {"family": "sinusoid"}, "iterations": 2, "checkpoint_every": 1})
    assert "rl" not in sine.to_dict()
    assert "rl" in nav_config().to_dict()  # non-default rl settings are kept
    final_params(sine, out_dir=tmp_path)
    resumed = Config.from_dict(dict(sine.to_dict(), iterations=3))
    with MetaLearner(resumed, out_dir=tmp_path, resume=True) as learner:
        assert learner.iteration == 2
