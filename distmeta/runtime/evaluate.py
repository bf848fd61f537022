"""Held-out evaluation of a checkpoint: adapt to N tasks of a split, score pre and post."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distmeta.config import Config
from distmeta.errors import UserError
from distmeta.runtime.checkpoint import load_checkpoint, resolve_checkpoint
from distmeta.runtime.worker import ShardRunner
from distmeta.tasks import SPLITS


def summarise(values: np.ndarray) -> dict:
    """Mean and 95% confidence half-width (normal approximation) of per-task values."""
    values = np.asarray(values, dtype=np.float64)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return {"mean": float(values.mean()), "ci95": float(half)}


def evaluate(checkpoint: str | Path, tasks: int = 100, split: str = "test",
             steps: int | None = None) -> dict:
    """Adapt the checkpoint's meta-parameters to `tasks` tasks of `split` with `steps` inner
    steps (default: the config's `algorithm.eval_inner_steps`) and report the pre- and
    post-adaptation query loss (and accuracy for classification) as mean and ci95."""
    if tasks < 1:
        raise UserError(f"--tasks: got {tasks}; expected at least 1")
    if split not in SPLITS:
        raise UserError(f"--split: got '{split}'; expected one of {', '.join(SPLITS)}")
    if steps is not None and steps < 0:
        raise UserError(f"--steps: got {steps}; expected >= 0")
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    config = Config.from_dict(state["config"])
    steps = config.algorithm.steps_for_eval if steps is None else steps

    family = config.task.make_family()
    family.prepare()
    runner = ShardRunner(config, family)
    meta = {k: v.numpy() for k, v in state["meta_params"].items()}
    chunk = config.meta_batch_size
    rows = [runner.evaluate(meta, split, range(lo, min(lo + chunk, tasks)), steps)
            for lo in range(0, tasks, chunk)]
    per_task = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}

    result: dict = {"checkpoint": str(path), "iteration": int(state["iteration"]),
                    "split": split, "tasks": tasks, "inner_steps": steps}
    for phase in ("pre", "post"):
        result[f"{phase}_adaptation"] = {
            k.removeprefix(phase + "_"): summarise(v)
            for k, v in per_task.items() if k.startswith(phase + "_")
        }
    return result
