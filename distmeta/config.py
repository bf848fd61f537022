"""One typed config for a training run: the schema, checked field by field.

A run's config is a YAML mapping with sections (`task`, `model`, `algorithm`, `runtime`,
and `rl` for meta-RL) beside a few top-level keys. Each section is a small frozen dataclass
whose fields are documented where they are defined and which checks its own fields only:
an unknown key, a value of the wrong type or out of range raises `ConfigError` naming the
dotted key. What the fields name together (the task family, the model for its inputs, the
algorithm for its kind of task) is built and cross-checked once, by
`distmeta.experiment.build_experiment`. Loading from YAML and `--set`: `distmeta.loading`.
Nothing here imports torch or Ray.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from distmeta.errors import ConfigError
from distmeta.schema import build, plain, positive

# ---------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskConfig:
    """Which task family to meta-learn on, and its own options.

    In YAML every key of `task:` other than `family` is an option of the family:
    `task: {family: omniglot, n_way: 5, k_shot: 1, data_dir: ...}`.
    """

    family: str = "sinusoid"
    """A built-in family (`distmeta presets` shows them in use: sinusoid, omniglot, and gym
    for meta-RL on a gymnasium task-family env) or a user's own class as a dotted path
    `package.module:ClassName`."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of the family's constructor; each family documents its own."""


@dataclass(frozen=True)
class ModelConfig:
    """The network whose initial parameters are meta-learned."""

    name: Literal["auto", "mlp", "conv4"] = "auto"
    """`mlp` for vector inputs, `conv4` (4 x [conv3x3, BatchNorm, ReLU, maxpool]) for
    images; `auto` picks by the task family's input shape."""
    hidden_sizes: tuple[int, ...] = (40, 40)
    """Hidden layer widths of the MLP."""
    channels: int = 64
    """Channels of each Conv4 block."""
    downsample: Literal["maxpool", "strided"] = "maxpool"
    """How each Conv4 block halves the image: `maxpool` (3x3 convolution, then 2x2
    max-pooling; Snell et al.'s and Vinyals et al.'s Conv4) or `strided` (a stride-2
    convolution with TensorFlow's SAME padding and no pooling, the last block's positions
    averaged: MAML's Omniglot model in Finn et al.'s code)."""
    batch_norm: Literal["batch", "population"] = "batch"
    """Conv4's BatchNorm at test time. `batch`: every forward normalises with its own
    batch's statistics, at test too, so a test episode's queries are normalised together
    (transductive; MAML's choice and most libraries'). `population`: training as `batch`;
    evaluation, validation and `distmeta adapt` normalise with fixed statistics, each
    BatchNorm's batch statistics averaged over 100 training-split episodes of the shape the
    run trained on (e.g. 60-way, whatever way the evaluation tests) at the evaluated
    meta-parameters (non-transductive, as Snell et al.'s ProtoNets, whose running averages
    estimate the same quantity during training)."""
    batch_norm_init: Literal["ones", "uniform"] = "ones"
    """The initial scale (weight) of Conv4's BatchNorms. `ones`: PyTorch's since 1.2.
    `uniform`: drawn from U(0, 1), PyTorch's before 1.2 (pytorch/pytorch#12259), so the
    one Snell et al.'s ProtoNets started from (their code ran on PyTorch 0.4). Drawn after
    every other parameter, so the rest of the initialisation is the same for a given seed."""

    def __post_init__(self):
        if not self.hidden_sizes or any(h <= 0 for h in self.hidden_sizes):
            raise ConfigError(
                f"model.hidden_sizes: got {list(self.hidden_sizes)}; expected a non-empty "
                "list of positive widths, e.g. [40, 40]"
            )
        positive("model.channels", self.channels)


@dataclass(frozen=True)
class AlgorithmConfig:
    """The meta-learning algorithm and its inner and outer optimisation."""

    name: Literal["maml", "metasgd", "anil", "reptile", "protonet", "maml_rl"] = "maml"
    """maml (second order unless `first_order`), metasgd (learned per-parameter inner
    learning rates), anil (inner loop adapts only the head), reptile, protonet; maml_rl for
    meta-RL families (`task.family: gym`), where `maml` also means maml_rl."""
    inner_lr: float = 0.01
    """Step size of the inner (adaptation) SGD steps; Meta-SGD's initial rates."""
    inner_steps: int = 1
    """Inner SGD steps on the support set during meta-training (meta-RL: policy-gradient
    steps, each on freshly sampled episodes)."""
    eval_inner_steps: int | None = None
    """Inner steps when evaluating (`distmeta eval`); defaults to `inner_steps`."""
    first_order: bool = False
    """Drop second-order terms (FOMAML): the inner gradient is treated as a constant."""
    outer_optimizer: Literal["adam", "sgd"] = "adam"
    """Optimiser of the meta-parameters."""
    outer_lr: float = 0.001
    """Learning rate of the outer optimiser."""
    outer_lr_decay_every: int | None = None
    """Multiply the outer learning rate by `outer_lr_decay` every this many iterations
    (Snell et al.'s ProtoNets: halved every 2000 episodes); unset: constant."""
    outer_lr_decay: float = 0.5
    """The factor of each `outer_lr_decay_every` step."""
    grad_clip: float | None = None
    """Clip the meta-gradient to this global L2 norm; none when unset."""

    def __post_init__(self):
        positive("algorithm.inner_lr", self.inner_lr)
        positive("algorithm.outer_lr", self.outer_lr)
        if self.inner_steps < 0 or (self.inner_steps == 0 and self.name != "protonet"):
            raise ConfigError(
                f"algorithm.inner_steps: got {self.inner_steps}; expected an integer >= 1"
            )
        if self.eval_inner_steps is not None and self.eval_inner_steps < 0:
            raise ConfigError(
                f"algorithm.eval_inner_steps: got {self.eval_inner_steps}; expected >= 0"
            )
        if self.grad_clip is not None:
            positive("algorithm.grad_clip", self.grad_clip)
        if self.outer_lr_decay_every is not None:
            positive("algorithm.outer_lr_decay_every", self.outer_lr_decay_every)
        if not 0 < self.outer_lr_decay <= 1:
            raise ConfigError(f"algorithm.outer_lr_decay: got {self.outer_lr_decay}; expected a factor in (0, 1]")

    def outer_lr_at(self, iteration: int) -> float:
        """The outer learning rate of the step from `iteration` to `iteration + 1`."""
        if self.outer_lr_decay_every is None:
            return self.outer_lr
        return self.outer_lr * self.outer_lr_decay ** (iteration // self.outer_lr_decay_every)

    @property
    def steps_for_eval(self) -> int:
        return self.inner_steps if self.eval_inner_steps is None else self.eval_inner_steps


@dataclass(frozen=True)
class RLConfig:
    """Sampling and objectives of meta-RL (MAML-RL); only for `task.family: gym`."""

    episodes_per_task: int = 20
    """Episodes sampled per task for each inner step and for the post-adaptation batch
    (MAML's fast_batch_size)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE's lambda; 1.0 is Monte-Carlo returns minus the linear baseline."""
    clip: float = 0.2
    """PPO's clipping range of the outer (post-adaptation) surrogate."""
    outer_steps: int = 1
    """Outer optimiser steps per sampled meta-batch (ProMP's PPO steps); steps after the
    first re-adapt from the same episodes with importance ratios."""
    init_log_std: float = 0.0
    """Initial log standard deviation of Gaussian policies."""
    inner_kl_target: float | None = 0.01
    """ProMP's inner KL penalty (Rothfuss et al. 2019): the outer objective adds, per inner
    step, a coefficient times the KL between the policy that sampled that step's episodes
    and the current one; after each iteration a coefficient is halved when its KL is under
    this target / 1.5 and doubled when over 1.5 x it. Unset: no penalty. Only with
    `outer_steps` > 1 (at the first outer step the penalty's gradient is zero)."""
    inner_kl_coeff: float = 0.01
    """The penalty's initial coefficient for each inner step (ProMP's 0.01)."""

    def __post_init__(self):
        positive("rl.episodes_per_task", self.episodes_per_task)
        positive("rl.outer_steps", self.outer_steps)
        positive("rl.clip", self.clip)
        if self.inner_kl_target is not None:
            positive("rl.inner_kl_target", self.inner_kl_target)
        positive("rl.inner_kl_coeff", self.inner_kl_coeff)
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"rl.{name}: got {value}; expected a number in [0, 1]")


@dataclass(frozen=True)
class ResourcesConfig:
    """What each adaptation worker asks Ray for."""

    cpu: float = 1.0
    """CPUs per worker; also the worker's torch thread count (at least 1)."""
    gpu: float | None = None
    """GPUs per worker. Unset: one per worker when the cluster has enough GPUs, an even
    fraction when it has fewer, none on a CPU-only cluster. Fractions pack workers."""

    def __post_init__(self):
        if not self.cpu >= 0:
            raise ConfigError(f"runtime.resources_per_worker.cpu: got {self.cpu}; expected >= 0")
        if self.gpu is not None and not self.gpu >= 0:
            raise ConfigError(f"runtime.resources_per_worker.gpu: got {self.gpu}; expected >= 0")


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the meta-gradient is computed; never changes the result."""

    resources_per_worker: ResourcesConfig = field(default_factory=ResourcesConfig)
    """Ray resources of each adaptation worker."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: the GPU Ray assigned to the worker (in-process: any visible GPU), else CPU."""
    task_batching: Literal["auto", "vmap", "loop"] = "auto"
    """How a shard's tasks are batched: `vmap` over the tasks at once, or a per-task
    `loop`. `auto` takes each model's measured faster choice (see BENCHMARKS.md)."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep on disk."""
    shard_timeout_s: float | None = None
    """A shard still running after this many seconds is a straggler: its worker is killed
    and replaced and the shard re-run on another. Unset: 10x the median time of recent
    shards, at least 60 s (none while the first shards run, which include start-up)."""
    max_shard_attempts: int = 3
    """A shard whose worker is lost (killed, its node gone, a straggler) this many times
    ends the run with an error instead of being re-run again."""
    threads: int | None = None
    """torch threads of each worker and, in-process (`num_workers: 0`, `eval`, `adapt`), of
    this process. Unset: a worker takes its `resources_per_worker.cpu` (at least 1); this
    process takes 1. Measured (benchmarks/threads.py, BENCHMARKS.md): beside one busy
    process, 2 threads ran 3-4x slower than 1; on a quiet machine they gained nothing on
    small models and 1.5x on a large Conv4 step, so set it on a machine of your own."""
    shards: int | None = None
    """Shards each meta-batch is split into: a worker's unit of work, and the unit of the
    one order their gradients are added in, so a run's bits depend on the shards, never on
    the workers. Unset: one per worker (one in-process). Set it to get the same bits at
    any `num_workers` (0 included) or to give each worker several shards in turn."""

    def __post_init__(self):
        positive("runtime.keep_checkpoints", self.keep_checkpoints)
        if self.shard_timeout_s is not None:
            positive("runtime.shard_timeout_s", self.shard_timeout_s)
        positive("runtime.max_shard_attempts", self.max_shard_attempts)
        if self.shards is not None:
            positive("runtime.shards", self.shards)
        if self.threads is not None:
            positive("runtime.threads", self.threads)


@dataclass(frozen=True)
class Config:
    """A whole training run. Top-level keys beside the sections below (`rl` only for
    meta-RL)."""

    seed: int = 0
    """Seeds the initial parameters and every task: task i of iteration t is drawn from
    (seed, t, i), so the tasks are the same whatever `num_workers` is (and the bits too,
    with `runtime.shards` fixed)."""
    iterations: int = 1000
    """Meta-iterations (outer optimiser steps) to run in total."""
    meta_batch_size: int = 25
    """Tasks per meta-iteration, split into shards over the workers."""
    num_workers: int = 0
    """Ray adaptation workers; 0 runs the same code in this process (no Ray)."""
    checkpoint_every: int = 100
    """Write a checkpoint every this many iterations (and always at the end)."""
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    rl: RLConfig = field(default_factory=RLConfig)

    def __post_init__(self):
        if self.seed < 0:
            raise ConfigError(f"seed: got {self.seed}; expected an integer >= 0")
        positive("iterations", self.iterations)
        positive("meta_batch_size", self.meta_batch_size)
        positive("checkpoint_every", self.checkpoint_every)
        if self.num_workers < 0:
            raise ConfigError(f"num_workers: got {self.num_workers}; expected >= 0")
        if self.num_workers > self.meta_batch_size:
            raise ConfigError(
                f"num_workers: got {self.num_workers} for meta_batch_size "
                f"{self.meta_batch_size}; expected at most one worker per task"
            )
        shards = self.runtime.shards
        if shards is not None and shards > self.meta_batch_size:
            raise ConfigError(
                f"runtime.shards: got {shards} for meta_batch_size {self.meta_batch_size}; "
                "expected at most one shard per task"
            )
        if shards is not None and shards < self.num_workers:
            raise ConfigError(
                f"runtime.shards: got {shards} for num_workers {self.num_workers}; expected at least "
                "one shard per worker (unset: one per worker)"
            )

    @property
    def shard_count(self) -> int:
        """How many shards each meta-batch is split into (`runtime.shards`)."""
        return self.runtime.shards or max(self.num_workers, 1)

    @property
    def shard_size(self) -> int:
        """Tasks in a meta-batch's largest shard; evaluation and validation send this many
        per call too, so a worker never holds more tasks at once (their envs, episodes and
        activations) than in training: 20 Meta-World tasks' 260 envs took 7.5 GB."""
        return -(-self.meta_batch_size // self.shard_count)

    def to_dict(self) -> dict:
        """Plain data that `from_dict` (and YAML) reads back to an equal config."""
        out = dataclasses.asdict(self)
        out["task"] = {"family": self.task.family, **dict(self.task.options)}
        if self.rl == RLConfig():  # as configs written before `rl` existed, which resume reads
            del out["rl"]
        return plain(out)

    @classmethod
    def from_dict(cls, raw: Any) -> Config:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"config: expected a mapping of keys, got {type(raw).__name__}")
        raw = dict(raw)
        if "task" in raw:
            task = raw["task"]
            if not isinstance(task, Mapping):
                raise ConfigError(f"task: expected a mapping, got {type(task).__name__}")
            task = dict(task)
            family = task.pop("family", TaskConfig.family)
            if not isinstance(family, str):
                raise ConfigError(f"task.family: expected a string, got {family!r}")
            raw["task"] = TaskConfig(family=family, options=task)
        return build(cls, raw, "")
