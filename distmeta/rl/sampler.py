"""Trajectory sampling on a worker: the episodes of a shard's tasks stepped together in one
vector env of tasks x episodes environments (the env's own vectorised version where it has
one, else one env per episode stepped in a loop), never leaving the worker.

Every episode runs from a seeded reset for a fixed horizon; steps after an episode ends are
masked out. The seeds of the resets and the policy's noise come from each task's own
generator, and each task's actions are computed from its own observations only, so a task's
trajectories are the same whichever tasks share the worker (determinism across
`num_workers`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from distmeta.rl.policy import Params, Policy


class TrajectorySampler:
    """Samples `episodes` fixed-horizon episodes per task with per-task policy parameters."""

    def __init__(self, make_vector_env: Callable[[int], gym.vector.VectorEnv], policy: Policy, horizon: int):
        self.make_vector_env = make_vector_env
        self.policy = policy
        self.horizon = horizon
        self._vector_env_size = 0
        self._vector_env: gym.vector.VectorEnv | None = None
        self._low: np.ndarray | None = None
        self._high: np.ndarray | None = None

    def vector_env(self, n_envs: int) -> gym.vector.VectorEnv:
        """The environments, reused across rollouts of the same size (only their tasks and
        seeds change); a rollout of another size replaces them."""
        if n_envs != self._vector_env_size:
            self.close()
            vec = self.make_vector_env(n_envs)
            space = vec.single_action_space
            if isinstance(space, gym.spaces.Box):
                self._low, self._high = space.low, space.high
            self._vector_env, self._vector_env_size = vec, n_envs
        return cast(gym.vector.VectorEnv, self._vector_env)

    def rollout(self, params: Sequence[Params], tasks: Sequence[dict],
                rngs: Sequence[np.random.Generator], episodes: int) -> list[dict[str, Tensor]]:
        """Per task: `obs (E, T, obs_dim)`, `actions`, `rewards (E, T)`, `mask (E, T)` and
        `logp_old`, sampled with that task's `params` from its generator."""
        n_tasks, horizon, policy = len(tasks), self.horizon, self.policy
        vec = self.vector_env(n_tasks * episodes)
        vec.set_tasks([task for task in tasks for _ in range(episodes)])  # type: ignore[attr-defined]
        reset_seeds: list[int | None] = []
        noises: list[Tensor] = []
        for rng in rngs:
            reset_seeds += [int(s) for s in rng.integers(2**31, size=episodes)]
            generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
            noises.append(policy.noise(generator, (horizon, episodes)))
        obs_np: np.ndarray
        obs_np, _ = vec.reset(seed=reset_seeds)  # type: ignore[arg-type]  # one seed per env

        n_envs = n_tasks * episodes
        obs = torch.zeros(n_envs, horizon, *obs_np.shape[1:])
        actions: list[Tensor] = []
        rewards = np.zeros((n_envs, horizon))
        mask = np.zeros((n_envs, horizon))
        alive = np.ones(n_envs, dtype=bool)
        steps = horizon
        reward: np.ndarray
        terminated: np.ndarray
        truncated: np.ndarray
        # One batched forward per step for every task's episodes, each task under its own
        # parameters (stacked on a task axis).
        stacked = {k: torch.stack([p[k] for p in params]) for k in params[0]}
        noise = torch.stack(noises)  # (tasks, T, E, ...)
        with torch.no_grad():
            for t in range(horizon):
                obs[:, t] = torch.from_numpy(np.asarray(obs_np, dtype=np.float32))
                act = policy.sample_tasks(stacked, obs[:, t].reshape(n_tasks, episodes, -1), noise[:, t])
                act = act.reshape(n_envs, *act.shape[2:])
                actions.append(act)
                env_act = act.numpy()
                if self._low is not None:  # the env sees bounded actions; log-probs use act
                    env_act = np.clip(env_act, self._low, self._high)
                obs_np, reward, terminated, truncated, _ = vec.step(env_act)
                rewards[:, t] = reward * alive
                mask[:, t] = alive
                alive &= ~(terminated | truncated)
                if not alive.any():
                    steps = t + 1
                    break
        acts = torch.stack(actions, 1)
        if steps < horizon:  # keep every batch (E, T): tasks are stacked for vmap
            acts = torch.cat([acts, torch.zeros(n_envs, horizon - steps, *acts.shape[2:],
                                                dtype=acts.dtype)], 1)
        out = []
        for i in range(n_tasks):
            part = slice(i * episodes, (i + 1) * episodes)
            batch = {
                "obs": obs[part],
                "actions": acts[part],
                "rewards": torch.from_numpy(rewards[part]).float(),
                "mask": torch.from_numpy(mask[part]).float(),
            }
            with torch.no_grad():
                batch["logp_old"] = policy.log_prob(params[i], batch["obs"], batch["actions"])
            out.append(batch)
        return out

    def close(self) -> None:
        if self._vector_env is not None:
            self._vector_env.close()
        self._vector_env, self._vector_env_size = None, 0
