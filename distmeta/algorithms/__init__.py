"""Meta-learning algorithms as pure functions of (parameters, task) via `torch.func`.

One module per algorithm; `ALGORITHMS` maps `algorithm.name` to it, and each says which
task kinds it learns (`Algorithm.kinds`). No Ray here."""

from distmeta.algorithms.anil import ANIL
from distmeta.algorithms.core import (
    Algorithm,
    Problem,
    evaluate_shard,
    inner_sgd,
    shard_meta_grad,
    support_loss,
    task_scores,
)
from distmeta.algorithms.maml import MAML
from distmeta.algorithms.maml_rl import MAMLRL
from distmeta.algorithms.metasgd import MetaSGD
from distmeta.algorithms.protonet import ProtoNet
from distmeta.algorithms.reptile import Reptile

ALGORITHMS: dict[str, Algorithm] = {
    "maml": MAML(),
    "metasgd": MetaSGD(),
    "anil": ANIL(),
    "reptile": Reptile(),
    "protonet": ProtoNet(),
    "maml_rl": MAMLRL(),
}

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Problem",
    "evaluate_shard",
    "inner_sgd",
    "shard_meta_grad",
    "support_loss",
    "task_scores",
]
