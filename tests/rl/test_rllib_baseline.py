"""The RLlib PPO baseline lands in distmeta's policy format exactly: the mapped policy puts
the same action distribution on the env's actions as RLlib's module does."""

import math

import numpy as np
import pytest
import torch

from distmeta.config import Config
from distmeta.experiment import build_experiment
from distmeta.rl.policy import GaussianMLPPolicy
from distmeta.rl.rllib_baseline import (
    RLlibLayoutError,
    action_affine,
    check_module_layout,
    module_affine,
    ppo_config,
    rllib_to_policy_params,
    train_multitask_ppo,
)

TINY = {"train_batch_size": 200, "minibatch_size": 100, "num_epochs": 1, "num_envs_per_env_runner": 2}


def make_config(env="distmeta/Nav2D-v0", hidden=(8,)):
    return Config.from_dict({"task": {"family": "gym", "env": env, "horizon": 20},
                             "model": {"hidden_sizes": list(hidden)}})


def rllib_outputs(module, obs):
    from ray.rllib.core.columns import Columns

    with torch.no_grad():
        return module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS].double()


def test_mapped_gaussian_policy_is_rllibs_policy_on_env_actions(ray_local):
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.spaces.space_utils import unsquash_action

    config = make_config(hidden=(8, 6))
    experiment = build_experiment(config)
    family, policy = experiment.family, experiment.network()
    expected = dict(policy.named_parameters())
    low, high = family.action_space.low, family.action_space.high  # [-0.1, 0.1]^2
    algo = ppo_config(config, seed=0, **TINY).build_algo()
    try:
        algo.train()  # the learner's and env runner's weights are then trained, not initial
        module = algo.get_module()
        check_module_layout(module, config.model.hidden_sizes)
        affine = module_affine(algo, family.action_space)
        with torch.no_grad():  # distinct log stds, and a mean that is not tiny
            module.pi.log_std.copy_(torch.tensor([-0.3, 0.4]))
            module.pi.net.mlp[0].bias.add_(torch.tensor([0.5, -0.7]))
        params = rllib_to_policy_params(module.state_dict(), expected, affine)
        assert set(params) == set(expected)

        obs = torch.randn(64, 2, dtype=torch.float64).float()
        inputs = rllib_outputs(module, obs)
        mean, log_std = inputs[:, :2], inputs[:, 2:]
        with torch.no_grad():
            ours = policy.mode(params, obs).double()
        # RLlib sends low + (a + 1) (high - low) / 2 (then clipped) for the module's action a.
        torch.testing.assert_close(ours, torch.as_tensor(low + (mean.numpy() + 1) * (high - low) / 2),
                                   rtol=1e-6, atol=1e-6)
        clipped = np.clip(ours.numpy(), low, high)
        np.testing.assert_allclose(clipped, unsquash_action(mean.numpy(), family.action_space), atol=1e-6)
        assert (np.abs(ours.numpy()) > 0.1).any() and (np.abs(ours.numpy()) < 0.1).any()
        torch.testing.assert_close(params["log_std"].double(),
                                   torch.tensor([-0.3, 0.4], dtype=torch.float64) + math.log(0.1))
        torch.testing.assert_close(log_std, (params["log_std"].double() - math.log(0.1)).expand(64, 2))
        # The same distribution: ours on env actions = RLlib's on normalised ones minus log|ds|.
        dist = module.get_inference_action_dist_cls().from_logits(inputs)
        norm_actions = dist.sample()
        env_actions = torch.as_tensor(low + (norm_actions.numpy() + 1) * (high - low) / 2)
        with torch.no_grad():
            ours_logp = policy.log_prob(params, obs, env_actions.float()).double()
        torch.testing.assert_close(ours_logp, dist.logp(norm_actions) - 2 * math.log(0.1),
                                   rtol=1e-5, atol=1e-5)

        # The learner's module (with the critic) maps to the env runner's synced policy.
        algo.learner_group.foreach_learner(lambda learner: learner.module[DEFAULT_MODULE_ID].pi.log_std
                                           .data.copy_(torch.tensor([-0.3, 0.4])))
        algo.learner_group.foreach_learner(lambda learner: learner.module[DEFAULT_MODULE_ID].pi.net
                                           .mlp[0].bias.data.add_(torch.tensor([0.5, -0.7])))
        learner = algo.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID]
        assert any(k.startswith("vf.") for k in learner)
        from_learner = rllib_to_policy_params(learner, expected, affine)
        for name in expected:
            torch.testing.assert_close(from_learner[name], params[name], rtol=0, atol=1e-7)

        # A changed RLlib weight changes the mapped policy accordingly, and only there.
        with torch.no_grad():
            module.encoder.actor_encoder.net.mlp[2].weight[1, 3] += 0.25
            module.pi.net.mlp[0].weight[0, 2] -= 0.5
        moved = rllib_to_policy_params(module.state_dict(), expected, affine)
        delta = {k: moved[k] - params[k] for k in expected}
        assert delta["body.2.weight"][1, 3] == pytest.approx(0.25, abs=1e-6)
        assert delta["head.weight"][0, 2] == pytest.approx(-0.05, abs=1e-7)  # scaled by 0.1
        changed = {k for k, d in delta.items() if d.abs().max() > 0}
        assert changed == {"body.2.weight", "head.weight"}
        with torch.no_grad():
            torch.testing.assert_close(
                policy.mode(moved, obs).double(),
                torch.as_tensor(low + (rllib_outputs(module, obs)[:, :2].numpy() + 1) * (high - low) / 2),
                rtol=1e-6, atol=1e-6)
        # RLlib clamps its free log std to +-20 (pi.log_std_clip_param_const); so does the map.
        with torch.no_grad():
            module.pi.log_std.copy_(torch.tensor([-25.0, 0.4]))
        clamped = rllib_to_policy_params(module.state_dict(), expected, affine)
        torch.testing.assert_close(rllib_outputs(module, obs)[:, 2:],
                                   (clamped["log_std"].double() - math.log(0.1)).expand(64, 2))
        assert clamped["log_std"][0] == pytest.approx(-20 + math.log(0.1))
    finally:
        algo.stop()


def test_action_rescaling_matches_rllibs_unsquash_on_asymmetric_bounds():
    import gymnasium as gym
    from ray.rllib.utils.spaces.space_utils import unsquash_action

    space = gym.spaces.Box(np.array([-1.0, 0.0, 2.0], np.float32), np.array([3.0, 1.0, 2.5], np.float32))
    policy = GaussianMLPPolicy(2, (5,), 3)
    torch.manual_seed(0)
    state = {"encoder.actor_encoder.net.mlp.0.weight": torch.randn(5, 2),
             "encoder.actor_encoder.net.mlp.0.bias": torch.randn(5),
             "pi.net.mlp.0.weight": torch.randn(3, 5) * 0.15, "pi.net.mlp.0.bias": torch.randn(3) * 0.15,
             "pi.log_std": torch.tensor([0.1, -0.2, 0.3])}
    expected = dict(policy.named_parameters())
    params = rllib_to_policy_params(state, expected, action_affine(space))
    obs = torch.randn(50, 2)
    hidden = torch.tanh(obs @ state["encoder.actor_encoder.net.mlp.0.weight"].T
                        + state["encoder.actor_encoder.net.mlp.0.bias"])
    mean = (hidden @ state["pi.net.mlp.0.weight"].T + state["pi.net.mlp.0.bias"]).numpy()
    assert np.abs(mean).max() < 1  # inside [-1, 1], where RLlib's unsquash does not clip
    ours = policy.mode(params, obs).detach().numpy()
    np.testing.assert_allclose(ours, unsquash_action(mean, space), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(params["log_std"], state["pi.log_std"] + torch.tensor([2.0, 0.5, 0.25]).log())


def test_mapped_categorical_policy_has_rllibs_logits(ray_local):
    config = make_config("distmeta/CartPoleParams-v0", hidden=(8,))
    experiment = build_experiment(config)
    family, policy = experiment.family, experiment.network()
    algo = ppo_config(config, seed=1, **TINY).build_algo()
    try:
        module = algo.get_module()
        check_module_layout(module, config.model.hidden_sizes)
        affine = module_affine(algo, family.action_space)
        assert affine is None
        params = rllib_to_policy_params(module.state_dict(), dict(policy.named_parameters()), affine)
        assert "log_std" not in params
        obs = torch.randn(32, 4)
        with torch.no_grad():
            torch.testing.assert_close(policy.out(params, obs).double(), rllib_outputs(module, obs),
                                       rtol=1e-6, atol=1e-6)
    finally:
        algo.stop()


def test_a_module_of_another_layout_is_refused():
    config = make_config(hidden=(8,))
    expected = dict(build_experiment(config).network().named_parameters())
    state = {"encoder.actor_encoder.net.mlp.0.weight": torch.zeros(8, 2),
             "encoder.actor_encoder.net.mlp.0.bias": torch.zeros(8),
             "pi.net.mlp.0.weight": torch.zeros(2, 8), "pi.net.mlp.0.bias": torch.zeros(2),
             "pi.log_std": torch.zeros(2), "vf.net.mlp.0.weight": torch.zeros(1, 8)}
    assert set(rllib_to_policy_params(state, expected)) == set(expected)
    wider = dict(state, **{"encoder.actor_encoder.net.mlp.0.weight": torch.zeros(8, 3)})
    with pytest.raises(RLlibLayoutError, match=r"actor maps to .*'body.0.weight': \(8, 3\)"):
        rllib_to_policy_params(wider, expected)
    head_layer = dict(state, **{"pi.net.mlp.2.weight": torch.zeros(2, 2)})
    with pytest.raises(RLlibLayoutError, match=r"does not place: \['pi.net.mlp.2.weight'\]"):
        rllib_to_policy_params(head_layer, expected)
    shared = {k.replace("actor_encoder", "encoder"): v for k, v in state.items()}
    with pytest.raises(RLlibLayoutError, match="does not place"):
        rllib_to_policy_params(shared, expected)


def test_short_training_returns_policy_parameters(ray_local):
    config = make_config(hidden=(8,))
    logs = []
    result = train_multitask_ppo(config, time_budget_s=600, seed=0, max_iterations=2, log=logs.append,
                                 **TINY)
    policy = build_experiment(config).network()
    assert {k: v.shape for k, v in result["params"].items()} == \
        {k: v.shape for k, v in policy.named_parameters()}
    assert all(torch.isfinite(v).all() for v in result["params"].values())
    assert result["iterations"] == 2 and [entry["iteration"] for entry in logs] == [1, 2]
    assert result["env_steps"] >= 400 and logs[0]["env_steps"] >= 200
    assert result["episode_return_mean"] < 0 and result["wall_s"] > 0  # Nav2D rewards are -distance
    # Trained: the learner's log std moved away from its initial 0 (+ log 0.1 of the rescaling).
    assert not torch.allclose(result["params"]["log_std"], torch.full((2,), math.log(0.1)))
