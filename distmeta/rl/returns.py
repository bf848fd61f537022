"""Advantages for policy gradients: discounted returns, the linear feature baseline of
Duan et al. (2016) used by MAML-RL and ProMP, and GAE. Per task, on one batch of
fixed-horizon episodes `(E, T)` whose `mask` is 0 after an episode ended."""

from __future__ import annotations

import torch
from torch import Tensor


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """G_t = r_t + gamma * G_{t+1}, zero past each episode's end."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = (rewards[:, t] + gamma * running) * mask[:, t]
        out[:, t] = running
    return out


def baseline_features(obs: Tensor) -> Tensor:
    """[o, o^2, t, t^2, t^3, 1] per step, with t the step index / 100 (as in rllab)."""
    n_episodes, horizon = obs.shape[:2]
    o = obs.reshape(n_episodes, horizon, -1).clamp(-10, 10)
    t = (torch.arange(horizon, dtype=obs.dtype) / 100.0).expand(n_episodes, horizon)[..., None]
    return torch.cat([o, o * o, t, t**2, t**3, torch.ones_like(t)], dim=-1)


def linear_baseline(obs: Tensor, returns: Tensor, mask: Tensor, reg: float = 1e-5) -> Tensor:
    """Value estimates from a ridge regression of the returns on `baseline_features`, fitted
    on this batch's valid steps; the ridge grows tenfold (up to 5 times) while the system is
    singular. Non-finite returns give non-finite values, which the learner reports as a
    diverged meta-gradient."""
    feats = baseline_features(obs.double())
    valid = mask.bool()
    x, y = feats[valid], returns.double()[valid]
    gram, rhs = x.T @ x, x.T @ y
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    for attempt in range(5):
        try:
            coef = torch.linalg.solve(gram + reg * eye, rhs)
            break
        except torch.linalg.LinAlgError:
            if attempt == 4:
                raise
            reg *= 10
    return (feats @ coef).to(returns.dtype) * mask


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimates; an episode's end (and the horizon) is terminal."""
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    horizon = rewards.shape[1]
    for t in range(horizon - 1, -1, -1):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < horizon else 0.0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        adv[:, t] = running
    return adv


def advantages(obs: Tensor, rewards: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Normalised (zero mean, unit variance over valid steps) GAE advantages."""
    values = linear_baseline(obs, discounted_returns(rewards, mask, gamma), mask)
    adv = gae(rewards, values, mask, gamma, lam)
    valid = mask.bool()
    mean, std = adv[valid].mean(), adv[valid].std()
    return (adv - mean) / (std + 1e-8) * mask
