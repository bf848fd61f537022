"""The multi-task baseline of meta-RL: one policy trained with RLlib's PPO on the task
mixture of `task.env` (a fresh task at every reset), handed over as a parameter dict of
distmeta's policy (`distmeta.rl.policy.make_policy`, as `Experiment.network` builds it)
so that it is adapted and evaluated exactly like a meta-trained policy.

    result = train_multitask_ppo(config, time_budget_s=300)
    params = result["params"]          # body.*, head.*, log_std: the policy's own names

RLlib's default PPO module (new API stack) is configured with the shape of our policy: a tanh
MLP of `model.hidden_sizes`, a linear head, a state-independent ("free") log std and a
separate value network. Its actor is then our policy up to names and one affine map:

    encoder.actor_encoder.net.mlp.{2i}.weight/bias -> body.{2i}.weight/bias
    pi.net.mlp.0.weight/bias                       -> head.weight/bias
    pi.log_std  (clamped to +-pi.log_std_clip_param_const, as RLlib does)  -> log_std

RLlib normalises bounded `Box` actions (`normalize_actions`, on by default): the module's
Gaussian lives in [-1, 1] and the env runner sends `low + (a + 1) (high - low) / 2`, clipped
to the bounds, to the env. Our sampler sends the action itself, clipped to the same bounds.
The map folds the affine part into the head (`W, b -> s W, s b + m` with `s = (high - low)/2`,
`m = (high + low)/2`) and the log std (`+ log s`), so that both policies put the same
distribution on the actions the env receives. The critic (`encoder.critic_encoder.*`,
`vf.*`) is dropped. Discrete actions: RLlib allows a free log std only for Gaussians, so
there the head is plain logits (no log std, no action rescaling).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from distmeta.config import Config
from distmeta.rl.policy import make_policy
from distmeta.tasks import make_family

if TYPE_CHECKING:
    from distmeta.tasks.gym import GymTasks

# PPO settings, RLlib's defaults except these. Nav2D episodes are 100 steps of reward
# -distance (a random policy scores about -80, staying at the origin about -38):
#   train_batch_size 4000: 40 episodes (40 goals) per update, to average over the task
#     mixture; minibatch 500 x 10 epochs = 80 Adam steps per iteration at lr 3e-4, the usual
#     continuous-control PPO settings (RLlib's defaults: lr 5e-5 and 30 epochs of minibatch
#     128, i.e. ~940 smaller Adam steps per iteration, several times the learner time).
#   vf_clip_param 1e4 (RLlib: 10): RLlib clips the *squared* value error at vf_clip_param,
#     which zeroes the value gradient of every step whose error exceeds ~3.2, i.e. nearly all
#     of them with returns of -30 to -80 and an untrained critic; rewards are not normalised,
#     so the clip is effectively off here. (On Nav2D PPO learns about as fast either way over
#     25 iterations, the advantages being standardised returns; the critic learns only so.)
#   entropy_coeff 0 (RLlib's default): PPO then keeps shrinking the free log std (on Nav2D
#     about -0.7 after 3 minutes, -2.3 after 10, in normalised units); raise it to keep a more
#     stochastic policy.
#   8 envs on the driver's env runner, no remote env runners and a local learner: PPO then
#     needs no Ray actors and fits on 2 CPUs beside a local Ray. About 1 s per iteration for
#     Nav2D with a 64-64 policy on this 2-core machine.
PPO_DEFAULTS: dict[str, Any] = {
    "train_batch_size": 4000, "minibatch_size": 500, "num_epochs": 10, "lr": 3e-4,
    "vf_clip_param": 1e4, "entropy_coeff": 0.0, "num_envs_per_env_runner": 8,
}

_ENCODER = re.compile(r"^encoder\.actor_encoder\.net\.mlp\.(\d+)\.(weight|bias)$")
_HEAD = re.compile(r"^pi\.net\.mlp\.0\.(weight|bias)$")
_IGNORED = re.compile(r"^(encoder\.critic_encoder\.|vf\.)")  # the critic
_CLIP_BUFFER = "pi.log_std_clip_param_const"


class RLlibLayoutError(RuntimeError):
    """The RLlib module is not the layout the weight map expects (an RLlib version whose
    default PPO module differs, or a model config that is not our policy's shape)."""


def action_affine(action_space) -> tuple[np.ndarray, np.ndarray] | None:
    """`(scale, offset)` with which RLlib's env runner maps the module's normalised actions
    to the env's (`normalize_actions`), or None where it sends them as they are (as in
    `ray.rllib.utils.spaces.space_utils.unsquash_action`: bounded float `Box` only)."""
    import gymnasium as gym

    if not (isinstance(action_space, gym.spaces.Box) and np.all(action_space.bounded_below)
            and np.all(action_space.bounded_above)
            and action_space.dtype in (np.float32, np.float64)):
        return None
    low, high = action_space.low.astype(np.float64), action_space.high.astype(np.float64)
    return (high - low) / 2.0, (high + low) / 2.0


def rllib_to_policy_params(state: Mapping[str, Any], expected: Mapping[str, torch.Tensor],
                           affine: tuple[np.ndarray, np.ndarray] | None = None
                           ) -> dict[str, torch.Tensor]:
    """RLlib PPO module weights (`module.state_dict()` or the learner's weights) as distmeta
    policy parameters, named and shaped as `expected` (`dict(policy.named_parameters())`).

    `affine` is `action_affine(action_space)` when RLlib normalises actions (its default),
    None when it does not. Any actor weight that the map does not place, a missing one, or a
    shape that differs is a `RLlibLayoutError`: never a silent partial copy."""
    params: dict[str, torch.Tensor] = {}
    unplaced = []
    for key, value in state.items():
        value = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
        if match := _ENCODER.match(key):
            params[f"body.{match[1]}.{match[2]}"] = value
        elif match := _HEAD.match(key):
            params[f"head.{match[1]}"] = value
        elif key == "pi.log_std":
            params["log_std"] = value
        elif not (_IGNORED.match(key) or key == _CLIP_BUFFER):
            unplaced.append(key)
    shapes = {k: tuple(v.shape) for k, v in params.items()}
    wanted = {k: tuple(v.shape) for k, v in expected.items()}
    if unplaced or shapes != wanted:
        raise RLlibLayoutError(
            f"rllib baseline: the PPO module's actor maps to {shapes}"
            + (f" and has weights the map does not place: {unplaced}" if unplaced else "")
            + f"; the policy needs {wanted} (RLlib's default PPO module layout changed?)"
        )
    out = {k: params[k].detach().to(torch.float64).clone() for k in expected}
    if "log_std" in out and _CLIP_BUFFER in state:  # RLlib clamps the free log std
        bound = float(np.asarray(state[_CLIP_BUFFER]).reshape(-1)[0])
        out["log_std"] = out["log_std"].clamp(-bound, bound)
    if affine is not None:
        if "log_std" not in out:
            raise RLlibLayoutError("rllib baseline: an action rescaling needs a Gaussian policy")
        scale, offset = (torch.as_tensor(a, dtype=torch.float64) for a in affine)
        out["head.weight"] = out["head.weight"] * scale[:, None]
        out["head.bias"] = out["head.bias"] * scale + offset
        out["log_std"] = out["log_std"] + scale.log()
    return {k: v.to(expected[k].dtype) for k, v in out.items()}


def check_module_layout(module, hidden_sizes) -> None:
    """The RLlib module's actor is Linear/Tanh layers of `hidden_sizes` then one Linear (the
    activations are not in the state dict, so the map checks them here)."""
    from torch import nn

    try:
        body = list(module.encoder.actor_encoder.net.mlp)
        head = list(module.pi.net.mlp)
    except AttributeError as exc:
        raise RLlibLayoutError(f"rllib baseline: the PPO module {type(module).__name__} has no "
                               f"actor encoder / pi head where expected: {exc}") from None
    kinds = [type(m).__name__ for m in body + head]
    wanted = ["Linear", "Tanh"] * len(hidden_sizes) + ["Linear"]
    widths = [m.out_features for m in body if isinstance(m, nn.Linear)]
    if kinds != wanted or widths != list(hidden_sizes):
        raise RLlibLayoutError(f"rllib baseline: the PPO actor is {kinds} of widths {widths}; "
                               f"expected {wanted} of widths {list(hidden_sizes)}")


def ppo_config(config: Config, seed: int = 0, **overrides):
    """RLlib's `PPOConfig` for the task mixture of `config.task.env`, shaped like our policy;
    `overrides` replace entries of `PPO_DEFAULTS`."""
    import gymnasium as gym
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    import distmeta_envs

    unknown = set(overrides) - set(PPO_DEFAULTS)
    if unknown:
        raise TypeError(f"ppo_config: unknown settings {sorted(unknown)}; expected {sorted(PPO_DEFAULTS)}")
    hp = {**PPO_DEFAULTS, **overrides}
    family = cast("GymTasks", make_family(config.task))
    env_id = family.env.rpartition(":")[2]
    if env_id not in distmeta_envs.ENV_IDS + distmeta_envs.OPTIONAL_ENV_IDS:
        raise ValueError(f"rllib baseline: task.env got {family.env}; the mixture exists for "
                         f"distmeta_envs' ids only ({', '.join(distmeta_envs.ENV_IDS)}, ...)")
    distmeta_envs.register_ray_envs()
    gaussian = not isinstance(family.action_space, gym.spaces.Discrete)
    return (
        PPOConfig()
        .environment(env_id + distmeta_envs.MIXTURE_SUFFIX,
                     env_config={"max_episode_steps": family.horizon, **family.env_kwargs})
        .env_runners(num_env_runners=0, num_envs_per_env_runner=hp["num_envs_per_env_runner"])
        .learners(num_learners=0)
        .training(train_batch_size_per_learner=hp["train_batch_size"],
                  minibatch_size=hp["minibatch_size"], num_epochs=hp["num_epochs"], lr=hp["lr"],
                  gamma=config.rl.gamma, vf_clip_param=hp["vf_clip_param"],
                  entropy_coeff=hp["entropy_coeff"])
        .rl_module(model_config=DefaultModelConfig(
            fcnet_hiddens=list(config.model.hidden_sizes), fcnet_activation="tanh",
            free_log_std=gaussian, vf_share_layers=False))
        .debugging(seed=seed)
    )


def module_affine(algo, action_space) -> tuple[np.ndarray, np.ndarray] | None:
    """The action rescaling of `algo`'s env runners on `action_space` (None when they do
    not normalise actions)."""
    return action_affine(action_space) if algo.config.normalize_actions else None


def train_multitask_ppo(config: Config, time_budget_s: float, seed: int = 0,
                        max_iterations: int | None = None,
                        log: Callable[[dict], None] | None = None, **ppo_overrides) -> dict:
    """Train PPO on the task mixture of `config.task.env` for about `time_budget_s` seconds of
    wall clock (counted from the call, Ray start and algorithm build included; an iteration
    is not started when the last one's duration would overrun the budget; at least one runs)
    or `max_iterations` iterations, whichever ends first.

    Returns `{"params", "iterations", "env_steps", "episode_return_mean", "wall_s"}`:
    `params` in the format of `Experiment.network()`'s policy, taken from the learner's module;
    `env_steps` sampled in all; `episode_return_mean` RLlib's mean over the last 100 finished
    episodes (None before the first). `log`, if given, gets one dict per iteration.
    Starts (and then stops) a local 2-CPU Ray only if none is running."""
    import ray
    from ray.rllib.core import DEFAULT_MODULE_ID

    t0 = time.perf_counter()
    family = cast("GymTasks", make_family(config.task))
    policy = make_policy(family.observation_space, family.action_space, config.model.hidden_sizes,
                         config.rl.init_log_std)
    expected = dict(policy.named_parameters())
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")  # type: ignore[arg-type]
    try:
        algo = ppo_config(config, seed, **ppo_overrides).build_algo()
        try:
            check_module_layout(algo.get_module(), config.model.hidden_sizes)
            iterations, last_s, runners = 0, 0.0, {}
            while max_iterations is None or iterations < max_iterations:
                if iterations and time.perf_counter() - t0 + last_s > time_budget_s:
                    break
                t_iter = time.perf_counter()
                runners = algo.train()["env_runners"]
                last_s = time.perf_counter() - t_iter
                iterations += 1
                if log is not None:
                    log({"iteration": iterations, "wall_s": time.perf_counter() - t0,
                         "iteration_s": last_s, "env_steps": _steps(runners),
                         "episode_return_mean": _return(runners)})
            weights = algo.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID]
            params = rllib_to_policy_params(weights, expected, module_affine(algo, family.action_space))
        finally:
            algo.stop()
    finally:
        if started:
            ray.shutdown()
    return {"params": params, "iterations": iterations, "env_steps": _steps(runners),
            "episode_return_mean": _return(runners), "wall_s": time.perf_counter() - t0}


def _steps(runners: dict) -> int:
    return int(runners.get("num_env_steps_sampled_lifetime", 0))


def _return(runners: dict) -> float | None:
    value = runners.get("episode_return_mean")
    return None if value is None or math.isnan(value) else float(value)
