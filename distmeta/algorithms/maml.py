"""MAML (Finn et al. 2017): learn an initialisation from which a few SGD steps on a
task's support set fit its query set. Second order by default; `first_order` is FOMAML."""

from distmeta.algorithms.core import Algorithm, inner_sgd, support_loss


class MAML(Algorithm):
    def adapt(self, meta, buffers, support, problem, cfg, steps, start=None):
        lrs = {k: cfg.inner_lr for k in meta}
        return inner_sgd(meta, lrs, support_loss(problem, buffers, support), steps, cfg.first_order, start)
