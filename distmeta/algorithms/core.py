"""What every algorithm shares: the model as a pure function, the per-task contract, and
the two ways to run it over a shard of tasks (`vmap` over the task axis, or a loop).

A task is a dict `support_x, support_y, query_x, query_y` (see `distmeta.tasks.base`); a
task batch has a leading task axis. Parameters are dicts of tensors; nothing here touches
Ray, files or optimisers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from distmeta.config import AlgorithmConfig

if TYPE_CHECKING:
    from distmeta.algorithms.maml_rl import RLProblem

Params = dict[str, Tensor]
Task = dict[str, Tensor]
Batching = Literal["vmap", "loop"]


@dataclass(frozen=True)
class Problem:
    """A model used as a pure function of its parameters, and its task family's loss."""

    model: nn.Module
    loss: Callable[[Tensor, Tensor], Tensor]
    """The scalar task loss of (predictions, targets): `TaskFamily.loss`."""
    scores: Callable[[Tensor, Tensor], dict[str, Tensor]]
    """The query metrics of (predictions, targets), `loss` among them: `TaskFamily.scores`."""
    n_classes: int = 0
    """Classes per task, for classification."""

    def forward(self, params: Params, buffers: Params, x: Tensor) -> Tensor:
        return functional_call(self.model, (params, buffers), (x,))


class Algorithm:
    """One meta-learning algorithm as pure functions of (meta-parameters, task).

    `adapt` is the one adaptation used by meta-training and evaluation alike. The default
    `task_grad` differentiates the post-adaptation query loss through `adapt` with
    `torch.func.grad` (second order unless the algorithm drops those terms)."""

    kinds: tuple[str, ...] = ("regression", "classification")
    """The task kinds (`TaskFamily.kind`) it learns."""
    needs_head: bool = True
    """Whether the model ends in an output layer (`head`); False for embedding models."""

    def init(self, model_params: Params, cfg: AlgorithmConfig) -> Params:
        """The meta-parameters: the model's, plus any the algorithm learns besides."""
        return dict(model_params)

    def model_params(self, meta: Params) -> Params:
        """The model's parameters among the meta-parameters."""
        return meta

    # `support` and `problem` are Any: a supervised algorithm takes `(x, y)` and a `Problem`,
    # MAML-RL its trajectory batches and an `RLProblem`.
    def adapt(self, meta: Params, buffers: Params, support: Any,
              problem: Any, cfg: AlgorithmConfig, steps: int, start: dict | None = None) -> Params:
        """Model parameters adapted to the support set `(x, y)` in `steps` steps.

        `start`, when a dict, receives `start["outputs"]`: the model's outputs on the support
        set at the meta-parameters, which the first inner step computes anyway (training's
        pre-adaptation scores come from them at no cost). An algorithm with no inner loop
        leaves it empty."""
        raise NotImplementedError

    def predict(self, params: Params, buffers: Params, support: tuple[Tensor, Tensor],
                x: Tensor, problem: Problem) -> Tensor:
        """Outputs for `x` under (adapted) model parameters; the support set is there for
        algorithms whose prediction uses it (ProtoNets' prototypes)."""
        return problem.forward(params, buffers, x)

    def task_grad(self, meta: Params, buffers: Params, task: Task, problem: Any,
                  cfg: AlgorithmConfig) -> tuple[Params, dict[str, Tensor]]:
        """The meta-gradient of one task, and its metrics."""

        def objective(m):
            post, pre = task_scores(self, m, buffers, task, problem, cfg, cfg.inner_steps, pre_on="support")
            return post["loss"], pair_metrics(pre, post)

        return grad(objective, has_aux=True)(meta)


def task_scores(algo: Algorithm, meta: Params, buffers: Params, task: Task, problem: Problem,
                cfg: AlgorithmConfig, steps: int, pre_on: Literal["query", "support"] = "query"
                ) -> tuple[dict, dict]:
    """Query scores after adaptation (with gradients) and scores before it: on the query set,
    or with `pre_on="support"` on the support set from the inner loop's first forward, free
    (meta-training's metrics; evaluation scores the query set both times). An algorithm that
    returns the meta-parameters unchanged (ProtoNets, zero steps) scores the same both times."""
    _, post, pre = adapt_and_score(algo, meta, buffers, task, problem, cfg, steps, pre_on)
    return post, pre


def adapt_and_score(algo: Algorithm, meta: Params, buffers: Params, task: Task, problem: Problem,
                    cfg: AlgorithmConfig, steps: int, pre_on: Literal["query", "support"]
                    ) -> tuple[Params, dict, dict]:
    """`task_scores`, with the adapted parameters first."""
    support = (task["support_x"], task["support_y"])
    start: dict = {}
    adapted = algo.adapt(meta, buffers, support, problem, cfg, steps, start=start)
    post = problem.scores(algo.predict(adapted, buffers, support, task["query_x"], problem),
                          task["query_y"])
    with torch.no_grad():
        if adapted is meta:
            pre = {k: v.detach() for k, v in post.items()}
        elif pre_on == "support" and start.get("outputs") is not None:
            pre = problem.scores(start["outputs"], task["support_y"])
        else:
            start_params = algo.model_params(meta)
            pre = problem.scores(algo.predict(start_params, buffers, support, task["query_x"], problem),
                                 task["query_y"])
    return adapted, post, pre


def inner_sgd(params: Params, lrs: Mapping[str, Tensor | float],
              loss_at: Callable[[Params, int], tuple[Tensor, Any]], steps: int, first_order: bool,
              start: dict | None = None) -> Params:
    """The inner loop of every gradient-based algorithm: `steps` SGD steps, step s on
    `loss_at(params, s)`, over the parameters named in `lrs` (each with its own rate).
    `loss_at` returns the loss and the outputs it scored; those of the first step go to
    `start["outputs"]` when `start` is a dict (see `Algorithm.adapt`).

    Differentiable through the steps; `first_order` treats each inner gradient as a
    constant (FOMAML), which drops the second-order terms of the meta-gradient."""
    for step in range(steps):
        trainable = {k: params[k] for k in lrs}
        frozen = {k: v for k, v in params.items() if k not in lrs}
        grads, outputs = grad(lambda t, s=step, f=frozen: loss_at({**f, **t}, s), has_aux=True)(trainable)
        if step == 0 and start is not None:
            start["outputs"] = outputs
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        params = {**params, **{k: params[k] - lrs[k] * grads[k] for k in lrs}}
    return params


def support_loss(problem: Problem, buffers: Params, support: tuple[Tensor, Tensor]
                 ) -> Callable[[Params, int], tuple[Tensor, Tensor]]:
    """The loss on a supervised support set `(x, y)`, the same at every inner step, and the
    (detached) outputs it scored."""
    x, y = support

    def loss_at(params: Params, step: int) -> tuple[Tensor, Tensor]:
        outputs = problem.forward(params, buffers, x)
        return problem.loss(outputs, y), outputs.detach()

    return loss_at


def shard_meta_grad(algo: Algorithm, meta: Params, buffers: Params, tasks: Task,
                    problem: Problem | RLProblem, cfg: AlgorithmConfig, batching: Batching
                    ) -> tuple[Params, dict[str, Tensor]]:
    """Sum over a shard's tasks of the meta-gradient and of each metric."""

    def one(task):
        return algo.task_grad(meta, buffers, task, problem, cfg)

    if batching == "vmap":
        grads, metrics = vmap(one)(tasks)
        return _sum0(grads), _sum0(metrics)
    total_grads, total_metrics = None, None
    for i in range(_n_tasks(tasks)):
        grads, metrics = one({k: v[i] for k, v in tasks.items()})
        total_grads = grads if total_grads is None else _add(total_grads, grads)
        total_metrics = metrics if total_metrics is None else _add(total_metrics, metrics)
    return cast(Params, total_grads), cast("dict[str, Tensor]", total_metrics)


def evaluate_shard(algo: Algorithm, meta: Params, buffers: Params, tasks: Task,
                   problem: Problem, cfg: AlgorithmConfig, steps: int, batching: Batching
                   ) -> dict[str, Tensor]:
    """Per-task pre- and post-adaptation metrics (each of shape (n_tasks,)), no meta-grad."""

    def one(task):
        post, pre = task_scores(algo, meta, buffers, task, problem, cfg, steps)
        return {k: v.detach() for k, v in pair_metrics(pre, post).items()}

    with torch.no_grad():
        if batching == "vmap":
            return vmap(one)(tasks)
        rows = [one({k: v[i] for k, v in tasks.items()}) for i in range(_n_tasks(tasks))]
        return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def pair_metrics(pre: dict, post: dict) -> dict[str, Tensor]:
    out = {f"pre_{k}": v.detach() for k, v in pre.items()}
    out.update({f"post_{k}": v.detach() for k, v in post.items()})
    return out


def _n_tasks(tasks: Task) -> int:
    return next(iter(tasks.values())).shape[0]


def _sum0(d: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.sum(0) for k, v in d.items()}


def _add(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: a[k] + b[k] for k in a}
