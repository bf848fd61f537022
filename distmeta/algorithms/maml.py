"""MAML (Finn et al. 2017): learn an initialisation from which a few SGD steps on a
task's support set fit its query set. Second order by default; `first_order` is FOMAML."""

from distmeta.algorithms.core import Algorithm, sgd_adapt


class MAML(Algorithm):
    def adapt(self, meta, buffers, support, problem, cfg, steps):
        lrs = {k: cfg.inner_lr for k in meta}
        return sgd_adapt(meta, lrs, buffers, support, problem, steps, cfg.first_order)
