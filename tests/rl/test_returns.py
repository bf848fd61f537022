"""Returns, the linear feature baseline and GAE against direct computations."""

import torch

from distmeta.rl.returns import advantages, baseline_features, discounted_returns, gae, linear_baseline


def test_discounted_returns_stop_at_the_episode_end():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    got = discounted_returns(rewards, mask, 0.5)
    torch.testing.assert_close(got, torch.tensor([[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0, 0.0]]))


def test_gae_with_lambda_one_is_returns_minus_values():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    mask = torch.ones(3, 7)
    mask[1, 5:] = 0
    values = values * mask
    got = gae(rewards, values, mask, 0.9, 1.0)
    expected = (discounted_returns(rewards * mask, mask, 0.9) - values) * mask
    torch.testing.assert_close(got, expected)


def test_gae_with_lambda_zero_is_the_td_error():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 0.25, 1.0]])
    mask = torch.ones(1, 3)
    got = gae(rewards, values, mask, 0.9, 0.0)
    torch.testing.assert_close(got, torch.tensor([[1 + 0.9 * 0.25 - 0.5, 2 + 0.9 * 1.0 - 0.25, 3 - 1.0]]))


def test_linear_baseline_recovers_returns_that_are_linear_in_its_features():
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(4, 10, 3, generator=g)
    coef = torch.randn(baseline_features(obs).shape[-1], generator=g, dtype=torch.float64)
    returns = (baseline_features(obs.double()) @ coef).float()
    mask = torch.ones(4, 10)
    torch.testing.assert_close(linear_baseline(obs, returns, mask), returns, atol=1e-3, rtol=1e-3)


def test_advantages_are_normalised_over_valid_steps_and_zero_elsewhere():
    g = torch.Generator().manual_seed(2)
    obs, rewards = torch.randn(5, 8, 2, generator=g), torch.randn(5, 8, generator=g)
    mask = torch.ones(5, 8)
    mask[0, 3:] = 0
    adv = advantages(obs, rewards * mask, mask, 0.99, 0.95)
    valid = adv[mask.bool()]
    assert abs(float(valid.mean())) < 1e-5
    assert abs(float(valid.std()) - 1) < 1e-4
    assert torch.all(adv[~mask.bool()] == 0)


def test_a_stack_of_tasks_gives_each_tasks_own_advantages():
    """The shard's tasks go through at once; each keeps its own baseline and normalisation."""
    g = torch.Generator().manual_seed(3)
    obs, rewards = torch.randn(3, 4, 9, 2, generator=g), torch.randn(3, 4, 9, generator=g) * 5
    mask = torch.ones(3, 4, 9)
    mask[1, 2, 6:] = 0
    rewards = rewards * mask
    stacked = advantages(obs, rewards, mask, 0.99, 0.97)
    for i in range(3):
        alone = advantages(obs[i], rewards[i], mask[i], 0.99, 0.97)
        torch.testing.assert_close(stacked[i], alone, rtol=1e-5, atol=1e-5)
