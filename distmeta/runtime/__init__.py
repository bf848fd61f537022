"""The distributed runtime: the driver (`MetaLearner`), its workers, checkpoints, eval."""

from distmeta.runtime.evaluate import evaluate
from distmeta.runtime.learner import MetaLearner, split_shards
from distmeta.runtime.worker import ShardRunner

__all__ = ["MetaLearner", "ShardRunner", "evaluate", "split_shards"]
