"""distmeta: distributed meta-learning on Ray.

The public nouns: `Config` (one typed run config; `load_config` reads YAML, presets and
`--set` overrides), `TaskFamily` (where tasks come from), `Algorithm` (pure functions of
parameters and tasks), `Experiment` (a config with what it names, built and checked once),
`MetaLearner` (the driver that shards task batches over Ray adaptation workers),
`evaluate`, `adapt_model` (a supervised meta-trained model adapted to your own examples),
and for meta-RL `adapt_policy` (a meta-trained policy adapted to one task;
`AdaptedPolicy` loads what it saves).

Names are imported on first use, so `import distmeta` (and the CLI's `--help`) loads
neither torch nor Ray."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distmeta.config import Config
from distmeta.errors import ConfigError, DivergedError, RunError, UserError
from distmeta.lazy import lazy_names
from distmeta.loading import load_config

__version__ = "0.1.0"

_LAZY = {
    "ALGORITHMS": "distmeta.algorithms",
    "Algorithm": "distmeta.algorithms",
    "AdaptedPolicy": "distmeta.runtime.adapt",
    "adapt_policy": "distmeta.runtime.adapt",
    "AdaptedModel": "distmeta.runtime.adapt_model",
    "adapt_model": "distmeta.runtime.adapt_model",
    "Experiment": "distmeta.experiment",
    "build_experiment": "distmeta.experiment",
    "MetaLearner": "distmeta.runtime.learner",
    "evaluate": "distmeta.runtime.evaluate",
    "TaskFamily": "distmeta.tasks.base",
}

if TYPE_CHECKING:
    from distmeta.algorithms import ALGORITHMS, Algorithm
    from distmeta.experiment import Experiment, build_experiment
    from distmeta.runtime.adapt import AdaptedPolicy, adapt_policy
    from distmeta.runtime.adapt_model import AdaptedModel, adapt_model
    from distmeta.runtime.evaluate import evaluate
    from distmeta.runtime.learner import MetaLearner
    from distmeta.tasks.base import TaskFamily

__getattr__ = lazy_names(__name__, _LAZY)


__all__ = [
    "ALGORITHMS",
    "AdaptedModel",
    "AdaptedPolicy",
    "Algorithm",
    "Config",
    "ConfigError",
    "DivergedError",
    "Experiment",
    "MetaLearner",
    "RunError",
    "TaskFamily",
    "UserError",
    "adapt_model",
    "adapt_policy",
    "build_experiment",
    "evaluate",
    "load_config",
]
