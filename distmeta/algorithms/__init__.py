"""Meta-learning algorithms as pure functions of (parameters, task) via `torch.func`.

One module per algorithm; `ALGORITHMS` maps `algorithm.name` to it. No Ray here."""

from distmeta.algorithms.anil import ANIL
from distmeta.algorithms.core import (
    Algorithm,
    Problem,
    evaluate_shard,
    sgd_adapt,
    shard_meta_grad,
    task_scores,
)
from distmeta.algorithms.maml import MAML
from distmeta.algorithms.metasgd import MetaSGD
from distmeta.algorithms.protonet import ProtoNet
from distmeta.algorithms.reptile import Reptile

ALGORITHMS: dict[str, Algorithm] = {
    "maml": MAML(),
    "metasgd": MetaSGD(),
    "anil": ANIL(),
    "reptile": Reptile(),
    "protonet": ProtoNet(),
}

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Problem",
    "evaluate_shard",
    "sgd_adapt",
    "shard_meta_grad",
    "task_scores",
]
