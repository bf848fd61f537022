"""Task families: where meta-learning tasks come from."""

from __future__ import annotations

from distmeta.config import TaskConfig
from distmeta.errors import ConfigError
from distmeta.schema import construct, import_object
from distmeta.tasks.base import SPLITS, TaskFamily, eval_task_rng, train_task_rng

BUILTIN_FAMILIES = {
    "sinusoid": "distmeta.tasks.sinusoid:Sinusoid",
    "omniglot": "distmeta.tasks.omniglot:Omniglot",
    "gym": "distmeta.tasks.gym:GymTasks",
}
KINDS = ("regression", "classification", "rl")


def resolve_family(name: str) -> type[TaskFamily]:
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


def make_family(task: TaskConfig) -> TaskFamily:
    """A fresh family built from the `task:` section, its options checked by its own
    constructor (cheap: data loads in `prepare`)."""
    family = construct(resolve_family(task.family), task.options, "task")
    kind = getattr(family, "kind", None)
    if kind not in KINDS:
        raise ConfigError(
            f"task.family: {type(family).__name__}.kind is {kind!r}; "
            f"expected one of {', '.join(map(repr, KINDS))}"
        )
    return family


__all__ = ["SPLITS", "TaskFamily", "eval_task_rng", "make_family", "resolve_family", "train_task_rng"]
