"""The multi-task baseline of meta-RL: one policy trained with RLlib's PPO on the task
mixture (a fresh task at every reset), handed over in distmeta's policy format so that it
is adapted exactly like a meta-trained policy.

RLlib's default PPO module is built with the same shape as distmeta's policy (tanh MLP of
`model.hidden_sizes`, a state-independent log std), so its actor is our policy up to
parameter names:

    encoder.actor_encoder.net.mlp.{i}.weight/bias -> body.{i}.weight/bias
    pi.net.mlp.0.weight/bias                      -> head.weight/bias
    pi.log_std                                    -> log_std   (Gaussian policies only)

PPO settings (RLlib's defaults except): 4,000 env steps per iteration in minibatches of 500,
10 epochs, lr 3e-4, the run's `rl.gamma`, 8 envs on the driver's env runner (no extra
actors, so it fits on 2 CPUs beside a local Ray). Ray and RLlib are imported only when
training starts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import torch

from distmeta.config import Config
from distmeta.errors import UserError

_ENCODER = re.compile(r"^encoder\.actor_encoder\.net\.mlp\.(\d+)\.(weight|bias)$")
_HEAD = re.compile(r"^pi\.net\.mlp\.0\.(weight|bias)$")


def rllib_to_policy_params(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
                           ) -> dict[str, torch.Tensor]:
    """RLlib PPO module weights as distmeta policy parameters named and shaped as
    `expected`; an unexpected module layout is an error, never a silent partial copy."""
    params = {}
    for key, value in state.items():
        if match := _ENCODER.match(key):
            params[f"body.{match[1]}.{match[2]}"] = value
        elif match := _HEAD.match(key):
            params[f"head.{match[1]}"] = value
        elif key == "pi.log_std":
            params["log_std"] = value
    shapes = {k: tuple(v.shape) for k, v in params.items()}
    wanted = {k: tuple(v.shape) for k, v in expected.items()}
    if shapes != wanted:
        raise UserError(
            f"rllib baseline: the PPO module's actor maps to {shapes}; the policy needs {wanted} "
            "(RLlib's default PPO module layout changed?)"
        )
    return {k: torch.as_tensor(params[k]).detach().clone().float() for k in expected}


def ppo_config(config: Config, seed: int):
    """RLlib's PPOConfig for the mixture of `config.task.env`, shaped like our policy."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    import distmeta_envs

    family = config.task.make_family()
    distmeta_envs.register_ray_envs()
    env_config = {"max_episode_steps": family.horizon, **family.env_kwargs}
    return (
        PPOConfig()
        .environment(family.env + distmeta_envs.MIXTURE_SUFFIX, env_config=env_config)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=8)
        .training(train_batch_size_per_learner=4000, minibatch_size=500, num_epochs=10,
                  lr=3e-4, gamma=config.rl.gamma)
        .rl_module(model_config=DefaultModelConfig(
            fcnet_hiddens=list(config.model.hidden_sizes), fcnet_activation="tanh",
            free_log_std=True, vf_share_layers=False))
        .debugging(seed=seed)
    )


def train_multitask_ppo(config: Config, time_budget_s: float, seed: int = 0,
                        max_iterations: int | None = None,
                        log: Callable[[dict], None] | None = None) -> dict:
    """Train PPO on the task mixture for `time_budget_s` seconds (or `max_iterations`);
    returns `{"params", "iterations", "env_steps", "episode_return_mean", "wall_s"}` with
    `params` in the format of `distmeta.runtime.rl_worker.build_policy(config, family)`."""
    import ray

    from distmeta.runtime.rl_worker import build_policy

    expected = dict(build_policy(config, config.task.make_family()).named_parameters())
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    algo = ppo_config(config, seed).build_algo()
    try:
        t0 = time.perf_counter()
        iterations, result = 0, {}
        while time.perf_counter() - t0 < time_budget_s and (max_iterations is None or iterations < max_iterations):
            result = algo.train()
            iterations += 1
            if log is not None:
                log({"iteration": iterations, "wall_s": time.perf_counter() - t0,
                     "episode_return_mean": result["env_runners"].get("episode_return_mean")})
        params = rllib_to_policy_params(algo.get_module().state_dict(), expected)
        runners = result.get("env_runners", {})
        return {"params": params, "iterations": iterations,
                "env_steps": float(runners.get("num_env_steps_sampled_lifetime", 0)),
                "episode_return_mean": runners.get("episode_return_mean"),
                "wall_s": time.perf_counter() - t0}
    finally:
        algo.stop()
        if started:
            ray.shutdown()
