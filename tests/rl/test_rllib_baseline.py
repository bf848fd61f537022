"""The RLlib PPO baseline lands in distmeta's policy format exactly."""

import pytest
import torch

from distmeta.config import Config
from distmeta.errors import UserError
from distmeta.rl.rllib_baseline import ppo_config, rllib_to_policy_params, train_multitask_ppo
from distmeta.runtime.rl_worker import build_policy

CONFIG = Config.from_dict({
    "task": {"family": "gym", "env": "distmeta/Nav2D-v0", "horizon": 20},
    "model": {"hidden_sizes": [8, 6]},
})


def test_mapped_weights_give_rllibs_action_distribution(ray_local):
    from ray.rllib.core.columns import Columns

    algo = ppo_config(CONFIG, seed=0).build_algo()
    try:
        module = algo.get_module()
        with torch.no_grad():  # make log_std distinguishable from its zero init
            module.pi.log_std.copy_(torch.tensor([-0.3, 0.2]))
        policy = build_policy(CONFIG, CONFIG.task.make_family())
        params = rllib_to_policy_params(module.state_dict(), dict(policy.named_parameters()))
        obs = torch.randn(16, 2)
        with torch.no_grad():
            inputs = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
            ours = policy.mode(params, obs)
        torch.testing.assert_close(ours, inputs[:, :2], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(params["log_std"].expand(16, 2), inputs[:, 2:])
        # A changed RLlib weight changes the mapped policy (the mapping reads the module).
        with torch.no_grad():
            module.encoder.actor_encoder.net.mlp[0].weight.add_(1.0)
        moved = rllib_to_policy_params(module.state_dict(), dict(policy.named_parameters()))
        assert not torch.equal(moved["body.0.weight"], params["body.0.weight"])
    finally:
        algo.stop()


def test_a_module_of_another_shape_is_refused():
    policy = build_policy(CONFIG, CONFIG.task.make_family())
    state = {"encoder.actor_encoder.net.mlp.0.weight": torch.zeros(8, 3)}
    with pytest.raises(UserError, match=r"^rllib baseline: the PPO module's actor maps to"):
        rllib_to_policy_params(state, dict(policy.named_parameters()))


def test_short_training_returns_policy_parameters(ray_local):
    result = train_multitask_ppo(CONFIG, time_budget_s=600, max_iterations=1)
    policy = build_policy(CONFIG, CONFIG.task.make_family())
    assert {k: v.shape for k, v in result["params"].items()} == \
        {k: v.shape for k, v in policy.named_parameters()}
    assert result["iterations"] == 1 and result["env_steps"] >= 4000
