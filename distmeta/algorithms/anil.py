"""ANIL (Raghu et al. 2020): MAML whose inner loop adapts only the model's `head`; the
outer step still updates every parameter."""

from distmeta.algorithms.core import Algorithm, inner_sgd, support_loss


class ANIL(Algorithm):
    def adapt(self, meta, buffers, support, problem, cfg, steps, start=None):
        lrs = {k: cfg.inner_lr for k in meta if k.startswith("head.")}
        return inner_sgd(meta, lrs, support_loss(problem, buffers, support), steps, cfg.first_order, start)
