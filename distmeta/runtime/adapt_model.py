"""Supervised adaptation: a meta-trained model adapted to your own labelled examples (a
support set), then used on new inputs, with the same `adapt` as meta-training.

    model = adapt_model("runs/sine", support_x, support_y, steps=10)
    y = model.predict(query_x)        # regression values, or class scores (argmax = class)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch

from distmeta.errors import MAX_STEPS, UserError, check_count
from distmeta.runners.supervised import SupervisedShardRunner
from distmeta.runtime.evaluate import load_run


class AdaptedModel:
    """A model adapted to one support set. `predict` scores new inputs; Conv4's BatchNorm
    normalises with the batch it is given (pass a task's queries together, as in
    evaluation) unless the run has `model.batch_norm: population`."""

    def __init__(self, runner: SupervisedShardRunner, params: dict, buffers: dict, support: tuple, steps: int):
        self._runner, self._params, self._buffers, self._support, self.steps = runner, params, buffers, support, steps
        self.input_shape = tuple(runner.family.input_shape)

    def predict(self, x) -> np.ndarray:
        """Outputs for inputs `x` shaped (n, *input_shape): (n, outputs) regression values,
        or (n, n_way) class scores."""
        query = _inputs(x, self.input_shape, "query")
        runner = self._runner
        with torch.no_grad():
            out = runner.algorithm.predict(self._params, self._buffers, self._support,
                                           query.to(runner.device), runner.test_problem)
        return out.cpu().numpy()


def adapt_model(checkpoint: str | Path, support_x, support_y, steps: int | None = None,
                overrides: Sequence[str] = ()) -> AdaptedModel:
    """A supervised run's meta-parameters adapted with `steps` inner steps (default:
    `algorithm.eval_inner_steps`) to the support set (`support_x` shaped (n, *input_shape);
    `support_y` class labels 0..n_way-1, or regression targets (n,) or (n, outputs))."""
    if steps is not None:
        check_count("--steps", steps, 0, MAX_STEPS)
    path, state, experiment = load_run(checkpoint, overrides)
    if experiment.is_rl:
        raise UserError(f"checkpoint: {path} is a meta-RL run; adapt it to a task with "
                        "`distmeta adapt RUN --task KEY=VALUE` (adapt_policy)")
    family = experiment.family
    x = _inputs(support_x, tuple(family.input_shape), "support")
    y = _targets(support_y, len(x), family.kind, family.output_dim)
    runner = cast(SupervisedShardRunner, experiment.make_runner())
    config = experiment.config
    steps = config.algorithm.steps_for_eval if steps is None else steps
    support = (x.to(runner.device), y.to(runner.device))
    meta = {k: v.detach().to(runner.device) for k, v in state["meta_params"].items()}
    buffers = runner.test_buffers(runner.layout.flatten(meta).cpu().numpy())
    adapted = runner.algorithm.adapt(meta, buffers, support, runner.test_problem, config.algorithm, steps)
    return AdaptedModel(runner, {k: v.detach() for k, v in adapted.items()}, buffers, support, steps)


def _inputs(x, shape: tuple, what: str) -> torch.Tensor:
    array = np.asarray(x)
    if array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != shape or len(array) == 0:
        raise UserError(f"--{what}: inputs of shape {array.shape}; expected (n, {', '.join(map(str, shape))}) "
                        "with n >= 1, as the run's task family gives them")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise UserError(f"--{what}: inputs must be finite numbers; got dtype {array.dtype}")
    return torch.from_numpy(array.astype(np.float32))


def _targets(y, n: int, kind: str, outputs: int) -> torch.Tensor:
    array = np.asarray(y)
    if kind == "classification":
        if array.shape != (n,) or not np.issubdtype(array.dtype, np.integer) or array.min() < 0 \
                or array.max() >= outputs:
            raise UserError(f"--support: labels of shape {array.shape}, dtype {array.dtype}; expected ({n},) "
                            f"integers 0..{outputs - 1} (the run is {outputs}-way)")
        return torch.from_numpy(array.astype(np.int64))
    if array.shape == (n,) and outputs == 1:
        array = array[:, None]
    if array.shape != (n, outputs) or not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise UserError(f"--support: targets of shape {array.shape}; expected ({n}, {outputs}) finite numbers")
    return torch.from_numpy(array.astype(np.float32))
