"""Reptile (Nichol et al. 2018): adapt with plain SGD, then move the initialisation
toward the adapted parameters. Its "meta-gradient" is `meta - adapted`, which the outer
optimiser applies like any gradient (SGD with lr 1 jumps to the task average)."""

from distmeta.algorithms.core import Algorithm, adapt_and_score, inner_sgd, pair_metrics, support_loss


class Reptile(Algorithm):
    def adapt(self, meta, buffers, support, problem, cfg, steps, start=None):
        lrs = {k: cfg.inner_lr for k in meta}
        return inner_sgd(meta, lrs, support_loss(problem, buffers, support), steps, True, start)

    def task_grad(self, meta, buffers, task, problem, cfg):
        adapted, post, pre = adapt_and_score(self, meta, buffers, task, problem, cfg, cfg.inner_steps, "support")
        return {k: (meta[k] - adapted[k]).detach() for k in meta}, pair_metrics(pre, post)
