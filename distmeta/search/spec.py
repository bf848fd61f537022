"""The search config of `distmeta tune`: one YAML file, validated before Ray starts.

    base: sinusoid-maml                   # a preset, or a train config YAML (path relative
                                          # to this file, else to the working directory)
    fixed: {num_workers: 1, meta_batch_size: 10}       # dotted keys set in every trial
    search_space:
      algorithm.inner_lr: {loguniform: [0.001, 0.5]}
      algorithm.first_order: {choice: [true, false]}
    searcher: random                      # random | optuna | hyperopt
    scheduler: {name: asha, grace_period: 100}       # fifo | asha | pbt
    metric: post_adaptation.loss          # default: by the task family (see `default_metric`)
    num_samples: 8
    max_iterations: 500                   # meta-iterations per trial
    resources: {learner_cpu: 1, worker_cpu: 1}

Every section is a frozen dataclass whose fields are documented where they are defined;
unknown keys, empty choices, low >= high, keys the train config does not have and
scheduler/searcher mismatches raise `ConfigError` naming the key.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distmeta.config import (
    Config,
    _positive,
    build,
    presets,
    read_yaml,
    set_dotted,
)
from distmeta.errors import ConfigError

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")

# Keys a PBT exploit cannot change: a restored learner state would not fit the new config
# (network shape, optimiser type, task stream, resources of a running trial).
NOT_PERTURBABLE = ("model.", "task.", "runtime.", "algorithm.name", "algorithm.outer_optimizer",
                   "seed", "num_workers", "iterations")

# Keys the search itself owns.
SEARCH_OWNED = {"iterations": "max_iterations", "checkpoint_every": "report_every"}

SEARCHER_PACKAGES = {"optuna": "optuna", "hyperopt": "hyperopt"}


@dataclass(frozen=True)
class Distribution:
    """One searched key: `{loguniform: [low, high]}`, `{uniform: [low, high]}`,
    `{randint: [low, high]}` (integers, high exclusive, as `tune.randint`),
    `{choice: [a, b, ...]}` (sampled) or `{grid: [a, b, ...]}` (every value, times
    `num_samples`; random searcher only)."""

    kind: str
    values: tuple

    @classmethod
    def parse(cls, key: str, spec: Any) -> Distribution:
        where = f"search_space.{key}"
        if not (isinstance(spec, Mapping) and len(spec) == 1):
            raise ConfigError(
                f"{where}: got {spec!r}; expected one distribution, e.g. {{loguniform: [0.001, 0.1]}} "
                f"or {{choice: [1, 2]}} ({', '.join(DISTRIBUTIONS)})"
            )
        kind, values = next(iter(spec.items()))
        if kind not in DISTRIBUTIONS:
            raise ConfigError(f"{where}: unknown distribution '{kind}'; expected one of {', '.join(DISTRIBUTIONS)}")
        if not isinstance(values, (list, tuple)):
            raise ConfigError(f"{where}.{kind}: got {values!r}; expected a list")
        if kind in ("choice", "grid"):
            if not values:
                raise ConfigError(f"{where}.{kind}: empty; expected at least one value")
            return cls(kind, tuple(values))
        if len(values) != 2:
            raise ConfigError(f"{where}.{kind}: got {list(values)}; expected [low, high]")
        low, high = values
        number = int if kind == "randint" else (int, float)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, number) or not math.isfinite(v):
                raise ConfigError(
                    f"{where}.{kind}: got {list(values)}; expected two "
                    f"{'integers' if kind == 'randint' else 'finite numbers'}"
                )
        if not low < high:
            raise ConfigError(f"{where}.{kind}: low {low} >= high {high}; expected low < high")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"{where}.loguniform: low {low}; expected low > 0 on a log scale")
        return cls(kind, (low, high))

    def extremes(self) -> tuple:
        """Values whose configs must all be valid for every draw to be: the ends, and for
        continuous ranges a non-integer inside (an integer key cannot take a float)."""
        if self.kind == "randint":
            return (self.values[0], self.values[1] - 1)
        if self.kind in ("choice", "grid"):
            return self.values
        low, high = self.values
        inside = math.sqrt(low * high) if self.kind == "loguniform" else (low + high) / 2
        if float(inside).is_integer():
            inside = low + (high - low) / math.pi
        return (low, float(inside), high)

    def clip(self, value):
        """A PBT-perturbed value (scaled by 0.8 or 1.2) brought back into the range."""
        if self.kind in ("choice", "grid"):
            return value
        if self.kind == "randint":
            return int(min(max(round(value), self.values[0]), self.values[1] - 1))
        return min(max(value, self.values[0]), self.values[1])

    def to_tune(self):
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        if self.kind == "choice":
            return tune.choice(list(self.values))
        return getattr(tune, self.kind)(*self.values)

    def to_mutation(self):
        """PBT's resampling space for this key."""
        if self.kind in ("grid", "choice"):
            return list(self.values)
        return self.to_tune()


@dataclass(frozen=True)
class SchedulerConfig:
    """When trials stop early (ASHA) or copy better trials' state (PBT). Times are in
    meta-iterations."""

    name: Literal["fifo", "asha", "pbt"] = "fifo"
    """`fifo`: every trial runs `max_iterations`; `asha`: asynchronous successive halving
    stops the worse trials at rungs grace_period x reduction_factor^k; `pbt`: population
    based training, the worst `quantile_fraction` copy a top trial's checkpoint and perturb
    its `mutations`."""
    grace_period: int | None = None
    """asha: meta-iterations every trial runs before it may be stopped (default:
    max_iterations / 8, at least report_every)."""
    reduction_factor: float | None = None
    """asha: 1 / the fraction of trials promoted at each rung (default 3)."""
    perturbation_interval: int | None = None
    """pbt: meta-iterations between exploit/explore decisions (default: max_iterations / 5,
    at least report_every)."""
    mutations: tuple[str, ...] | None = None
    """pbt: the search_space keys to perturb (default: every key PBT can change in a
    running trial, i.e. none under model., task., runtime., nor algorithm.name, seed, ...)."""
    quantile_fraction: float | None = None
    """pbt: the bottom (and top) fraction of the population (default 0.25)."""
    synch: bool = False
    """pbt: wait until every trial reaches a perturbation point before deciding (Tune's
    synchronous PBT): decisions then depend only on the scores, not on which trial got
    there first; faster trials wait for slower ones."""
    resample_probability: float | None = None
    """pbt: the chance a perturbed value is redrawn from its distribution instead of scaled
    by 0.8 or 1.2 (default 0.25); scaled values are kept inside the searched range."""

    def __post_init__(self):
        only = {"asha": ("grace_period", "reduction_factor"),
                "pbt": ("perturbation_interval", "mutations", "quantile_fraction", "resample_probability", "synch")}
        for owner, keys in only.items():
            for key in keys:
                if self.name != owner and getattr(self, key) not in (None, False):
                    raise ConfigError(f"scheduler.{key}: set for scheduler {self.name}; only {owner} has it")
        if self.reduction_factor is not None and not self.reduction_factor > 1:
            raise ConfigError(f"scheduler.reduction_factor: got {self.reduction_factor}; expected > 1")
        for name in ("grace_period", "perturbation_interval"):
            if getattr(self, name) is not None:
                _positive(f"scheduler.{name}", getattr(self, name))
        if self.quantile_fraction is not None and not 0 < self.quantile_fraction <= 0.5:
            raise ConfigError(f"scheduler.quantile_fraction: got {self.quantile_fraction}; expected (0, 0.5]")
        if self.resample_probability is not None and not 0 <= self.resample_probability <= 1:
            raise ConfigError(
                f"scheduler.resample_probability: got {self.resample_probability}; expected [0, 1]"
            )


@dataclass(frozen=True)
class TrialResources:
    """What one trial reserves: a placement group of one learner bundle plus one bundle per
    adaptation worker, so concurrent trials never take each other's CPUs or GPUs."""

    learner_cpu: float = 1.0
    """CPUs of the trial's meta-learner (the trainable itself; with num_workers 0 it also
    adapts)."""
    worker_cpu: float | None = None
    """CPUs per adaptation worker (default: the base config's runtime.resources_per_worker.cpu);
    written into each trial's config."""
    worker_gpu: float | None = None
    """GPUs per adaptation worker (default: the base config's; when that is unset too, 1 on
    a cluster with GPUs, else 0). Fractions pack several workers on one GPU."""

    def __post_init__(self):
        _positive("resources.learner_cpu", self.learner_cpu)
        if self.worker_cpu is not None and not self.worker_cpu >= 0:
            raise ConfigError(f"resources.worker_cpu: got {self.worker_cpu}; expected >= 0")
        if self.worker_gpu is not None and not self.worker_gpu >= 0:
            raise ConfigError(f"resources.worker_gpu: got {self.worker_gpu}; expected >= 0")


@dataclass(frozen=True)
class ValidationConfig:
    """Held-out scoring inside each trial at every report, so the search selects on tasks
    it does not train on. Off (tasks 0) by default: the training metrics are then reported."""

    tasks: int = 0
    """Held-out tasks scored at every report (the same tasks for every trial); 0 is off."""
    split: Literal["train", "val", "test"] = "val"
    """The split they come from."""
    seed: int = 0
    """Seed of the held-out tasks."""

    def __post_init__(self):
        if self.tasks < 0:
            raise ConfigError(f"validation.tasks: got {self.tasks}; expected >= 0")
        if self.seed < 0:
            raise ConfigError(f"validation.seed: got {self.seed}; expected >= 0")


@dataclass(frozen=True)
class SearchSpec:
    """A Ray Tune search over a train config's keys (`distmeta tune CONFIG`)."""

    base: Any = ""
    """The train config every trial starts from: a preset name, a YAML path, or an inline
    mapping."""
    fixed: dict = field(default_factory=dict)
    """Dotted train-config keys set in every trial (`num_workers: 1`)."""
    search_space: dict = field(default_factory=dict)
    """Dotted train-config key -> distribution (see `Distribution`)."""
    searcher: Literal["random", "optuna", "hyperopt"] = "random"
    """How new trials' values are chosen: random draws (and grids), Optuna's TPE, HyperOpt's
    TPE (the last two: `pip install 'distmeta[search]'`)."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    metric: str | None = None
    """Reported metric to optimise: `post_adaptation.loss`, `post_adaptation.accuracy`,
    `post_adaptation.return`, `pre_adaptation.*`, `meta_loss`, and with validation on
    `val.post_adaptation.*`. Default: `[val.]post_adaptation.return` for meta-RL, else
    `[val.]post_adaptation.loss`."""
    mode: Literal["min", "max"] | None = None
    """Default: max for returns and accuracies, min otherwise."""
    num_samples: int = 8
    """Trials to run (with grids: repeats of the grid)."""
    max_iterations: int | None = None
    """Meta-iterations per trial (default: the base config's `iterations`)."""
    report_every: int = 10
    """Meta-iterations per Tune result: each result holds their mean metrics and a
    checkpoint of the learner."""
    max_concurrent_trials: int | None = None
    """Trials running at once (default: as many as the resources allow)."""
    seed: int = 0
    """Seed of the searcher's draws."""
    resources: TrialResources = field(default_factory=TrialResources)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    # -- derived, validated in __post_init__ ------------------------------------------

    def __post_init__(self):
        _positive("num_samples", self.num_samples)
        _positive("report_every", self.report_every)
        if self.max_iterations is not None:
            _positive("max_iterations", self.max_iterations)
        if self.max_concurrent_trials is not None:
            _positive("max_concurrent_trials", self.max_concurrent_trials)
        if self.seed < 0:
            raise ConfigError(f"seed: got {self.seed}; expected an integer >= 0")
        if not self.search_space:
            raise ConfigError("search_space: empty; expected at least one key, e.g. "
                              "algorithm.inner_lr: {loguniform: [0.001, 0.5]}")
        space = self.space  # parses every distribution
        for key in space:
            if key.startswith("runtime.resources_per_worker"):
                raise ConfigError(
                    f"search_space.{key}: a trial's placement group is sized from resources.*; "
                    "search other keys, set resources.worker_cpu / worker_gpu"
                )
        for key in list(space) + list(self.fixed):
            if key in SEARCH_OWNED:
                section = "search_space" if key in space else "fixed"
                raise ConfigError(f"{section}.{key}: set by the search; use {SEARCH_OWNED[key]} instead")
        if self.searcher != "random":
            grid = next((k for k, d in space.items() if d.kind == "grid"), None)
            if grid is not None:
                raise ConfigError(
                    f"search_space.{grid}: grid needs searcher random; {self.searcher} draws its "
                    "own values (use choice)"
                )
            package = SEARCHER_PACKAGES[self.searcher]
            if importlib.util.find_spec(package) is None:
                raise ConfigError(
                    f"searcher: {self.searcher} needs the {package} package; "
                    "pip install 'distmeta[search]' (or searcher: random)"
                )
        base = self._checked_base()
        for key, dist in space.items():
            for value in dist.extremes():
                self.train_config({key: value}, where=f"search_space.{key}")
        for end in (0, -1):  # keys that constrain each other (num_workers <= meta_batch_size)
            self.train_config({k: d.extremes()[end] for k, d in space.items()}, where="search_space")
        iterations = self.iterations(base)
        if self.report_every > iterations:
            raise ConfigError(
                f"report_every: got {self.report_every}, above max_iterations {iterations}; "
                "expected at most that"
            )
        self._check_scheduler(iterations)
        known = metric_names(base, self.validation.tasks > 0)
        if self.metric is not None and self.metric not in known:
            raise ConfigError(f"metric: got '{self.metric}'; expected one of {', '.join(known)}")

    def _checked_base(self) -> Config:
        """The base with the fixed keys, as a train config; an error names `base` when the
        base alone has it, else `fixed`."""
        try:
            return Config.from_dict(self.trial_raw({}))
        except ConfigError as exc:
            try:
                Config.from_dict(self.base_raw())
            except ConfigError as own:
                if str(own) == str(exc):
                    raise ConfigError(f"base: {exc}") from None
            raise ConfigError(f"fixed: {exc}") from None

    def _check_scheduler(self, iterations: int) -> None:
        sched = self.scheduler
        if sched.name == "asha" and self.grace_period(iterations) >= iterations:
            raise ConfigError(
                f"scheduler.grace_period: {self.grace_period(iterations)} (at least report_every) is not "
                f"below max_iterations {iterations}; ASHA would never stop a trial"
            )
        if sched.name != "pbt":
            return
        if "num_workers" in self.space:
            raise ConfigError(
                "search_space.num_workers: PBT copies a donor trial's num_workers into a trial whose "
                "placement group was sized for its own; set num_workers in fixed"
            )
        if self.searcher != "random":
            raise ConfigError(
                f"searcher: {self.searcher} with scheduler pbt; PBT explores by itself, "
                "use searcher: random"
            )
        if self.perturbation_interval(iterations) >= iterations:
            raise ConfigError(
                f"scheduler.perturbation_interval: {self.perturbation_interval(iterations)} (at least "
                f"report_every) is not below max_iterations {iterations}; PBT would never perturb"
            )
        keys = self.mutations()
        if not keys:
            raise ConfigError(
                "scheduler.mutations: empty; PBT needs at least one search_space key it can change in a "
                f"running trial (none under {', '.join(NOT_PERTURBABLE)})"
            )
        for key in keys:
            if key not in self.space:
                raise ConfigError(
                    f"scheduler.mutations: '{key}' is not in search_space; expected some of "
                    f"{', '.join(self.space)}"
                )
            if key.startswith(NOT_PERTURBABLE) or key in NOT_PERTURBABLE:
                raise ConfigError(
                    f"scheduler.mutations: '{key}' cannot change in a running trial (a restored "
                    "learner would not fit it); perturb optimisation keys such as algorithm.inner_lr"
                )

    # -- what the runner needs ------------------------------------------------------

    @property
    def space(self) -> dict[str, Distribution]:
        return {k: Distribution.parse(k, v) for k, v in self.search_space.items()}

    def base_raw(self) -> dict:
        """A fresh deep copy: trials' values are set into it."""
        if isinstance(self.base, dict):
            return copy.deepcopy(self.base)
        return read_yaml(self.base)

    def train_config(self, values: Mapping[str, Any] = (), where: str = "fixed") -> Config:
        """The train config of a trial with these searched values."""
        raw = self.trial_raw(dict(values))
        try:
            return Config.from_dict(raw)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def trial_raw(self, values: Mapping[str, Any]) -> dict:
        """The base with `fixed`, the resources and `values` set (dotted keys)."""
        raw = self.base_raw()
        for key, value in {**self.fixed, **values}.items():
            set_dotted(raw, key, value, what="fixed")
        for ours, theirs in (("worker_cpu", "cpu"), ("worker_gpu", "gpu")):
            if getattr(self.resources, ours) is not None:
                set_dotted(raw, f"runtime.resources_per_worker.{theirs}", getattr(self.resources, ours))
        if self.max_iterations is not None:
            raw["iterations"] = self.max_iterations
        return raw

    def iterations(self, base: Config | None = None) -> int:
        return (base or self.train_config()).iterations

    def grace_period(self, iterations: int) -> int:
        given = self.scheduler.grace_period
        return given if given is not None else max(self.report_every, iterations // 8)

    def perturbation_interval(self, iterations: int) -> int:
        given = self.scheduler.perturbation_interval
        return given if given is not None else max(self.report_every, iterations // 5)

    def mutations(self) -> list[str]:
        if self.scheduler.mutations is not None:
            return list(self.scheduler.mutations)
        return [k for k in self.space if not (k.startswith(NOT_PERTURBABLE) or k in NOT_PERTURBABLE)]

    def worker_counts(self) -> list[int]:
        """Every num_workers a trial may have."""
        dist = self.space.get("num_workers")
        if dist is None:
            return [self.train_config().num_workers]
        if dist.kind == "randint":
            return list(range(*dist.values))
        return list(dist.values)

    def objective(self) -> tuple[str, str]:
        """(metric, mode), defaults filled in."""
        metric = self.metric or default_metric(self.train_config(), self.validation.tasks > 0)
        mode = self.mode or ("max" if metric.endswith(("return", "accuracy", "_per_s")) else "min")
        return metric, mode

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["scheduler"]["mutations"] = None if self.scheduler.mutations is None else list(self.scheduler.mutations)
        return out


def metric_names(config: Config, validation: bool) -> list[str]:
    """The metrics a trial of this config reports (as `MetaLearner.step` and `validate`
    write them)."""
    kind = config.task.make_family().kind
    scores = {"regression": ["loss"], "classification": ["loss", "accuracy"], "rl": ["return"]}[kind]
    names = [f"{phase}_adaptation.{s}" for phase in ("post", "pre") for s in scores]
    names += ["post_adaptation.loss"] if kind == "rl" else []  # the outer surrogate
    names += ["meta_loss", "grad_norm", "tasks_per_s"] + (["env_steps_per_s"] if kind == "rl" else [])
    names += ["workers", "shards_reissued"]  # means over the window: the run's health, for the dashboard
    if validation:
        names += [f"val.{phase}_adaptation.{s}" for phase in ("post", "pre") for s in scores]
    return names


def default_metric(config: Config, validation: bool) -> str:
    score = "return" if config.task.make_family().kind == "rl" else "loss"
    return ("val." if validation else "") + f"post_adaptation.{score}"


# ---------------------------------------------------------------------------------------
# Loading: YAML file, then --set overrides of the search's own keys
# ---------------------------------------------------------------------------------------


def load_search(source: str, overrides: list[str] = ()) -> SearchSpec:
    """The validated search from a YAML file (a name in `tune_configs/` also works) plus
    `--set` overrides of its keys (`num_samples=2`, `fixed.num_workers=0`,
    `search_space.algorithm.inner_lr={uniform: [0.01, 0.1]}`)."""
    path = _find(source)
    raw = read_yaml(str(path))
    return search_from_dict(raw, overrides, path.parent)


def search_from_dict(raw: Any, overrides: list[str] = (), folder: Path = Path(".")) -> SearchSpec:
    import yaml

    if not isinstance(raw, Mapping):
        raise ConfigError(f"tune config: expected a mapping of keys, got {type(raw).__name__}")
    raw = dict(raw)
    leaves = {"search_space": _is_distribution, "fixed": lambda v: not isinstance(v, Mapping)}
    for section, leaf in leaves.items():
        value = raw.get(section, {})
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{section}: got {value!r}; expected a mapping of dotted keys")
        raw[section] = _flatten(value, leaf)
    if isinstance(raw.get("scheduler"), str):
        raw["scheduler"] = {"name": raw["scheduler"]}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set: got '{item}'; expected KEY=VALUE, e.g. num_samples=2")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        section, _, rest = key.partition(".")
        if section in ("fixed", "search_space") and rest:
            raw[section][rest] = value  # the rest is one dotted train-config key
        elif section in ("fixed", "search_space") and isinstance(value, Mapping):
            raw[section] = _flatten(value, leaves[section])
        elif section == "scheduler" and not rest and isinstance(value, str):
            raw["scheduler"] = {"name": value}  # another scheduler: its own defaults
        else:
            set_dotted(raw, key, value)
    base = raw.get("base")
    if base is None:
        raise ConfigError("base: missing; expected a preset name, a train config YAML or a mapping")
    if isinstance(base, str):
        raw["base"] = _base_path(base, folder)
    elif not isinstance(base, Mapping):
        raise ConfigError(f"base: got {base!r}; expected a preset name, a YAML path or a mapping")
    else:
        raw["base"] = dict(base)
    return build(SearchSpec, raw, "")


def shipped_configs() -> dict[str, Path]:
    """The search configs in the checkout's `tune_configs/` folder."""
    folder = Path(__file__).resolve().parents[2] / "tune_configs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def _find(source: str) -> Path:
    path = Path(source)
    if path.is_file():
        return path
    shipped = shipped_configs()
    if source in shipped:
        return shipped[source]
    raise ConfigError(
        f"tune config: '{source}' is not a YAML file; shipped configs: {', '.join(shipped) or 'none found'}"
    )


def _base_path(base: str, folder: Path) -> str:
    """A base YAML relative to the tune config's folder, else the working directory, else a
    preset name. Paths become absolute: trials run in their own directories."""
    for candidate in (folder / base, Path(base)):
        if candidate.is_file():
            return str(candidate.resolve())
    if base in presets():
        return base
    raise ConfigError(
        f"base: '{base}' is neither a YAML file (looked in {folder} and the working directory) "
        f"nor a preset; presets: {', '.join(presets())}"
    )


def _is_distribution(value: Any) -> bool:
    """A leaf of search_space: anything but a section (a mapping of further mappings), so
    that `{normal: [0, 1]}` is reported as an unknown distribution, not read as a key."""
    if not isinstance(value, Mapping):
        return True
    return len(value) == 1 and not isinstance(next(iter(value.values())), Mapping)


def _flatten(mapping: Mapping, leaf, prefix: str = "") -> dict:
    out = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if leaf(value) or not value:
            out[dotted] = value
        else:
            out.update(_flatten(value, leaf, dotted + "."))
    return out
