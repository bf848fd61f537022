"""Held-out evaluation of a checkpoint: adapt to N tasks of a split, score pre and post."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from distmeta.config import Config
from distmeta.errors import MAX_STEPS, MAX_TASKS, UserError, check_count
from distmeta.experiment import Experiment, build_experiment
from distmeta.loading import apply_overrides
from distmeta.runners import FlatLayout
from distmeta.runtime.checkpoint import load_checkpoint, resolve_checkpoint, shape_mismatch
from distmeta.runtime.executors import InProcess, evaluate_tasks, start_executor
from distmeta.tasks import SPLITS
from distmeta.tasks.episodes import EpisodeFamily


def summarise(values: np.ndarray) -> dict:
    """Mean and 95% confidence half-width of per-task values (Student's t with n - 1
    degrees of freedom: 4.30 standard errors for 3 tasks, 1.96 for many); the half-width is
    None for a single task."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    half = float(t_quantile(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)) if n > 1 else None
    return {"mean": float(values.mean()), "ci95": half}


def t_quantile(p: float, df: float) -> float:
    """The `p` quantile (0.5 < p < 1) of Student's t with `df` >= 1 degrees of freedom, to
    1e-9 up to 1e5 degrees of freedom and 1e-5 past them: the density's integral from 0
    (Simpson's rule in u = x / (1 + x), which keeps small df's heavy tail finite) solved for
    by bisection. (scipy.stats.t.ppf does this too; distmeta does not depend on scipy.)"""
    df = min(df, 1e6)  # the normal limit, reached to far below the tolerance
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        u = np.linspace(0.0, x / (1 + x), 2049)
        t = u / (1 - u)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(t * t / df)) / (1 - u) ** 2
        h = u[1] - u[0]
        return 0.5 + h / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())

    low, high = 0.0, 1.0
    while cdf(high) < p:
        low, high = high, high * 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


# What evaluation may change in the run's config: where the data is, the episode shape
# (ProtoNets take any n_way), how it runs, and the adaptation and normalisation at test time
# (for meta-RL also its sampling: rl.*).
EVAL_OVERRIDABLE = ("task.", "runtime.", "rl.", "algorithm.eval_inner_steps=", "algorithm.inner_lr=",
                    "model.batch_norm=")
# Task keys that say which classes training saw: changed at evaluation, a held-out split
# could hold classes the run trained on.
TRAINED_ON = ("task.trainval=", "task.split=")


def evaluate(checkpoint: str | Path, tasks: int = 600, split: str = "test",
             steps: int | None = None, overrides: Sequence[str] = (), seed: int = 0,
             on_progress: Callable[[int, int], None] | None = None, workers: int = 0,
             per_task: bool = False) -> dict:
    """Adapt the checkpoint's meta-parameters to `tasks` tasks of `split` with `steps` inner
    steps (default: the config's `algorithm.eval_inner_steps`) and report the pre- and
    post-adaptation query loss (and accuracy for classification) as mean and ci95.

    `overrides` (`KEY=VALUE`) change the run's config for evaluation: `task.*` (e.g. the
    data_dir on this machine), `runtime.*`, `algorithm.eval_inner_steps`, `algorithm.inner_lr`,
    `model.batch_norm` (training is the same either way).
    The tasks are drawn from `seed`, not the run's seed, so runs are scored on the same tasks.
    `on_progress(done, tasks)` hears as the tasks are scored. `workers` > 0 scores them on
    that many Ray workers (the Ray already up, else a local one started and stopped here;
    the same scores as in this process, where 0 scores them): Meta-World's ML10 test takes
    2M env steps. `per_task` adds each task's scores (`per_task`: `post_accuracy` etc., in
    task order), for paired comparisons of two checkpoints on the same tasks."""
    check_count("--tasks", tasks, 1, MAX_TASKS)
    check_count("--workers", workers, 0, MAX_TASKS)
    if split not in SPLITS:  # now, before the checkpoint is read; the family's own check follows
        raise UserError(f"--split: got '{split}'; expected one of {', '.join(SPLITS)}")
    if seed < 0:
        raise UserError(f"--seed: got {seed}; expected >= 0")
    if steps is not None:
        check_count("--steps", steps, 0, MAX_STEPS)
    path, state, experiment = load_run(checkpoint, overrides)
    experiment.family.check_split(split, "--split")
    experiment.family.check_eval_tasks(tasks, "--tasks")
    config = experiment.config
    steps = config.algorithm.steps_for_eval if steps is None else steps
    if workers > config.meta_batch_size:
        raise UserError(f"--workers: got {workers}; evaluation shares the run's meta_batch_size "
                        f"({config.meta_batch_size}) tasks per round among the workers, as training does; "
                        f"expected at most {config.meta_batch_size}")
    if workers:
        experiment = dataclasses.replace(experiment, config=dataclasses.replace(config, num_workers=workers))
    started_ray = False
    if workers:
        import ray

        started_ray = not ray.is_initialized()
    executor = start_executor(experiment) if workers else InProcess(experiment.make_runner())
    try:
        meta = FlatLayout(state["meta_params"]).flatten(state["meta_params"]).numpy()
        scores = evaluate_tasks(executor, meta, split, tasks, experiment.config.shard_size, steps, seed,
                                on_progress=on_progress)
    finally:
        executor.close()
        if started_ray:  # a Ray this call started; one the caller had stays up
            import ray

            ray.shutdown()

    result: dict = {"checkpoint": str(path), "iteration": int(state["iteration"]),
                    "split": split, "tasks": tasks, "inner_steps": steps, "seed": seed}
    for phase in ("pre", "post"):
        result[f"{phase}_adaptation"] = {
            k.removeprefix(phase + "_"): summarise(v)
            for k, v in scores.items() if k.startswith(phase + "_")
        }
    if per_task:
        result["per_task"] = scores
    return result


def load_run(checkpoint: str | Path, overrides: Sequence[str] = ()) -> tuple[Path, dict, Experiment]:
    """A checkpoint's path, state and experiment (its config with evaluation-time
    `overrides`, the task family prepared, the episode shape the run trained with as
    `trained_shape` where the overrides change it); the checkpoint's parameters are checked
    against that experiment's shapes."""
    path = resolve_checkpoint(checkpoint)
    for item in overrides:
        if not item.startswith(EVAL_OVERRIDABLE):
            raise UserError(
                f"--set: got '{item}'; evaluation may change only task.*, runtime.*, rl.*, "
                "algorithm.eval_inner_steps, algorithm.inner_lr and model.batch_norm"
            )
        if item.startswith(TRAINED_ON):
            raise UserError(f"--set: got '{item}'; which characters the run trained on is the run's, "
                            "not evaluation's (drop it)")
    state = load_checkpoint(path)
    experiment = build_experiment(Config.from_dict(apply_overrides(state["config"], list(overrides))))
    family = experiment.family
    if isinstance(family, EpisodeFamily):
        trained = family.configured_shape(Config.from_dict(state["config"]).task.options)
        if trained != family.episode_shape:
            experiment = dataclasses.replace(experiment, trained_shape=trained)
    family.prepare()
    expected = {k: tuple(v.shape) for k, v in experiment.initial_meta_params().items()}
    mismatch = shape_mismatch(expected, state["meta_params"])
    if mismatch is not None:
        key, found, needed = mismatch
        raise UserError(
            f"--set: the checkpoint's parameter {key} has shape {found}, the config "
            f"for evaluation needs {needed}; keep the model's shape (e.g. task.n_way "
            "for models with a head)"
        )
    return path, state, experiment
