"""The runtime: the driver (`MetaLearner`), where its shards run (`executors`, the Ray
`WorkerPool`), the run directory, checkpoints, evaluation and policy adaptation."""

from distmeta.runtime.adapt import AdaptedPolicy, adapt_policy
from distmeta.runtime.evaluate import evaluate
from distmeta.runtime.learner import MetaLearner, split_shards

__all__ = ["AdaptedPolicy", "MetaLearner", "adapt_policy", "evaluate", "split_shards"]
