"""`RLShardRunner`: the meta-RL body of an adaptation worker (a `ShardRunner`).

For each task of its shard the worker samples episodes with the meta-policy, takes the
inner policy-gradient step(s) (sampling afresh after each), samples with the adapted
policy, and returns the summed gradient of MAML-RL's outer objective with the tasks'
pre- and post-adaptation returns. The episodes of the latest shard are kept, so that the
learner's further outer steps on the same meta-batch (`rl.outer_steps`) reuse them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from distmeta.algorithms.core import shard_meta_grad
from distmeta.algorithms.maml_rl import BATCH_KEYS, MAMLRL, RLProblem
from distmeta.errors import ConfigError
from distmeta.rl.policy import Params, Policy
from distmeta.rl.returns import advantages
from distmeta.rl.sampler import TrajectorySampler
from distmeta.runners.base import FlatLayout, RunnerBase
from distmeta.tasks import eval_task_rng, train_task_rng

if TYPE_CHECKING:
    from distmeta.experiment import Experiment
    from distmeta.tasks.gym import GymTasks

# Meta-World's evaluation episodes per task after adaptation (metaworld.evaluation's
# `evaluation_episodes`).
SUCCESS_EPISODES = 3


class RLShardRunner(RunnerBase):
    """Samples and adapts to shards of meta-RL tasks (a `ShardRunner`)."""

    def __init__(self, experiment: Experiment, threads: int | None = None):
        super().__init__(experiment, threads)
        config = self.config
        family = cast("GymTasks", self.family)
        # Sampling runs the small policy on one observation batch per task and env step: the
        # CPU does that faster than a GPU would; the meta-gradient runs on `device` (the
        # module only names and shapes the parameters, so it stays on the CPU).
        self.policy = cast(Policy, experiment.network())
        self.problem = RLProblem(self.policy, config.rl)
        self.layout = FlatLayout(dict(self.policy.named_parameters()))
        self.sampler = TrajectorySampler(family.make_vector_env, self.policy, cast(int, family.horizon))
        batching = config.runtime.task_batching
        self.batching = "vmap" if batching == "auto" else batching
        self._cached: tuple | None = None

    # -- the ShardRunner protocol ----------------------------------------------------

    def meta_grad(self, meta: np.ndarray, iteration: int, indices: Sequence[int],
                  sampling_meta: np.ndarray | None = None, kl_coeffs: Sequence[float] | None = None
                  ) -> tuple[np.ndarray, int, dict]:
        """Summed outer-objective gradient over the training tasks `indices` of `iteration`
        and metric sums (returns before/after adaptation, outer loss, env steps; with
        ProMP's KL penalty, `kl_coeffs` per inner step, the inner KLs).
        A repeated call for the same shard and iteration reuses its episodes; on a worker
        without them (a shard re-run elsewhere after a fault) they are sampled again with
        `sampling_meta`, the parameters of the iteration's first call: the same episodes,
        since every draw comes from the task's seed."""
        data, metrics = self._episodes(meta if sampling_meta is None else sampling_meta, iteration, indices)
        problem = self.problem
        if kl_coeffs is not None:
            problem = replace(problem, kl_coeffs=torch.tensor(kl_coeffs, dtype=torch.float32, device=self.device))
        grads, sums = shard_meta_grad(
            self.algorithm, self.layout.from_numpy(meta, self.device), {},
            {k: v.to(self.device) for k, v in data.items()}, problem,
            self.config.algorithm, self.batching,
        )
        metrics = dict(metrics, post_loss=float(sums["post_loss"]))
        if "inner_kl" in sums:
            metrics["inner_kl"] = sums["inner_kl"].cpu().numpy().astype(np.float64)
        return self.layout.flatten(grads).cpu().numpy(), len(indices), metrics

    def inner_kl(self, meta: np.ndarray, iteration: int, indices: Sequence[int],
                 sampling_meta: np.ndarray) -> tuple[np.ndarray, int]:
        """Summed inner KL of each inner step at `meta` over the shard's episodes of
        `iteration` (sampled with `sampling_meta`), and the task count: what the learner
        adapts ProMP's coefficients to after the iteration's outer steps."""
        data, _ = self._episodes(sampling_meta, iteration, indices)
        meta_params = self.layout.from_numpy(meta, self.device)
        algorithm = cast(MAMLRL, self.algorithm)
        total = torch.zeros(self.config.algorithm.inner_steps, dtype=torch.float64)
        for i in range(len(indices)):
            task = {k: v[i].to(self.device) for k, v in data.items()}
            total += algorithm.inner_kls(meta_params, task, self.problem, self.config.algorithm).cpu().double()
        return total.numpy(), len(indices)

    def evaluate(self, meta: np.ndarray, split: str, indices: Sequence[int], steps: int,
                 seed: int) -> dict[str, np.ndarray]:
        """Per-task mean episode return before and after `steps` adaptation steps on the
        evaluation tasks `indices` of `split` (a seed stream of its own).

        An env that reports success (Meta-World) is scored as Meta-World's evaluation scores
        it: adapt on the sampled episodes, then `SUCCESS_EPISODES` episodes of the most
        likely actions, each a success if its flag is set at any step; `pre_`/`post_return`
        and `pre_`/`post_success` are those episodes' return and success rate, with the
        meta-policy and with the adapted one."""
        params = self.layout.from_numpy(meta)
        rngs, tasks = self._eval_tasks(split, indices, seed)
        episodes = self.config.rl.episodes_per_task
        if not cast("GymTasks", self.family).reports_success:
            returns = self.sample_adaptation(params, tasks, rngs, steps, episodes)[1]
            return {"pre_return": returns[:, 0], "post_return": returns[:, -1]}
        adapted = self.sample_adaptation(params, tasks, rngs, steps, episodes, sample_adapted=False)[2]
        scores = {}
        for phase, policies in (("pre", [params] * len(tasks)), ("post", adapted)):
            runs = self.sampler.rollout(policies, tasks, rngs, SUCCESS_EPISODES, deterministic=True)
            if "success" not in runs[0]:
                raise ConfigError(f"task.vectorized: {cast('GymTasks', self.family).env}'s env reports "
                                  "info['success'] but its vector env does not; set task.vectorized=false")
            scores[f"{phase}_return"] = np.array([float(run["rewards"].sum(-1).mean()) for run in runs])
            scores[f"{phase}_success"] = np.array([float(run["success"].mean()) for run in runs])
        return scores

    def return_curve(self, params: Params, split: str, indices: Sequence[int], steps: int,
                     seed: int, episodes: int) -> np.ndarray:
        """Mean episode return `(tasks, steps + 1)` after 0..steps adaptation steps from
        `params` on the evaluation tasks `indices` of `split`."""
        rngs, tasks = self._eval_tasks(split, indices, seed)
        return self.sample_adaptation(params, tasks, rngs, steps, episodes)[1]

    def _eval_tasks(self, split: str, indices: Sequence[int], seed: int) -> tuple[list, list[dict]]:
        rngs = [eval_task_rng(seed, split, i) for i in indices]
        family = cast("GymTasks", self.family)
        return rngs, [family.eval_task(rng, split, i) for rng, i in zip(rngs, indices)]

    # -- adaptation -------------------------------------------------------------------

    def _episodes(self, sampling_meta: np.ndarray, iteration: int, indices: Sequence[int]) -> tuple[dict, dict]:
        """The shard's stacked episodes of `iteration` and their metrics: sampled with
        `sampling_meta`, or this worker's kept ones of the same shard and iteration."""
        key = (iteration, tuple(indices))
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1], dict(self._cached[2], env_steps=0.0)
        rngs = [train_task_rng(self.config.seed, iteration, i) for i in indices]
        tasks = [self.family.sample_task(rng, "train") for rng in rngs]
        batches, returns, _ = self.sample_adaptation(
            self.layout.from_numpy(sampling_meta), tasks, rngs,
            self.config.algorithm.inner_steps, self.config.rl.episodes_per_task)
        data = _stack_tasks(batches)
        metrics = {"pre_return": float(returns[:, 0].sum()),
                   "post_return": float(returns[:, -1].sum()),
                   "env_steps": float(sum(b["mask"].sum() for bs in batches for b in bs))}
        # Further outer steps of this iteration, and the KL after them (the learner keeps
        # `iteration` until they are done), reuse these episodes.
        self._cached = (key, data, metrics) if self.config.rl.outer_steps > 1 else None
        return data, metrics

    def sample_adaptation(self, meta: Params, tasks: Sequence[dict],
                          rngs: Sequence[np.random.Generator], steps: int, episodes: int,
                          on_progress: Callable[[int, int], None] | None = None,
                          sample_adapted: bool = True,
                          ) -> tuple[list[list[dict]], np.ndarray, list[Params]]:
        """Per task: the `steps + 1` episode batches of an adaptation (batch s sampled with
        the policy after s steps), mean episode returns `(n_tasks, steps + 1)`, and the
        adapted parameters. The inner step is `MAMLRL.adapt`'s, one step at a time.
        `on_progress(done, steps + 1)` hears after each batch is sampled. Without
        `sample_adapted`, the adapted policy's batch is not sampled (its return stays 0)."""
        params = [meta] * len(tasks)
        batches: list[list[dict]] = [[] for _ in tasks]
        returns = np.zeros((len(tasks), steps + 1))
        for s in range(steps + 1 if sample_adapted else steps):
            rollouts = self.sampler.rollout(params, tasks, rngs, episodes)
            obs, rewards, mask = (torch.stack([b[k] for b in rollouts]) for k in ("obs", "rewards", "mask"))
            adv = advantages(obs, rewards, mask, self.config.rl.gamma, self.config.rl.gae_lambda)
            returns[:, s] = rewards.sum(-1).mean(-1).numpy()
            for i, batch in enumerate(rollouts):
                batch["advantages"] = adv[i]
                batches[i].append(batch)
            if s < steps:
                params = [self._inner_step(p, b[-1]) for p, b in zip(params, batches)]
            if on_progress is not None:
                on_progress(s + 1, steps + 1)
        return batches, returns, params

    def close(self) -> None:
        self.sampler.close()

    def _inner_step(self, params: Params, batch: dict) -> Params:
        support = {k: batch[k][None] for k in BATCH_KEYS}
        adapted = self.algorithm.adapt(params, {}, support, self.problem, self.config.algorithm, 1)
        return {k: v.detach() for k, v in adapted.items()}


def _stack_tasks(batches: list[list[dict]]) -> dict[str, torch.Tensor]:
    """`support_*` (tasks, steps, E, T, ...) and `query_*` (tasks, E, T, ...) tensors."""
    out = {}
    for k in BATCH_KEYS:
        out[f"support_{k}"] = torch.stack([torch.stack([b[k] for b in bs[:-1]]) for bs in batches])
        out[f"query_{k}"] = torch.stack([bs[-1][k] for bs in batches])
    return out
