"""distmeta: distributed meta-learning on Ray.

The public nouns: `Config` (one typed run config), `TaskFamily` (where tasks come from),
`Algorithm` (pure functions of parameters and tasks), `MetaLearner` (the driver that shards
task batches over Ray adaptation workers), `evaluate`, and for meta-RL `adapt_policy` (a
meta-trained policy adapted to one task; `AdaptedPolicy` loads what it saves)."""

from distmeta.algorithms import ALGORITHMS, Algorithm
from distmeta.config import Config, load_config
from distmeta.errors import ConfigError, RunError, UserError
from distmeta.runtime import AdaptedPolicy, MetaLearner, adapt_policy, evaluate
from distmeta.tasks import TaskFamily

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "AdaptedPolicy",
    "Algorithm",
    "Config",
    "ConfigError",
    "MetaLearner",
    "RunError",
    "TaskFamily",
    "UserError",
    "adapt_policy",
    "evaluate",
    "load_config",
]
