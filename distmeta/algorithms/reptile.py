"""Reptile (Nichol et al. 2018): adapt with plain SGD, then move the initialisation
toward the adapted parameters. Its "meta-gradient" is `meta - adapted`, which the outer
optimiser applies like any gradient (SGD with lr 1 jumps to the task average)."""

from distmeta.algorithms.core import Algorithm, inner_sgd, pair_metrics, support_loss


class Reptile(Algorithm):
    def adapt(self, meta, buffers, support, problem, cfg, steps):
        lrs = {k: cfg.inner_lr for k in meta}
        return inner_sgd(meta, lrs, support_loss(problem, buffers, support), steps, first_order=True)

    def task_grad(self, meta, buffers, task, problem, cfg):
        support = (task["support_x"], task["support_y"])
        adapted = self.adapt(meta, buffers, support, problem, cfg, cfg.inner_steps)
        query_x, query_y = task["query_x"], task["query_y"]
        post = problem.scores(problem.forward(adapted, buffers, query_x), query_y)
        pre = problem.scores(problem.forward(meta, buffers, query_x), query_y)
        return {k: (meta[k] - adapted[k]).detach() for k in meta}, pair_metrics(pre, post)
