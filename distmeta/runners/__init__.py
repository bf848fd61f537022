"""Shard runners: the body of each adaptation worker (a Ray actor) and, with
`num_workers: 0`, of the learner's own process. `ShardRunner` is the protocol;
`SupervisedShardRunner` and `RLShardRunner` are the two kinds, picked for a task family by
`distmeta.experiment.build_experiment`. No Ray here."""

from distmeta.runners.base import FlatLayout, ShardRunner, resolve_device

__all__ = ["FlatLayout", "ShardRunner", "resolve_device"]
