"""MAML-RL's meta-gradient against plain autograd and finite differences (float64)."""

import dataclasses

import numpy as np
import pytest
import torch

from distmeta.algorithms.core import shard_meta_grad
from distmeta.algorithms.maml_rl import BATCH_KEYS, MAMLRL, RLProblem, adapt_kl_coeffs, inner_loss, outer_loss
from distmeta.config import AlgorithmConfig, RLConfig
from distmeta.rl.policy import CategoricalMLPPolicy, GaussianMLPPolicy


def make_problem(discrete=False):
    torch.manual_seed(0)
    policy = (CategoricalMLPPolicy(3, (5,), 4) if discrete else GaussianMLPPolicy(3, (5,), 2)).double()
    meta = {k: v.detach().clone() for k, v in policy.named_parameters()}
    return RLProblem(policy, RLConfig(clip=0.2)), meta


def make_batch(policy, params, seed, n_episodes=4, horizon=6):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n_episodes, horizon, 3, generator=g, dtype=torch.float64)
    if isinstance(policy, CategoricalMLPPolicy):
        actions = torch.randint(0, 4, (n_episodes, horizon), generator=g)
    else:
        actions = torch.randn(n_episodes, horizon, 2, generator=g, dtype=torch.float64)
    mask = torch.ones(n_episodes, horizon, dtype=torch.float64)
    mask[0, 4:] = 0
    adv = torch.randn(n_episodes, horizon, generator=g, dtype=torch.float64) * mask
    with torch.no_grad():
        out = policy.out(params, obs)
        logp, dist = policy.log_prob_of(params, out, actions), policy.dist_of(params, out)
    return {"obs": obs, "actions": actions, "mask": mask, "advantages": adv, "logp_old": logp, "dist_old": dist}


def make_task(problem, meta, sampled_with=None):
    """One inner step's support batch (sampled with `meta`) and a query batch sampled with the
    adapted policy, in the layout the runner stacks."""
    cfg = AlgorithmConfig(inner_lr=0.3)
    support = make_batch(problem.policy, meta, 1)
    adapted = MAMLRL().adapt(meta, {}, {k: v[None] for k, v in support.items()}, problem, cfg, 1)
    query = make_batch(problem.policy, sampled_with or {k: v.detach() for k, v in adapted.items()}, 2)
    task = {f"support_{k}": support[k][None] for k in BATCH_KEYS}
    task.update({f"query_{k}": query[k] for k in BATCH_KEYS})
    return task, cfg


def objective(problem, cfg, task, params):
    support = {k: task[f"support_{k}"] for k in BATCH_KEYS}
    query = {k: task[f"query_{k}"] for k in BATCH_KEYS}
    adapted = MAMLRL().adapt(params, {}, support, problem, cfg, support["obs"].shape[0])
    return outer_loss(problem.policy, adapted, query, problem.rl.clip)


def autograd_reference(problem, cfg, task, meta):
    """The same meta-gradient with torch.autograd and create_graph, written out by hand."""
    params = {k: v.clone().requires_grad_() for k, v in meta.items()}
    support = {k: task[f"support_{k}"][0] for k in BATCH_KEYS}
    query = {k: task[f"query_{k}"] for k in BATCH_KEYS}
    inner = inner_loss(problem.policy, params, support)
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    adapted = {k: p - cfg.inner_lr * g for (k, p), g in zip(params.items(), grads)}
    outer = outer_loss(problem.policy, adapted, query, problem.rl.clip)
    return dict(zip(params, torch.autograd.grad(outer, list(params.values()))))


@pytest.mark.parametrize("discrete", [False, True])
def test_meta_gradient_matches_autograd_and_finite_differences(discrete):
    problem, meta = make_problem(discrete)
    task, cfg = make_task(problem, meta)
    got, metrics = MAMLRL().task_grad(meta, {}, task, problem, cfg)
    reference = autograd_reference(problem, cfg, task, meta)
    for k in meta:
        torch.testing.assert_close(got[k], reference[k], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(metrics["post_loss"], objective(problem, cfg, task, meta))
    # Central differences along a random direction.
    g = torch.Generator().manual_seed(3)
    direction = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in meta.items()}
    eps = 1e-6
    plus = objective(problem, cfg, task, {k: v + eps * direction[k] for k, v in meta.items()})
    minus = objective(problem, cfg, task, {k: v - eps * direction[k] for k, v in meta.items()})
    numeric = (plus - minus) / (2 * eps)
    analytic = sum((got[k] * direction[k]).sum() for k in meta)
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_inner_step_is_the_vanilla_policy_gradient_at_the_sampling_policy():
    problem, meta = make_problem()
    batch = make_batch(problem.policy, meta, 4)
    params = {k: v.clone().requires_grad_() for k, v in meta.items()}
    logp = problem.policy.log_prob(params, batch["obs"], batch["actions"])
    vpg = -(logp * batch["advantages"] * batch["mask"]).sum() / batch["mask"].sum()
    expected = torch.autograd.grad(vpg, list(params.values()))
    got = torch.func.grad(lambda p: inner_loss(problem.policy, p, batch))(meta)
    for k, e in zip(meta, expected):
        torch.testing.assert_close(got[k], e)


def test_first_order_is_the_outer_gradient_at_the_adapted_parameters():
    problem, meta = make_problem()
    task, _ = make_task(problem, meta)
    fo = AlgorithmConfig(inner_lr=0.3, first_order=True)
    got, _ = MAMLRL().task_grad(meta, {}, task, problem, fo)
    support = {k: task[f"support_{k}"] for k in BATCH_KEYS}
    adapted = {k: v.detach() for k, v in MAMLRL().adapt(meta, {}, support, problem, fo, 1).items()}
    query = {k: task[f"query_{k}"] for k in BATCH_KEYS}
    expected = torch.func.grad(lambda p: outer_loss(problem.policy, p, query, 0.2))(adapted)
    second, _ = MAMLRL().task_grad(meta, {}, task, problem, AlgorithmConfig(inner_lr=0.3))
    for k in meta:
        torch.testing.assert_close(got[k], expected[k])
    assert any(not torch.allclose(second[k], got[k]) for k in meta)


def test_clipping_stops_the_gradient_of_far_moved_ratios():
    """Query data sampled by a policy far from the adapted one: the clipped surrogate has
    zero gradient where the ratio left [1 - clip, 1 + clip] in the improving direction."""
    problem, meta = make_problem()
    far = {k: v + 3.0 for k, v in meta.items()}
    task, cfg = make_task(problem, meta, sampled_with=far)
    query = {k: task[f"query_{k}"] for k in BATCH_KEYS}
    support = {k: task[f"support_{k}"] for k in BATCH_KEYS}
    adapted = {k: v.detach() for k, v in MAMLRL().adapt(meta, {}, support, problem, cfg, 1).items()}
    ratio = torch.exp(problem.policy.log_prob(adapted, query["obs"], query["actions"]) - query["logp_old"])
    adv = query["advantages"]
    clipped = ((ratio > 1.2) & (adv > 0)) | ((ratio < 0.8) & (adv < 0))
    assert clipped.any()
    only_clipped = dict(query, mask=query["mask"] * clipped)
    g = torch.func.grad(lambda p: outer_loss(problem.policy, p, only_clipped, 0.2))(adapted)
    assert all(torch.count_nonzero(v) == 0 for v in g.values())


def test_vmap_over_tasks_equals_the_loop():
    problem, meta = make_problem()
    tasks = [make_task(problem, {k: v + 0.1 * i for k, v in meta.items()})[0] for i in range(3)]
    stacked = {k: torch.stack([t[k] for t in tasks]) for k in tasks[0]}
    cfg = AlgorithmConfig(inner_lr=0.3)
    by_vmap, m1 = shard_meta_grad(MAMLRL(), meta, {}, stacked, problem, cfg, "vmap")
    by_loop, m2 = shard_meta_grad(MAMLRL(), meta, {}, stacked, problem, cfg, "loop")
    for k in meta:
        torch.testing.assert_close(by_vmap[k], by_loop[k])
    torch.testing.assert_close(m1["post_loss"], m2["post_loss"])


@pytest.mark.parametrize("discrete", [False, True])
def test_policy_kl_is_torch_distributions_kl(discrete):
    problem, meta = make_problem(discrete)
    policy = problem.policy
    new = {k: v + 0.1 * torch.randn_like(v) for k, v in meta.items()}
    batch = make_batch(policy, meta, 5)
    obs = batch["obs"]
    if discrete:
        old_d = torch.distributions.Categorical(logits=policy.out(meta, obs))
        new_d = torch.distributions.Categorical(logits=policy.out(new, obs))
        expected = torch.distributions.kl_divergence(old_d, new_d)
    else:
        old_d = torch.distributions.Normal(policy.out(meta, obs), meta["log_std"].exp())
        new_d = torch.distributions.Normal(policy.out(new, obs), new["log_std"].exp())
        expected = torch.distributions.kl_divergence(old_d, new_d).sum(-1)
    torch.testing.assert_close(policy.kl(batch["dist_old"], new, obs), expected)
    assert policy.kl(batch["dist_old"], meta, obs).abs().max() < 1e-12


def promp_reference(problem, cfg, task, meta, coeffs):
    """ProMP's outer objective and its gradient with torch.autograd, written out by hand:
    the clipped surrogate after the inner steps plus the mean over inner steps s of
    coeffs[s] x the masked mean of KL(the policy that sampled support batch s || the policy
    adapted s steps), the KLs from torch.distributions."""
    params = {k: v.clone().requires_grad_() for k, v in meta.items()}
    policy = problem.policy
    adapted, penalty = params, 0.0
    steps = task["support_obs"].shape[0]
    for s in range(steps):
        batch = {k: task[f"support_{k}"][s] for k in BATCH_KEYS}
        mean_old, log_std_old = batch["dist_old"].chunk(2, -1)
        old_d = torch.distributions.Normal(mean_old, log_std_old.exp())
        new_d = torch.distributions.Normal(policy.out(adapted, batch["obs"]), adapted["log_std"].exp())
        kl = torch.distributions.kl_divergence(old_d, new_d).sum(-1)
        penalty = penalty + coeffs[s] * (kl * batch["mask"]).sum() / batch["mask"].sum() / steps
        inner = inner_loss(policy, adapted, batch)
        grads = torch.autograd.grad(inner, list(adapted.values()), create_graph=True)
        adapted = {k: p - cfg.inner_lr * g for (k, p), g in zip(adapted.items(), grads)}
    query = {k: task[f"query_{k}"] for k in BATCH_KEYS}
    total = outer_loss(policy, adapted, query, problem.rl.clip) + penalty
    return dict(zip(params, torch.autograd.grad(total, list(params.values()))))


def two_step_task(problem, sampled_with):
    task = {f"support_{k}": torch.stack([make_batch(problem.policy, sampled_with, seed)[k] for seed in (1, 2)])
            for k in BATCH_KEYS}
    task.update({f"query_{k}": v for k, v in make_batch(problem.policy, sampled_with, 3).items()})
    return task


def test_promp_kl_penalty_matches_a_hand_written_reference():
    """At a later outer step (the meta-parameters moved since they sampled the episodes),
    with two inner steps and a coefficient per step."""
    problem, sampler = make_problem()
    task = two_step_task(problem, sampler)
    g = torch.Generator().manual_seed(7)
    meta = {k: v + 0.05 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in sampler.items()}
    cfg = AlgorithmConfig(inner_lr=0.3, inner_steps=2)
    coeffs = torch.tensor([0.5, 2.0], dtype=torch.float64)
    got, metrics = MAMLRL().task_grad(meta, {}, task, dataclasses.replace(problem, kl_coeffs=coeffs), cfg)
    reference = promp_reference(problem, cfg, task, meta, coeffs)
    for k in meta:
        torch.testing.assert_close(got[k], reference[k], rtol=1e-9, atol=1e-12)
    without, _ = MAMLRL().task_grad(meta, {}, task, problem, cfg)
    assert any(not torch.allclose(without[k], got[k]) for k in meta)  # the penalty counts here
    kls = MAMLRL().inner_kls(meta, task, problem, cfg)
    torch.testing.assert_close(metrics["inner_kl"], kls)
    assert kls.shape == (2,) and (kls > 0).all()


def test_promp_penalty_has_no_gradient_at_the_sampling_policy():
    """The first outer step: the policy that sampled is the current one (for every inner
    step), so the KL is at its minimum and the penalty changes nothing."""
    problem, meta = make_problem()
    cfg = AlgorithmConfig(inner_lr=0.3)
    task, _ = make_task(problem, meta)
    with_penalty, metrics = MAMLRL().task_grad(meta, {}, task, dataclasses.replace(
        problem, kl_coeffs=torch.tensor([5.0], dtype=torch.float64)), cfg)
    without, _ = MAMLRL().task_grad(meta, {}, task, problem, cfg)
    for k in meta:
        torch.testing.assert_close(with_penalty[k], without[k], rtol=1e-9, atol=1e-12)
    assert metrics["inner_kl"].abs().max() < 1e-12


def test_kl_coefficients_follow_promps_rule():
    coeffs = np.array([0.01, 0.01, 0.01])
    kls = np.array([0.001, 0.01, 0.02])  # under target / 1.5, inside, over 1.5 x target
    assert adapt_kl_coeffs(coeffs, kls, 0.01).tolist() == [0.005, 0.01, 0.02]
