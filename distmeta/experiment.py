"""`build_experiment`: a config with the objects it names, built and cross-checked once.

A `Config` checks each of its fields; whether they fit together (this family's options,
an algorithm that learns this kind of task, a model for these inputs, `rl` settings only
for meta-RL) is known only once the family exists. `build_experiment` makes the family,
picks the algorithm and the shard runner for its kind, checks the model, and raises
`ConfigError` naming the key at fault, all before any Ray work. Everything downstream (the
learner, its workers, evaluation, Tune trials) takes the `Experiment` and decides nothing
about the family again.

    experiment = build_experiment(load_config("nav2d-maml"))
    experiment.algorithm      # MAMLRL (`maml` on a meta-RL family)
    experiment.runner_class   # RLShardRunner
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from distmeta.algorithms import ALGORITHMS, Algorithm
from distmeta.config import Config, RLConfig
from distmeta.errors import ConfigError
from distmeta.models import make_model
from distmeta.rl.policy import make_policy
from distmeta.runners.rl import RLShardRunner
from distmeta.runners.supervised import SupervisedShardRunner
from distmeta.tasks import TaskFamily, make_family

# `maml` names MAML-RL on meta-RL families, as in the MAML paper (section 5.3).
RL_ALIASES = {"maml": "maml_rl"}


@dataclass(frozen=True)
class Experiment:
    """A checked config and what it names: the task family, the algorithm and the runner
    class of the adaptation workers. Picklable: Ray ships it to every worker once."""

    config: Config
    family: TaskFamily
    algorithm: Algorithm
    runner_class: type
    trained_shape: Mapping[str, int] | None = None
    """The episode shape (`n_way`, `k_shot`, `q_query`) the run meta-trained with, where an
    evaluation draws another (set by `load_run`): `model.batch_norm: population` takes its
    statistics from episodes of this shape, the batches Snell et al.'s running averages
    saw in training. None: the family's own shape."""

    @property
    def is_rl(self) -> bool:
        return self.family.kind == "rl"

    @property
    def score_names(self) -> tuple[str, ...]:
        """The scores reported before and after adaptation (`pre_adaptation.<score>`)."""
        if self.is_rl:
            return ("return",)
        return ("loss", "accuracy") if self.family.kind == "classification" else ("loss",)

    @property
    def outer_steps(self) -> int:
        """Outer optimiser steps per sampled meta-batch (`rl.outer_steps` for meta-RL)."""
        return self.config.rl.outer_steps if self.is_rl else 1

    @property
    def kl_penalty(self) -> bool:
        """Whether the outer objective carries ProMP's inner KL penalty (`rl.inner_kl_target`)."""
        return self.is_rl and self.config.rl.inner_kl_target is not None and self.outer_steps > 1

    def network(self) -> nn.Module:
        """A fresh module whose parameters are meta-learned: the model, or the policy of a
        meta-RL family. It is a template for `functional_call` and is never mutated."""
        if self.is_rl:
            family = self.family
            return make_policy(family.observation_space, family.action_space,  # type: ignore[attr-defined]
                               self.config.model.hidden_sizes, self.config.rl.init_log_std)
        out = self.family.output_dim if self.algorithm.needs_head else None
        return make_model(self.config.model, tuple(self.family.input_shape), out)

    def test_network(self) -> nn.Module:
        """The module test-time adaptation and prediction use: `network()`'s, or with
        `model.batch_norm: population` the same layers in eval mode, whose BatchNorms take
        population statistics as buffers (same parameter names)."""
        if self.config.model.batch_norm != "population":
            return self.network()
        out = self.family.output_dim if self.algorithm.needs_head else None
        return make_model(self.config.model, tuple(self.family.input_shape), out, population_stats=True).eval()

    def initial_meta_params(self) -> dict[str, torch.Tensor]:
        """Meta-parameters at iteration 0: a function of the seed alone (the caller's global
        torch RNG is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            network = self.network()
        params = {k: v.detach().clone() for k, v in network.named_parameters()}
        return self.algorithm.init(params, self.config.algorithm)

    def make_runner(self):
        """This process's own shard runner (`num_workers: 0`, evaluation, adaptation), with
        this process's torch threads set to `runtime.threads` (default 1)."""
        return self.runner_class(self, self.config.runtime.threads or 1)


def build_experiment(config: Config) -> Experiment:
    """Build and cross-check what `config` names; `ConfigError` names the key at fault."""
    family = make_family(config.task)
    name: str = config.algorithm.name
    if family.kind == "rl":
        name = RL_ALIASES.get(name, name)
        if "rl" not in ALGORITHMS[name].kinds:
            raise ConfigError(
                f"algorithm.name: got {config.algorithm.name} for a meta-RL family; "
                "expected maml or maml_rl (MAML-RL)"
            )
        if config.model.name not in ("auto", "mlp"):
            raise ConfigError(
                f"model.name: got {config.model.name} for a meta-RL family; expected auto or mlp "
                "(an MLP policy)"
            )
        if config.model.batch_norm != "batch":
            raise ConfigError("model.batch_norm: population is for Conv4's BatchNorm; a meta-RL "
                              "policy has none: remove it")
        if config.model.batch_norm_init != "ones":
            raise ConfigError(f"model.batch_norm_init: {config.model.batch_norm_init} is for Conv4's "
                              "BatchNorm; a meta-RL policy has none: remove it")
        return Experiment(config, family, ALGORITHMS[name], RLShardRunner)
    if config.rl != RLConfig():
        changed = next(f.name for f in dataclasses.fields(RLConfig)
                       if getattr(config.rl, f.name) != getattr(RLConfig(), f.name))
        raise ConfigError(
            f"rl.{changed}: set for task.family '{config.task.family}', which is not a meta-RL "
            "family; remove it or use task.family: gym"
        )
    algorithm = ALGORITHMS[name]
    if family.kind not in algorithm.kinds:
        raise ConfigError(
            f"algorithm.name: {name} needs a {' or '.join(algorithm.kinds)} task family; "
            f"task.family '{config.task.family}' is {family.kind}"
        )
    experiment = Experiment(config, family, algorithm, SupervisedShardRunner)
    with torch.random.fork_rng(devices=[]):  # a check: it leaves the caller's RNG alone
        try:
            experiment.network()  # make_model raises ConfigError for a model that does not fit the inputs
        except (MemoryError, RuntimeError) as exc:  # torch's allocator says "can't allocate memory"
            raise ConfigError(f"model: cannot be built here ({type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0][:160]}); choose smaller model.* sizes") from None
    return experiment
