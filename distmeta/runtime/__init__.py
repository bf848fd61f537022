"""The distributed runtime: the driver (`MetaLearner`), its workers, checkpoints, eval."""

from distmeta.runtime.adapt import AdaptedPolicy, adapt_policy
from distmeta.runtime.evaluate import evaluate
from distmeta.runtime.learner import MetaLearner, split_shards
from distmeta.runtime.worker import ShardRunner

__all__ = ["AdaptedPolicy", "MetaLearner", "ShardRunner", "adapt_policy", "evaluate", "split_shards"]
