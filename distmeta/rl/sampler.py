"""Trajectory sampling on a worker: the episodes of a shard's tasks stepped together in one
vector env of tasks x episodes environments (the env's own vectorised version where it has
one, else one env per episode stepped in a loop), never leaving the worker.

Every episode runs from a seeded reset for a fixed horizon; steps after an episode ends are
masked out. The seeds of the resets and the policy's noise come from each task's own
generator, and each task's actions are computed from its own observations only, so a task's
trajectories are the same whichever tasks share the worker (determinism across
`num_workers`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from distmeta.rl.policy import Params, Policy

KEPT_SIZES = 2


class TrajectorySampler:
    """Samples `episodes` fixed-horizon episodes per task with per-task policy parameters."""

    def __init__(self, make_vector_env: Callable[[int], gym.vector.VectorEnv], policy: Policy, horizon: int):
        self.make_vector_env = make_vector_env
        self.policy = policy
        self.horizon = horizon
        self._vector_envs: OrderedDict[int, gym.vector.VectorEnv] = OrderedDict()  # by size, newest last
        self._low: np.ndarray | None = None
        self._high: np.ndarray | None = None

    def vector_env(self, n_envs: int) -> gym.vector.VectorEnv:
        """The environments, reused across rollouts of the same size (only their tasks and
        seeds change). The two latest sizes are kept: evaluation alternates between the
        adaptation episodes and the evaluation episodes, and building envs is slow (an ML10
        env takes about a second)."""
        vec = self._vector_envs.pop(n_envs, None)
        if vec is None:
            vec = self.make_vector_env(n_envs)
            space = vec.single_action_space
            if isinstance(space, gym.spaces.Box):
                self._low, self._high = space.low, space.high
            while len(self._vector_envs) >= KEPT_SIZES:
                self._vector_envs.popitem(last=False)[1].close()
        self._vector_envs[n_envs] = vec
        return vec

    def rollout(self, params: Sequence[Params], tasks: Sequence[dict],
                rngs: Sequence[np.random.Generator], episodes: int,
                deterministic: bool = False) -> list[dict[str, Tensor]]:
        """Per task: `obs (E, T, obs_dim)`, `actions`, `rewards (E, T)`, `mask (E, T)`,
        `logp_old` and `dist_old` (the action distribution at each step, `Policy.dist_of`),
        sampled with that task's `params` from its generator; `deterministic` takes the
        policy's most likely action (the mean, or the argmax) instead. Where the env reports
        `info["success"]` (Meta-World), also `success (E,)`: 1 for an episode whose flag was
        set at any of its steps (Meta-World's definition), else 0."""
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
        # Step-major buffers: each step writes one contiguous row.
        obs = torch.zeros(horizon, n_envs, *obs_np.shape[1:])
        outs: list[Tensor] = []
        actions: list[Tensor] = []
        rewards = np.zeros((horizon, n_envs))
        mask = np.zeros((horizon, n_envs))
        alive = np.ones(n_envs, dtype=bool)
        steps = horizon
        reward: np.ndarray
        terminated: np.ndarray
        truncated: np.ndarray
        # One batched forward per step for every task's episodes, each task under its own
        # parameters (stacked on a task axis); the noise, scaled for each task once.
        stacked = {k: torch.stack([p[k] for p in params]) for k in params[0]}
        layers = policy.task_layers(stacked)
        noise = policy.task_noise(stacked, torch.stack(noises)).transpose(0, 1).contiguous()  # (T, tasks, E, ...)
        if deterministic:  # zero noise: the mean (Gaussian) or the argmax (Gumbel-max)
            noise.zero_()
        success: np.ndarray | None = None
        low, high = ((torch.from_numpy(self._low), torch.from_numpy(self._high))
                     if self._low is not None and self._high is not None else (None, None))
        with torch.no_grad():
            for t in range(horizon):
                obs[t] = torch.from_numpy(np.asarray(obs_np, dtype=np.float32))
                out = policy.out_tasks(layers, obs[t].view(n_tasks, episodes, -1))
                act = policy.action_from(out, noise[t])
                act = act.reshape(n_envs, *act.shape[2:])
                outs.append(out)
                actions.append(act)
                # The env sees bounded actions; log-probabilities use act.
                env_act = (act if low is None else torch.clamp(act, low, high)).numpy()
                obs_np, reward, terminated, truncated, info = vec.step(env_act)
                np.multiply(reward, alive, out=rewards[t])
                if "success" in info:
                    success = np.zeros(n_envs, dtype=bool) if success is None else success
                    success |= alive & (np.asarray(info["success"]) >= 1)
                mask[t] = alive
                alive &= ~(terminated | truncated)
                if not alive.any():
                    steps = t + 1
                    break
        # Back to (envs, T, ...), the steps after an early end zero (every batch keeps
        # (E, T): tasks are stacked for vmap).
        obs = obs.transpose(0, 1).contiguous()
        acts = torch.zeros(n_envs, horizon, *actions[0].shape[1:], dtype=actions[0].dtype)
        acts[:, :steps] = torch.stack(actions, 1)
        out_all = torch.zeros(n_tasks, episodes, horizon, *outs[0].shape[2:])
        out_all[:, :, :steps] = torch.stack(outs, 2)
        rewards_t = torch.from_numpy(rewards.T.copy()).float()
        mask_t = torch.from_numpy(mask.T.copy()).float()
        batches = []
        for i in range(n_tasks):
            part = slice(i * episodes, (i + 1) * episodes)
            batch = {"obs": obs[part], "actions": acts[part], "rewards": rewards_t[part], "mask": mask_t[part]}
            # From the sampling forward's own outputs: no second pass over the episodes.
            batch["logp_old"] = policy.log_prob_of(params[i], out_all[i], batch["actions"])
            batch["dist_old"] = policy.dist_of(params[i], out_all[i])
            if success is not None:
                batch["success"] = torch.from_numpy(success[part].astype(np.float32))
            batches.append(batch)
        return batches

    def close(self) -> None:
        while self._vector_envs:
            self._vector_envs.popitem()[1].close()
