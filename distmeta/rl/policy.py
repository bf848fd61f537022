"""Stochastic MLP policies as pure functions of parameter dicts.

Like the supervised models, a policy module is never cloned or mutated: it defines the
parameters' names, shapes and initialisation, while the parameters themselves live in dicts
(meta-parameters, per-task adapted parameters) and are passed in. Sampling takes
its noise as an argument, so a task's trajectories depend only on the task's own noise
stream, never on which other tasks share the worker.

Parameter names: `body.{0,2,...}.weight/bias` (tanh hidden layers), `head.weight/bias`
(Gaussian mean or categorical logits) and, for Gaussian policies, `log_std` (one
state-independent log standard deviation per action dimension).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

Params = dict[str, Tensor]
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class _MLPPolicy(nn.Module):
    def __init__(self, obs_dim: int, hidden_sizes: tuple[int, ...], out_dim: int):
        super().__init__()
        layers, width = [], obs_dim
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, out_dim)
        self.n_hidden = len(hidden_sizes)

    def forward(self, obs: Tensor) -> Tensor:
        return self.head(self.body(obs))

    def out(self, params: Params, obs: Tensor) -> Tensor:
        """`forward` under `params`, written out: sampling calls it once per task and env
        step, where `functional_call`'s module bookkeeping cost more than the layers."""
        x = obs
        for i in range(self.n_hidden):
            x = torch.tanh(F.linear(x, params[f"body.{2 * i}.weight"], params[f"body.{2 * i}.bias"]))
        return F.linear(x, params["head.weight"], params["head.bias"])

    def task_layers(self, params: Params) -> list[tuple[Tensor, Tensor]]:
        """The layers of several tasks (parameters stacked on a leading task axis) as
        `out_tasks` takes them: (bias (tasks, 1, out), weight transposed (tasks, in, out))."""
        names = [f"body.{2 * i}" for i in range(self.n_hidden)] + ["head"]
        return [(params[f"{n}.bias"].unsqueeze(1), params[f"{n}.weight"].transpose(1, 2)) for n in names]

    def out_tasks(self, layers: list[tuple[Tensor, Tensor]], obs: Tensor) -> Tensor:
        """`out` for several tasks at once, `layers` from `task_layers`, `obs` (tasks, n,
        obs_dim): one batched matmul per layer, each task's slice computed from that task's
        parameters and observations alone."""
        x = obs
        for bias, weight in layers[:-1]:
            x = torch.tanh(torch.baddbmm(bias, x, weight))
        bias, weight = layers[-1]
        return torch.baddbmm(bias, x, weight)


class GaussianMLPPolicy(_MLPPolicy):
    """Continuous actions: a ~ N(mlp(obs), exp(log_std)^2), independent per dimension."""

    discrete = False

    def __init__(self, obs_dim: int, hidden_sizes: tuple[int, ...], act_dim: int,
                 init_log_std: float = 0.0):
        super().__init__(obs_dim, hidden_sizes, act_dim)
        self.act_dim = act_dim
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def noise(self, generator: torch.Generator | None, shape: tuple[int, ...]) -> Tensor:
        return torch.randn(*shape, self.act_dim, generator=generator)

    def sample(self, params: Params, obs: Tensor, noise: Tensor) -> Tensor:
        return self.out(params, obs) + params["log_std"].exp() * noise

    def task_noise(self, params: Params, noise: Tensor) -> Tensor:
        """Noise `(tasks, ...)` of several tasks as `action_from` adds it to the network's
        output: scaled by each task's standard deviation, once for a whole rollout."""
        std = params["log_std"].exp()
        return std.reshape(std.shape[0], *[1] * (noise.dim() - 2), std.shape[-1]) * noise

    def action_from(self, out: Tensor, task_noise: Tensor) -> Tensor:
        return out + task_noise

    def mode(self, params: Params, obs: Tensor) -> Tensor:
        return self.out(params, obs)

    def log_prob(self, params: Params, obs: Tensor, actions: Tensor) -> Tensor:
        return self.log_prob_of(params, self.out(params, obs), actions)

    def log_prob_of(self, params: Params, out: Tensor, actions: Tensor) -> Tensor:
        """`log_prob` from the network's output `out` for these observations."""
        log_std = params["log_std"]
        z = (actions - out) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(-1)

    def dist_of(self, params: Params, out: Tensor) -> Tensor:
        """The action distribution at each step, from the network's output `out`: means and
        log standard deviations side by side (what `kl` takes as the old distribution)."""
        return torch.cat([out, params["log_std"].expand_as(out)], -1)

    def kl(self, dist_old: Tensor, params: Params, obs: Tensor) -> Tensor:
        """KL(old || policy at `params`) at each step, exactly (diagonal Gaussians)."""
        mean_old, log_std_old = dist_old.chunk(2, -1)
        mean, log_std = self.out(params, obs), params["log_std"]
        ratio = (torch.exp(2 * log_std_old) + (mean_old - mean).square()) * torch.exp(-2 * log_std)
        return (log_std - log_std_old + 0.5 * ratio - 0.5).sum(-1)


class CategoricalMLPPolicy(_MLPPolicy):
    """Discrete actions: a ~ Categorical(softmax(mlp(obs))), sampled by Gumbel-max."""

    discrete = True

    def __init__(self, obs_dim: int, hidden_sizes: tuple[int, ...], n_actions: int):
        super().__init__(obs_dim, hidden_sizes, n_actions)
        self.n_actions = n_actions

    def noise(self, generator: torch.Generator | None, shape: tuple[int, ...]) -> Tensor:
        u = torch.rand(*shape, self.n_actions, generator=generator)
        return -torch.log(-torch.log(u.clamp_min(1e-12)))  # Gumbel(0, 1)

    def sample(self, params: Params, obs: Tensor, noise: Tensor) -> Tensor:
        return (self.out(params, obs) + noise).argmax(-1)

    def task_noise(self, params: Params, noise: Tensor) -> Tensor:
        """Noise of several tasks as `action_from` adds it (Gumbel noise is used as is)."""
        return noise

    def action_from(self, out: Tensor, task_noise: Tensor) -> Tensor:
        return (out + task_noise).argmax(-1)

    def mode(self, params: Params, obs: Tensor) -> Tensor:
        return self.out(params, obs).argmax(-1)

    def log_prob(self, params: Params, obs: Tensor, actions: Tensor) -> Tensor:
        return self.log_prob_of(params, self.out(params, obs), actions)

    def log_prob_of(self, params: Params, out: Tensor, actions: Tensor) -> Tensor:
        """`log_prob` from the network's output `out` (the logits) for these observations."""
        logp = torch.log_softmax(out, -1)
        return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def dist_of(self, params: Params, out: Tensor) -> Tensor:
        """The action distribution at each step: the logits `out`."""
        return out

    def kl(self, dist_old: Tensor, params: Params, obs: Tensor) -> Tensor:
        """KL(old || policy at `params`) at each step, exactly (categoricals)."""
        logp_old = torch.log_softmax(dist_old, -1)
        logp = torch.log_softmax(self.out(params, obs), -1)
        return (logp_old.exp() * (logp_old - logp)).sum(-1)


Policy = GaussianMLPPolicy | CategoricalMLPPolicy


def make_policy(observation_space: gym.Space, action_space: gym.Space,
                hidden_sizes: tuple[int, ...], init_log_std: float = 0.0) -> Policy:
    """The policy for an environment's spaces: Gaussian for `Box`, categorical for
    `Discrete` actions; flat `Box` observations."""
    obs_dim = int(np.prod(observation_space.shape))  # type: ignore[arg-type]
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalMLPPolicy(obs_dim, hidden_sizes, int(action_space.n))
    act_dim = int(np.prod(action_space.shape))  # type: ignore[arg-type]
    return GaussianMLPPolicy(obs_dim, hidden_sizes, act_dim, init_log_std)
