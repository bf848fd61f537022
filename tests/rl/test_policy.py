"""Policies: log-probabilities match torch.distributions; sampling is a function of the noise."""

import gymnasium as gym
import numpy as np
import torch

from distmeta.rl.policy import CategoricalMLPPolicy, GaussianMLPPolicy, make_policy


def params_of(policy):
    return {k: v.detach() for k, v in policy.named_parameters()}


def test_gaussian_log_prob_and_sampling():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, (8,), 2, init_log_std=-0.5)
    params = params_of(policy)
    obs, actions = torch.randn(6, 3), torch.randn(6, 2)
    mean = policy.mode(params, obs)
    reference = torch.distributions.Normal(mean, params["log_std"].exp()).log_prob(actions).sum(-1)
    torch.testing.assert_close(policy.log_prob(params, obs, actions), reference)
    noise = policy.noise(torch.Generator().manual_seed(5), (6,))
    torch.testing.assert_close(policy.sample(params, obs, noise), mean + np.exp(-0.5) * noise)


def test_categorical_log_prob_and_gumbel_sampling_frequencies():
    torch.manual_seed(0)
    policy = CategoricalMLPPolicy(2, (8,), 3)
    params = params_of(policy)
    obs = torch.randn(1, 2)
    logits = policy.out(params, obs)
    actions = torch.tensor([2])
    reference = torch.distributions.Categorical(logits=logits).log_prob(actions)
    torch.testing.assert_close(policy.log_prob(params, obs, actions), reference)
    n = 40000
    noise = policy.noise(torch.Generator().manual_seed(1), (n,))
    samples = policy.sample(params, obs.expand(n, 2), noise)
    freq = torch.bincount(samples, minlength=3).float() / n
    # Binomial standard error at n = 40000 is at most 0.0025; 0.015 is 6 of them.
    torch.testing.assert_close(freq, torch.softmax(logits[0], -1), atol=0.015, rtol=0)


def test_make_policy_picks_by_action_space():
    box = gym.spaces.Box(-1, 1, (4,))
    assert isinstance(make_policy(box, gym.spaces.Box(-1, 1, (2,)), (8,)), GaussianMLPPolicy)
    policy = make_policy(box, gym.spaces.Discrete(5), (8,))
    assert isinstance(policy, CategoricalMLPPolicy) and policy.n_actions == 5


def test_functional_forward_is_the_modules_forward():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, (8, 5), 2)
    params = {k: torch.randn_like(v) for k, v in policy.named_parameters()}
    obs = torch.randn(4, 3)
    expected = torch.func.functional_call(policy, params, (obs,))
    torch.testing.assert_close(policy.out(params, obs), expected, rtol=0, atol=0)
