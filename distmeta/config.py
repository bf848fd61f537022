"""One typed config for a training run, validated at construction.

A run's config is a YAML mapping with sections (`task`, `model`, `algorithm`, `runtime`,
and `rl` for meta-RL) beside a few top-level keys. Each section is a small frozen dataclass whose
fields are documented where they are defined; an unknown key, a value of the wrong type or
out of range raises `ConfigError` naming the dotted key, before any Ray work starts.

    cfg = load_config("sinusoid-maml", overrides=["algorithm.inner_lr=0.05", "seed=3"])
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from distmeta.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"


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

    def family_class(self) -> type:
        from distmeta.tasks import resolve_family

        return resolve_family(self.family)

    def make_family(self):
        """A fresh family instance built from the options (cheap: data loads in `prepare`)."""
        return construct(self.family_class(), self.options, "task")


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

    def __post_init__(self):
        if not self.hidden_sizes or any(h <= 0 for h in self.hidden_sizes):
            raise ConfigError(
                f"model.hidden_sizes: got {list(self.hidden_sizes)}; expected a non-empty "
                "list of positive widths, e.g. [40, 40]"
            )
        _positive("model.channels", self.channels)


@dataclass(frozen=True)
class AlgorithmConfig:
    """The meta-learning algorithm and its inner and outer optimisation."""

    name: Literal["maml", "metasgd", "anil", "reptile", "protonet"] = "maml"
    """maml (second order unless `first_order`), metasgd (learned per-parameter inner
    learning rates), anil (inner loop adapts only the head), reptile, protonet. On a meta-RL
    family (`task.family: gym`) maml is MAML-RL, the one RL algorithm."""
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
    grad_clip: float | None = None
    """Clip the meta-gradient to this global L2 norm; none when unset."""

    def __post_init__(self):
        _positive("algorithm.inner_lr", self.inner_lr)
        _positive("algorithm.outer_lr", self.outer_lr)
        if self.inner_steps < 0 or (self.inner_steps == 0 and self.name != "protonet"):
            raise ConfigError(
                f"algorithm.inner_steps: got {self.inner_steps}; expected an integer >= 1"
            )
        if self.eval_inner_steps is not None and self.eval_inner_steps < 0:
            raise ConfigError(
                f"algorithm.eval_inner_steps: got {self.eval_inner_steps}; expected >= 0"
            )
        if self.grad_clip is not None:
            _positive("algorithm.grad_clip", self.grad_clip)

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

    def __post_init__(self):
        _positive("rl.episodes_per_task", self.episodes_per_task)
        _positive("rl.outer_steps", self.outer_steps)
        _positive("rl.clip", self.clip)
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

    def __post_init__(self):
        _positive("runtime.keep_checkpoints", self.keep_checkpoints)
        if self.shard_timeout_s is not None:
            _positive("runtime.shard_timeout_s", self.shard_timeout_s)
        _positive("runtime.max_shard_attempts", self.max_shard_attempts)


@dataclass(frozen=True)
class Config:
    """A whole training run. Top-level keys beside the sections below (`rl` only for
    meta-RL)."""

    seed: int = 0
    """Seeds the initial parameters and every task: task i of iteration t is drawn from
    (seed, t, i), so the run is the same whatever `num_workers` is."""
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
        _positive("iterations", self.iterations)
        _positive("meta_batch_size", self.meta_batch_size)
        _positive("checkpoint_every", self.checkpoint_every)
        if self.num_workers < 0:
            raise ConfigError(f"num_workers: got {self.num_workers}; expected >= 0")
        if self.num_workers > self.meta_batch_size:
            raise ConfigError(
                f"num_workers: got {self.num_workers} for meta_batch_size "
                f"{self.meta_batch_size}; expected at most one worker per task"
            )
        family = self.task.make_family()  # validates the family's own options
        if getattr(family, "kind", None) not in ("regression", "classification", "rl"):
            raise ConfigError(
                f"task.family: {type(family).__name__}.kind is {getattr(family, 'kind', None)!r}; "
                "expected 'regression', 'classification' or 'rl'"
            )
        if family.kind == "rl":
            self._check_rl()
            return
        if self.rl != RLConfig():
            changed = next(f.name for f in dataclasses.fields(RLConfig)
                           if getattr(self.rl, f.name) != getattr(RLConfig(), f.name))
            raise ConfigError(
                f"rl.{changed}: set for task.family '{self.task.family}', which is not a meta-RL "
                "family; remove it or use task.family: gym"
            )
        from distmeta.models import make_model  # models import this module

        make_model(self.model, tuple(family.input_shape), family.output_dim)
        if self.algorithm.name == "protonet" and family.kind != "classification":
            raise ConfigError(
                f"algorithm.name: protonet needs a classification task family; "
                f"task.family '{self.task.family}' is {family.kind}"
            )

    def _check_rl(self) -> None:
        if self.algorithm.name != "maml":
            raise ConfigError(
                f"algorithm.name: got {self.algorithm.name} for a meta-RL family; "
                "expected maml (MAML-RL)"
            )
        if self.model.name not in ("auto", "mlp"):
            raise ConfigError(
                f"model.name: got {self.model.name} for a meta-RL family; expected auto or mlp "
                "(an MLP policy)"
            )

    def to_dict(self) -> dict:
        """Plain data that `from_dict` (and YAML) reads back to an equal config."""
        out = dataclasses.asdict(self)
        out["task"] = {"family": self.task.family, **dict(self.task.options)}
        if self.rl == RLConfig():  # as configs written before `rl` existed, which resume reads
            del out["rl"]
        return _plain(out)

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


# ---------------------------------------------------------------------------------------
# Loading: YAML file or preset, then --set overrides
# ---------------------------------------------------------------------------------------


def presets() -> dict[str, Path]:
    """Built-in configs by name (`distmeta presets`)."""
    return {p.stem: p for p in sorted(PRESET_DIR.glob("*.yaml"))}


def read_yaml(source: str) -> dict:
    """The mapping in a YAML file, or in the preset of that name."""
    path = Path(source)
    if not path.is_file():
        known = presets()
        if source not in known:
            raise ConfigError(
                f"config: '{source}' is neither a YAML file nor a preset; "
                f"presets: {', '.join(known)}"
            )
        path = known[source]
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config: cannot read YAML from {path}: {first}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {path} holds a {type(raw).__name__}; expected a mapping")
    return raw


def apply_overrides(raw: dict, overrides: list[str], what: str = "--set") -> dict:
    """`KEY=VALUE` pairs with dotted keys; VALUE is parsed as YAML (`0.1`, `true`, `[40]`)."""
    raw = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            example = "seed=3" if what == "--set" else "goal=[0.3,-0.2] (the env's task keys)"
            raise ConfigError(f"{what}: got '{item}'; expected KEY=VALUE, e.g. {example}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        set_dotted(raw, key, value, what)
    return raw


def set_dotted(raw: dict, key: str, value: Any, what: str = "--set") -> None:
    """`raw[a][b][c] = value` for the dotted key `a.b.c`, creating sections on the way."""
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"{what} {key}: '{'.'.join(parts[: depth + 1])}' is a value, not a section"
            )
        node = child
    node[parts[-1]] = value


def load_config(source: str, overrides: list[str] = ()) -> Config:
    """The validated config from a YAML file or preset name plus `--set` overrides."""
    return Config.from_dict(apply_overrides(read_yaml(source), list(overrides)))


# ---------------------------------------------------------------------------------------
# Generic dataclass building with typed, named errors
# ---------------------------------------------------------------------------------------


def build(cls: type, raw: Any, prefix: str):
    """An instance of dataclass `cls` from a mapping; errors name `prefix.key`."""
    if isinstance(raw, cls):
        return raw
    where = prefix or "config"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown key '{dotted}'; expected one of: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return _instantiate(cls, kwargs, where)


def construct(cls: type, options: Mapping[str, Any], prefix: str):
    """`cls(**options)` with config-style errors: dataclasses are typed field by field,
    other classes are checked against their constructor's signature."""
    if dataclasses.is_dataclass(cls):
        return build(cls, options, prefix)
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in options:
        if not takes_any and key not in params:
            raise ConfigError(
                f"unknown key '{prefix}.{key}'; {cls.__name__} takes: {', '.join(params)}"
            )
    return _instantiate(cls, options, prefix)


def _instantiate(cls: type, kwargs: Mapping[str, Any], where: str):
    """`cls(**kwargs)`; a user class's own TypeError/ValueError becomes a ConfigError."""
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {cls.__name__}({_kw(kwargs)}) failed: {exc}") from None


def import_object(path: str, what: str):
    """The object at `package.module:Name`."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what}: got '{path}'; expected a built-in name or 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import module '{module_name}': {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{what}: module '{module_name}' has no '{attr}'") from None


def _coerce(value: Any, hint: Any, dotted: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:  # Optional[X], X | None
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], dotted)
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{dotted}: got {value!r}; expected one of: {', '.join(map(str, args))}"
            )
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, dotted)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{dotted}: got {value!r}; expected a list")
        return tuple(_coerce(v, args[0], f"{dotted}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{dotted}: got {value!r}; expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{dotted}: got {value!r}; expected an integer")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{dotted}: got {value!r}; expected a number")
        if not math.isfinite(value):
            raise ConfigError(f"{dotted}: got {value!r}; expected a finite number")
        return float(value)
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # a path or name that YAML read as a number
        if not isinstance(value, str):
            raise ConfigError(f"{dotted}: got {value!r}; expected a string")
        return value
    if origin in (Mapping, dict) or hint in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{dotted}: got {value!r}; expected a mapping")
        return dict(value)
    return value


def _positive(name: str, value) -> None:
    if not value > 0:
        raise ConfigError(f"{name}: got {value}; expected a value > 0")


def _plain(obj):
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _deep_copy(obj):
    if isinstance(obj, dict):
        return {k: _deep_copy(v) for k, v in obj.items()}
    return obj


def _kw(options: Mapping) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())
