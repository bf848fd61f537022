"""Advantages for policy gradients: discounted returns, the linear feature baseline of
Duan et al. (2016) used by MAML-RL and ProMP, and GAE. On batches of fixed-horizon
episodes `(..., E, T)` whose `mask` is 0 after an episode ended; leading axes are tasks,
each with its own baseline fit and normalisation, so a shard's tasks go through at once."""

from __future__ import annotations

import torch
from torch import Tensor


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """G_t = r_t + gamma * G_{t+1}, zero past each episode's end."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = (rewards[..., t] + gamma * running) * mask[..., t]
        out[..., t] = running
    return out


def baseline_features(obs: Tensor) -> Tensor:
    """[o, o^2, t, t^2, t^3, 1] per step, with t the step index / 100 (as in rllab)."""
    horizon = obs.shape[-2]
    o = obs.clamp(-10, 10)
    t = (torch.arange(horizon, dtype=obs.dtype) / 100.0).expand(obs.shape[:-1])[..., None]
    return torch.cat([o, o * o, t, t**2, t**3, torch.ones_like(t)], dim=-1)


def linear_baseline(obs: Tensor, returns: Tensor, mask: Tensor, reg: float = 1e-5) -> Tensor:
    """Value estimates from a ridge regression of the returns on `baseline_features`, fitted
    per task on its valid steps; the ridge grows tenfold (up to 5 times) while a system is
    singular. Non-finite returns give non-finite values, which the learner reports as a
    diverged meta-gradient."""
    feats = baseline_features(obs.double())
    x = (feats * mask.double()[..., None]).flatten(-3, -2)  # (..., E*T, F), padding rows 0
    y = returns.double().flatten(-2)
    gram, rhs = x.mT @ x, (x.mT @ y[..., None])[..., 0]
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
    for attempt in range(5):
        try:
            coef = torch.linalg.solve(gram + reg * eye, rhs)
            break
        except torch.linalg.LinAlgError:
            if attempt == 4:
                raise
            reg *= 10
    values = (feats.flatten(-3, -2) @ coef[..., None])[..., 0].view(returns.shape)
    return values.to(returns.dtype) * mask


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimates; an episode's end (and the horizon) is terminal."""
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    horizon = rewards.shape[-1]
    for t in range(horizon - 1, -1, -1):
        next_value = values[..., t + 1] * mask[..., t + 1] if t + 1 < horizon else 0.0
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        running = (delta + gamma * lam * running) * mask[..., t]
        adv[..., t] = running
    return adv


def advantages(obs: Tensor, rewards: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """GAE advantages normalised per task (zero mean, unit variance over its valid steps)."""
    values = linear_baseline(obs, discounted_returns(rewards, mask, gamma), mask)
    adv = gae(rewards, values, mask, gamma, lam)
    count = mask.sum((-2, -1), keepdim=True)
    mean = (adv * mask).sum((-2, -1), keepdim=True) / count
    std = (((adv - mean) * mask).square().sum((-2, -1), keepdim=True) / (count - 1)).sqrt()
    return (adv - mean) / (std + 1e-8) * mask
