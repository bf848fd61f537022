"""Prototypical Networks (Snell et al. 2017): embed the support set, average each class
into a prototype, classify queries by negative squared distance to the prototypes.

Nothing is adapted: `adapt` returns the parameters unchanged, so pre- and post-adaptation
scores coincide; the support set enters through `predict`."""

import torch

from distmeta.algorithms.core import Algorithm


class ProtoNet(Algorithm):
    kinds = ("classification",)
    needs_head = False

    def adapt(self, meta, buffers, support, problem, cfg, steps, start=None):
        return meta

    def predict(self, params, buffers, support, x, problem):
        support_x, support_y = support
        n_support = support_x.shape[0]
        # One forward over support and query together: BatchNorm sees both, as in the paper.
        embedded = problem.forward(params, buffers, torch.cat([support_x, x]))
        support_z, query_z = embedded[:n_support], embedded[n_support:]
        # A comparison, not F.one_hot: one_hot reads tensor values, which vmap forbids.
        classes = torch.arange(problem.n_classes, device=support_y.device)
        onehot = (support_y[:, None] == classes).to(support_z.dtype)
        prototypes = (onehot.T @ support_z) / onehot.sum(0)[:, None]
        return -((query_z[:, None, :] - prototypes[None]) ** 2).sum(-1)
