"""MAML-RL's meta-gradient against plain autograd and finite differences (float64)."""

import pytest
import torch

from distmeta.algorithms.core import shard_meta_grad
from distmeta.algorithms.maml_rl import BATCH_KEYS, MAMLRL, RLProblem, inner_loss, outer_loss
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
        logp = policy.log_prob(params, obs, actions)
    return {"obs": obs, "actions": actions, "mask": mask, "advantages": adv, "logp_old": logp}


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
