"""Task families: where meta-learning tasks come from."""

from distmeta.config import import_object
from distmeta.errors import ConfigError
from distmeta.tasks.base import SPLITS, TaskFamily, eval_task_rng, train_task_rng

BUILTIN_FAMILIES = {
    "sinusoid": "distmeta.tasks.sinusoid:Sinusoid",
    "omniglot": "distmeta.tasks.omniglot:Omniglot",
    "gym": "distmeta.tasks.gym:GymTasks",
}


def resolve_family(name: str) -> type:
    """The family class named by a built-in name or `package.module:ClassName`."""
    path = BUILTIN_FAMILIES.get(name, name)
    if ":" not in path:
        raise ConfigError(
            f"task.family: got '{name}'; expected one of {', '.join(BUILTIN_FAMILIES)} "
            "or 'package.module:ClassName'"
        )
    cls = import_object(path, "task.family")
    if not (isinstance(cls, type) and issubclass(cls, TaskFamily)):
        raise ConfigError(f"task.family: '{name}' is not a subclass of distmeta.TaskFamily")
    return cls


__all__ = ["SPLITS", "TaskFamily", "eval_task_rng", "resolve_family", "train_task_rng"]
