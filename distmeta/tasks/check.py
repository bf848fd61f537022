"""A task family's output checked once, in the driver, before any worker starts: a wrong
shape, dtype or key is one line naming the family, the key, what came and what was
expected, not a traceback from inside a Ray worker."""

from __future__ import annotations

import math

import numpy as np

from distmeta.errors import UserError
from distmeta.tasks.base import TaskFamily, train_task_rng

KEYS = ("support_x", "support_y", "query_x", "query_y")


def check_sampled_tasks(family: TaskFamily, seed: int, tasks_per_call: int = 1,
                        memory_bytes: int | None = None) -> None:
    """Sample the first two training tasks of the run and check each against the task
    format (`distmeta.tasks.base`), and that they stack (same shapes). With `memory_bytes`
    (the machine's memory), the task data of one call (`tasks_per_call` tasks: a shard)
    must fit in it: estimated from the config before a task is drawn where the family
    says its size, and measured on the drawn tasks."""
    name = f"{type(family).__module__}:{type(family).__name__}"
    if memory_bytes is not None and family.examples_per_task is not None:
        values = math.prod(family.input_shape) + family.output_dim
        _check_fits(family.examples_per_task * values * 4, tasks_per_call, memory_bytes, "estimated")
    first = None
    for index in range(2):
        try:
            task = family.sample_task(train_task_rng(seed, 0, index), "train")
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's code: say where it failed, in one line
            raise UserError(f"task.family {name}: sample_task raised {type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
        _check_task(name, family, task)
        if memory_bytes is not None:
            _check_fits(sum(task[k].nbytes for k in KEYS), tasks_per_call, memory_bytes, "measured")
        if first is None:
            first = task
        for key in KEYS:
            if task[key].shape != first[key].shape:
                raise UserError(f"task.family {name}: sample_task's '{key}' is {task[key].shape} in one task and "
                                f"{first[key].shape} in another; expected every task of a split alike (they are "
                                "stacked)")


def _check_fits(task_bytes: int, tasks: int, memory_bytes: int, how: str) -> None:
    """One task's data, and a call's `tasks` tasks, against the machine's memory: the data
    alone (the model's activations come on top), so a refusal is certain, not a guess."""
    def size(n: float) -> str:
        unit = max((u for u in range(5) if n >= 1024**u), default=0)
        return f"{n / 1024**unit:.3g} {('B', 'KiB', 'MiB', 'GiB', 'TiB')[unit]}"

    if task_bytes > memory_bytes:
        raise UserError(f"task: one task holds {size(task_bytes)} of data ({how}), more than this machine's "
                        f"{size(memory_bytes)} of memory; lower the task's sizes (task.k_support, task.k_query, ...)")
    if task_bytes * tasks > memory_bytes:
        raise UserError(f"meta_batch_size: a shard of {tasks} tasks holds {size(task_bytes * tasks)} of task data "
                        f"({size(task_bytes)} a task, {how}), more than this machine's {size(memory_bytes)} of "
                        "memory; lower meta_batch_size or raise runtime.shards")


def _check_task(name: str, family: TaskFamily, task) -> None:
    if not isinstance(task, dict):
        raise UserError(f"task.family {name}: sample_task returned a {type(task).__name__}; expected a dict "
                        f"of numpy arrays with keys {', '.join(KEYS)}")
    missing = [k for k in KEYS if k not in task]
    if missing:
        raise UserError(f"task.family {name}: sample_task's dict lacks {', '.join(missing)}; it has "
                        f"{', '.join(map(str, task)) or 'nothing'}")
    shape, out = tuple(family.input_shape), family.output_dim
    if isinstance(out, bool) or not isinstance(out, int) or out < 1:
        raise UserError(f"task.family {name}: output_dim is {out!r}; expected an integer >= 1 (classes, "
                        "or regression outputs)")
    for phase in ("support", "query"):
        x, y = task[f"{phase}_x"], task[f"{phase}_y"]
        for key, value in ((f"{phase}_x", x), (f"{phase}_y", y)):
            if not isinstance(value, np.ndarray):
                raise UserError(f"task.family {name}: sample_task's '{key}' is a {type(value).__name__}; "
                                "expected a numpy array")
        n = len(x) if x.ndim else 0
        if x.dtype != np.float32 or x.shape[1:] != shape or n < 1:
            raise UserError(f"task.family {name}: sample_task's '{phase}_x' is {x.dtype} {x.shape}; expected "
                            f"float32 (n, {', '.join(map(str, shape))}) with n >= 1 (input_shape {shape})")
        # NaN in the data would surface later as a non-finite meta-gradient, blamed on the rates.
        for key, value in ((f"{phase}_x", x), (f"{phase}_y", y)):
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise UserError(f"task.family {name}: sample_task's '{key}' holds NaN or infinite values; "
                                "expected finite numbers")
        if family.kind == "classification":
            if y.dtype != np.int64 or y.shape != (n,) or y.min() < 0 or y.max() >= out:
                raise UserError(f"task.family {name}: sample_task's '{phase}_y' is {y.dtype} {y.shape} with "
                                f"values {y.min() if y.size else '-'}..{y.max() if y.size else '-'}; expected "
                                f"int64 ({n},) class ids 0..{out - 1} (output_dim {out})")
        elif y.dtype != np.float32 or y.shape != (n, out):
            raise UserError(f"task.family {name}: sample_task's '{phase}_y' is {y.dtype} {y.shape}; expected "
                            f"float32 ({n}, {out}) targets (output_dim {out})")
