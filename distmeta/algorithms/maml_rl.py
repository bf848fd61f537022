"""MAML-RL (Finn et al. 2017, sec. 5.3) with ProMP's estimators (Rothfuss et al. 2019).

A task's data is fixed-horizon trajectory batches sampled by the worker (`distmeta.rl`):
`support` holds one batch per inner step (batch s sampled with the policy after s steps),
`query` the batch sampled with the adapted policy. Each batch is a dict of tensors
`obs (E, T, obs_dim)`, `actions`, `mask (E, T)`, `advantages` (normalised GAE, constant),
`logp_old` (log-probabilities under the policy that sampled it) and `dist_old` (that
policy's action distribution at each step).

Inner step: vanilla policy gradient, written as ProMP's low-variance curvature (LVC)
objective `mean(pi/pi_old * A)`, whose gradient at the sampling policy is the usual
`mean(grad log pi * A)` and whose second derivative carries the sampling-distribution term
that `mean(log pi * A)` would drop. Outer objective: PPO's clipped surrogate on the query
batch, differentiated through the inner steps (`first_order` drops those second-order terms).
With `rl.outer_steps > 1` the learner takes several outer steps on one sampled meta-batch, and
the ratios to `logp_old` make both objectives importance-weighted, as in ProMP. ProMP's
inner KL penalty joins the outer objective then: for each inner step s, a coefficient c_s
times the mean KL between the policy that sampled support batch s and the current policy
adapted s steps, on that batch; the learner adapts c_s to the KL (`rl.inner_kl_target`).
At the first outer step both policies are the same, the KL is at its minimum and its
gradient zero, so with one outer step the penalty is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.func import grad

from distmeta.algorithms.core import Algorithm, Params, inner_sgd
from distmeta.config import AlgorithmConfig, RLConfig
from distmeta.rl.policy import Policy

BATCH_KEYS = ("obs", "actions", "mask", "advantages", "logp_old", "dist_old")


@dataclass(frozen=True)
class RLProblem:
    """The policy used as a pure function of its parameters, the RL settings and ProMP's
    inner KL coefficients (one per inner step; None: no KL penalty)."""

    policy: Policy
    rl: RLConfig
    kl_coeffs: Tensor | None = None


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def inner_loss(policy: Policy, params: Params, batch: dict[str, Tensor]) -> Tensor:
    """Minus the LVC policy-gradient objective of one trajectory batch."""
    logp = policy.log_prob(params, batch["obs"], batch["actions"])
    ratio = torch.exp(logp - batch["logp_old"])
    return -_masked_mean(ratio * batch["advantages"], batch["mask"])


def inner_kl(policy: Policy, params: Params, batch: dict[str, Tensor]) -> Tensor:
    """Mean KL(sampling policy || policy at `params`) over a trajectory batch's steps."""
    return _masked_mean(policy.kl(batch["dist_old"], params, batch["obs"]), batch["mask"])


def outer_loss(policy: Policy, params: Params, batch: dict[str, Tensor], clip: float) -> Tensor:
    """Minus PPO's clipped surrogate of the (adapted) policy on a trajectory batch."""
    logp = policy.log_prob(params, batch["obs"], batch["actions"])
    ratio = torch.exp(logp - batch["logp_old"])
    adv = batch["advantages"]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    return -_masked_mean(surrogate, batch["mask"])


def adapt_kl_coeffs(coeffs: np.ndarray, kls: np.ndarray, target: float) -> np.ndarray:
    """ProMP's update of the inner KL coefficients after an iteration: halved where the KL
    is under target / 1.5, doubled where it is over 1.5 x target."""
    return np.where(kls < target / 1.5, coeffs / 2, np.where(kls > target * 1.5, coeffs * 2, coeffs))


def split_task(task: dict[str, Tensor], phase: str) -> dict[str, Tensor]:
    """The `support_*` or `query_*` tensors of a task, without the prefix."""
    return {k: task[f"{phase}_{k}"] for k in BATCH_KEYS}


class MAMLRL(Algorithm):
    kinds = ("rl",)

    def adapt(self, meta: Params, buffers: Params, support: dict[str, Tensor],
              problem: RLProblem, cfg: AlgorithmConfig, steps: int, start: dict | None = None) -> Params:
        """`steps` policy-gradient steps, step s on the s-th batch of `support`."""
        lrs = {k: cfg.inner_lr for k in meta}

        def loss_at(params: Params, step: int) -> tuple[Tensor, dict]:
            return inner_loss(problem.policy, params, {k: v[step] for k, v in support.items()}), {}

        return inner_sgd(meta, lrs, loss_at, steps, cfg.first_order, start)

    def task_grad(self, meta: Params, buffers: Params, task: dict[str, Tensor],
                  problem: RLProblem, cfg: AlgorithmConfig) -> tuple[Params, dict[str, Tensor]]:
        support, query = split_task(task, "support"), split_task(task, "query")
        steps = support["obs"].shape[0]
        coeffs = problem.kl_coeffs

        def objective(m):
            if coeffs is None:
                adapted = self.adapt(m, buffers, support, problem, cfg, steps)
                loss = outer_loss(problem.policy, adapted, query, problem.rl.clip)
                return loss, {"post_loss": loss.detach()}
            adapted, kl = self.adapt_with_kls(m, support, problem, cfg)
            loss = outer_loss(problem.policy, adapted, query, problem.rl.clip)
            return loss + (coeffs * kl).mean(), {"post_loss": loss.detach(), "inner_kl": kl.detach()}

        return grad(objective, has_aux=True)(meta)

    def adapt_with_kls(self, meta: Params, support: dict[str, Tensor], problem: RLProblem,
                       cfg: AlgorithmConfig) -> tuple[Params, Tensor]:
        """`adapt` one step at a time, and ProMP's inner KL of each step: on support batch
        s, between the policy that sampled it and `meta` adapted s steps."""
        adapted, kls = meta, []
        for s in range(support["obs"].shape[0]):
            kls.append(inner_kl(problem.policy, adapted, {k: v[s] for k, v in support.items()}))
            adapted = self.adapt(adapted, {}, {k: v[s:s + 1] for k, v in support.items()}, problem, cfg, 1)
        return adapted, torch.stack(kls)

    def inner_kls(self, meta: Params, task: dict[str, Tensor], problem: RLProblem,
                  cfg: AlgorithmConfig) -> Tensor:
        """ProMP's inner KL of each inner step at `meta` (after the iteration's outer steps:
        what the learner adapts the coefficients to)."""
        return self.adapt_with_kls(meta, split_task(task, "support"), problem, cfg)[1].detach()
