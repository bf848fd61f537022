"""The runtime: the driver (`MetaLearner`), where its shards run (`executors`, the Ray
`WorkerPool`), the run directory, checkpoints, evaluation (`distmeta.runtime.evaluate`)
and policy adaptation.

Names are imported on first use: a worker process that imports only the pool's side of
the runtime (its channel, the grouped adds) loads neither torch nor the learner."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distmeta.lazy import lazy_names

_LAZY = {
    "AdaptedPolicy": "distmeta.runtime.adapt",
    "adapt_policy": "distmeta.runtime.adapt",
    "MetaLearner": "distmeta.runtime.learner",
    "split_shards": "distmeta.runtime.learner",
}

if TYPE_CHECKING:
    from distmeta.runtime.adapt import AdaptedPolicy, adapt_policy
    from distmeta.runtime.learner import MetaLearner, split_shards

__getattr__ = lazy_names(__name__, _LAZY)


__all__ = ["AdaptedPolicy", "MetaLearner", "adapt_policy", "split_shards"]
