"""Policy adaptation: a meta-trained policy adapted to one task, with its return after each
adaptation step, and the adapted policy saved for use.

    result = adapt_policy("runs/nav2d", task={"goal": [0.3, -0.2]}, steps=3, save="nav2d-goal")
    result["returns"]  # [r0, r1, r2, r3]: mean episode return after 0..3 steps
    policy = AdaptedPolicy.load("nav2d-goal")
    action = policy.act(obs)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from distmeta.errors import MAX_EPISODES, MAX_STEPS, UserError, check_count
from distmeta.fileio import atomic_write
from distmeta.rl.policy import Params, Policy
from distmeta.runtime.evaluate import load_run

if TYPE_CHECKING:
    from distmeta.tasks.gym import GymTasks

POLICY_FILE = "policy.pt"


def adapt_policy(checkpoint: str | Path, task: dict | None = None, sample_task: int | None = None,
                 steps: int | None = None, episodes: int | None = None, seed: int = 0,
                 save: str | Path | None = None, overrides: Sequence[str] = (),
                 on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Adapt a meta-RL run's policy to one task: `task` (the environment's task dict) or
    the task that `env.sample_tasks(1, seed=sample_task)` draws. Each of the `steps`
    (default `algorithm.eval_inner_steps`) inner steps samples `episodes` episodes (default
    `rl.episodes_per_task`) with the current policy, as in meta-training; the episodes'
    randomness comes from `seed`. Returns `{"task", "returns": [r0..rK], ...}`; `save`
    writes the adapted policy to that directory (`AdaptedPolicy.load` reads it).
    `on_progress(done, steps + 1)` hears after each batch of episodes."""
    if (task is None) == (sample_task is None):
        raise UserError("--task/--sample-task: give exactly one of them")
    if sample_task is not None and sample_task < 0:
        raise UserError(f"--sample-task: got {sample_task}; expected a seed >= 0")
    if steps is not None:
        check_count("--steps", steps, 0, MAX_STEPS)
    if episodes is not None:
        check_count("--episodes", episodes, 1, MAX_EPISODES)
    if seed < 0:
        raise UserError(f"--seed: got {seed}; expected >= 0")
    save = Path(save) if save is not None else None
    if save is not None:
        if save.exists() and not save.is_dir():
            raise UserError(f"--save: {save} is a file; expected a directory")
        save.mkdir(parents=True, exist_ok=True)  # an unwritable place fails before sampling
    path, state, experiment = load_run(checkpoint, overrides)
    config, family = experiment.config, cast("GymTasks", experiment.family)
    if not experiment.is_rl:
        raise UserError(
            f"checkpoint: {path} is a {family.kind} run; --task needs a meta-RL run "
            "(task.family: gym); adapt a supervised run with --support and --predict"
        )
    if task is not None:
        try:
            task = family.check_task(dict(task))
        except (ValueError, TypeError) as exc:
            raise UserError(f"--task: {str(exc).removeprefix('task: ')}") from None
    else:
        task = family.task_from_seed(sample_task)
    steps = config.algorithm.steps_for_eval if steps is None else steps
    episodes = config.rl.episodes_per_task if episodes is None else episodes

    runner = experiment.make_runner()
    rng = np.random.default_rng([seed, 2])  # the episodes' stream; tasks come from elsewhere
    meta = {k: v.detach() for k, v in state["meta_params"].items()}
    try:
        _, returns, adapted = runner.sample_adaptation(meta, [task], [rng], steps, episodes, on_progress)
    finally:
        runner.close()
    result = {"checkpoint": str(path), "iteration": int(state["iteration"]), "task": task,
              "steps": steps, "episodes": episodes, "seed": seed,
              "returns": [float(r) for r in returns[0]]}
    if save is not None:
        payload = {"params": adapted[0], "config": config.to_dict(), "task": task,
                   "returns": result["returns"]}
        atomic_write(save / POLICY_FILE, lambda f: torch.save(payload, f))
        atomic_write(save / "adaptation.json", lambda f: f.write(json.dumps(result).encode()))
        result["saved"] = str(save / POLICY_FILE)
    return result


class AdaptedPolicy:
    """A policy saved by `adapt_policy(..., save=DIR)`: `act(obs)` gives the action the
    environment received during adaptation (clipped to a `Box` action space's bounds)."""

    def __init__(self, policy: Policy, params: Params, task: dict, config: dict, action_space):
        self.policy, self.params, self.task, self.config = policy, params, task, config
        self.bounds = (action_space.low, action_space.high) if hasattr(action_space, "low") else None

    @classmethod
    def load(cls, directory: str | Path) -> AdaptedPolicy:
        from distmeta.config import Config
        from distmeta.experiment import build_experiment

        file = Path(directory) / POLICY_FILE
        if not file.is_file():
            raise UserError(f"policy: no {POLICY_FILE} in {directory}; save one with adapt --save")
        try:
            payload = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise UserError(f"policy: cannot read {file}: {str(exc).splitlines()[0]}") from None
        experiment = build_experiment(Config.from_dict(payload["config"]))
        return cls(cast(Policy, experiment.network()), payload["params"], payload["task"], payload["config"],
                   cast("GymTasks", experiment.family).action_space)

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        """The action for one observation: the mean (or most likely action), or a sample."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))[None]
        with torch.no_grad():
            if deterministic:
                out = self.policy.mode(self.params, x)
            else:
                out = self.policy.sample(self.params, x, self.policy.noise(None, (1,)))
        action = out[0].numpy()
        return np.clip(action, *self.bounds) if self.bounds is not None else action
