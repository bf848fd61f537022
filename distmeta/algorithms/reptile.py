"""Reptile (Nichol et al. 2018): train on a task with plain SGD, then move the initialisation
toward the trained parameters. Its "meta-gradient" is `meta - adapted`, which the outer
optimiser applies like any gradient (SGD with lr 1 jumps to the task average).

As in Nichol's code, a training task has no support/query split: all of an episode's
examples are its training data. Each inner step trains on the next mini-batch of them,
`max(classes, examples // steps)` examples with every class in each, cycling through the
examples, so that the steps together see each example about once (Nichol's 1-shot Omniglot:
10 shots per class and 5 steps in training, batches of 10; at test one batch of the 5
support images, repeated for 50 steps; 5-shot: batches of 5). Distinct batches matter:
Reptile's update grows the inner product of gradients on different batches of a task
(their Taylor-series analysis), which is what generalises within it; on one batch repeated
it rewards fitting that batch alone. With the 1-shot support set as every step's batch,
training accuracy fell as training went on and 5-way 1-shot test accuracy was 61.8 %
against 86.8 % now at the same budget (BENCHMARKS.md)."""

import torch
from torch import Tensor

from distmeta.algorithms.core import Algorithm, inner_sgd, pair_metrics


def mini_batches(y: Tensor, n_classes: int, steps: int) -> list[Tensor]:
    """Row indices of each inner step's batch: the examples ordered so that the classes take
    turns (each class's first example, then each one's second, ...; as given for regression),
    cut into batches of `max(n_classes, len(y) // steps)`, wrapping around at the end."""
    n = y.shape[0]
    if n_classes:
        own = y[:, None] == torch.arange(n_classes, device=y.device)
        nth_of_class = ((own.cumsum(0) - 1) * own).sum(1)
        order = torch.argsort(nth_of_class * n_classes + y, stable=True)
    else:
        order = torch.arange(n, device=y.device)
    size = max(n_classes, n // steps, 1)
    return [order[(torch.arange(size, device=y.device) + s * size) % n] for s in range(steps)]


class Reptile(Algorithm):
    def adapt(self, meta, buffers, support, problem, cfg, steps, start=None):
        # No `start` outputs: the first forward sees one batch, reordered, not the support set.
        return self._train(meta, buffers, support, problem, cfg, steps)[0]

    def task_grad(self, meta, buffers, task, problem, cfg):
        examples = (torch.cat([task["support_x"], task["query_x"]]), torch.cat([task["support_y"], task["query_y"]]))
        adapted, first_outputs, first_x, first_y = self._train(meta, buffers, examples, problem, cfg, cfg.inner_steps)
        # The first batch's fit before (from the first step's forward) and after training: a
        # measure of fit, not of generalisation, for one small forward.
        with torch.no_grad():
            post = problem.scores(problem.forward(adapted, buffers, first_x), first_y)
        pre = problem.scores(first_outputs, first_y)
        return {k: (meta[k] - adapted[k]).detach() for k in meta}, pair_metrics(pre, post)

    def _train(self, meta, buffers, examples, problem, cfg, steps):
        """The trained parameters, the first step's outputs, and that step's batch."""
        x, y = examples
        batches = mini_batches(y, problem.n_classes, steps)

        def loss_at(params, step):
            outputs = problem.forward(params, buffers, x[batches[step]])
            return problem.loss(outputs, y[batches[step]]), outputs.detach()

        start: dict = {}
        adapted = inner_sgd(meta, {k: cfg.inner_lr for k in meta}, loss_at, steps, True, start)
        return adapted, start["outputs"], x[batches[0]], y[batches[0]]
