"""Meta-SGD (Li et al. 2017): MAML with a learned inner learning rate per parameter
element, meta-learned beside the initialisation (starting at `inner_lr`)."""

import torch

from distmeta.algorithms.core import Algorithm, inner_sgd, support_loss

LR_PREFIX = "inner_lr:"


class MetaSGD(Algorithm):
    def init(self, model_params, cfg):
        lrs = {LR_PREFIX + k: torch.full_like(v, cfg.inner_lr) for k, v in model_params.items()}
        return {**model_params, **lrs}

    def model_params(self, meta):
        return {k: v for k, v in meta.items() if not k.startswith(LR_PREFIX)}

    def adapt(self, meta, buffers, support, problem, cfg, steps, start=None):
        params = self.model_params(meta)
        lrs = {k: meta[LR_PREFIX + k] for k in params}
        return inner_sgd(params, lrs, support_loss(problem, buffers, support), steps, cfg.first_order, start)
