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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from distmeta.config import Config
from distmeta.errors import ConfigError, UserError
from distmeta.experiment import Experiment, build_experiment
from distmeta.loading import read_yaml, set_dotted
from distmeta.schema import positive
from distmeta.search.schedulers import SchedulerConfig
from distmeta.search.space import Distribution

# Keys a PBT exploit cannot change: a restored learner state would not fit the new config
# (network shape, optimiser type, task stream, resources of a running trial).
NOT_PERTURBABLE = ("model.", "task.", "runtime.", "algorithm.name", "algorithm.outer_optimizer",
                   "seed", "num_workers", "iterations")

# Keys the search itself owns.
SEARCH_OWNED = {"iterations": "max_iterations", "checkpoint_every": "report_every"}

SEARCHER_PACKAGES = {"optuna": "optuna", "hyperopt": "hyperopt"}


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
        positive("resources.learner_cpu", self.learner_cpu)
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
        positive("num_samples", self.num_samples)
        positive("report_every", self.report_every)
        if self.max_iterations is not None:
            positive("max_iterations", self.max_iterations)
        if self.max_concurrent_trials is not None:
            positive("max_concurrent_trials", self.max_concurrent_trials)
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
        self._base: Experiment  # declared for type checkers; frozen, so set as below
        object.__setattr__(self, "_base", base)  # derived, not a field: what objective() reads
        if self.validation.tasks:
            base.family.check_split(self.validation.split, "validation.split")
        for key, dist in space.items():
            for value in dist.extremes():
                self._check_trial({key: value}, where=f"search_space.{key}")
        for end in (0, -1):  # keys that constrain each other (num_workers <= meta_batch_size)
            self._check_trial({k: d.extremes()[end] for k, d in space.items()}, where="search_space")
        iterations = base.config.iterations
        if self.report_every > iterations:
            raise ConfigError(
                f"report_every: got {self.report_every}, above max_iterations {iterations}; "
                "expected at most that"
            )
        self._check_scheduler(iterations)
        known = metric_names(base, self.validation.tasks > 0)
        if self.metric is not None and self.metric not in known:
            raise ConfigError(f"metric: got '{self.metric}'; expected one of {', '.join(known)}")

    def _checked_base(self) -> Experiment:
        """The base with the fixed keys, built; an error names `base` when the base alone
        has it, else `fixed`."""
        try:
            return build_experiment(Config.from_dict(self.trial_raw({})))
        except ConfigError as exc:
            try:
                build_experiment(Config.from_dict(self.base_raw()))
            except ConfigError as own:
                if str(own) == str(exc):
                    raise ConfigError(f"base: {exc}") from None
            raise ConfigError(f"fixed: {exc}") from None

    def _check_trial(self, values: Mapping[str, Any], where: str) -> None:
        """Raise, naming `where`, unless a trial with these values builds."""
        config = self.train_config(values, where)
        try:
            experiment = build_experiment(config)
            if self.validation.tasks:
                experiment.family.check_split(self.validation.split, "validation.split")
        except UserError as exc:
            raise ConfigError(f"{where}: {exc}") from None

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

    def train_config(self, values: Mapping[str, Any] | tuple[()] = (), where: str = "fixed") -> Config:
        """The train config of a trial with these searched values (its fields checked;
        the base's whole build was checked at construction)."""
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
        if "algorithm.inner_steps" in self.space and not {"algorithm.eval_inner_steps"} & {*self.space, *self.fixed}:
            # A searched inner_steps is scored with as many steps: otherwise every trial
            # would be validated with the base's eval_inner_steps, whatever it trained with.
            raw.setdefault("algorithm", {})["eval_inner_steps"] = None
        return raw

    def iterations(self) -> int:
        return self.train_config().iterations

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
        metric = self.metric or default_metric(self._base, self.validation.tasks > 0)
        mode = self.mode or ("max" if metric.endswith(("return", "accuracy", "success", "_per_s")) else "min")
        return metric, mode

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["scheduler"]["mutations"] = None if self.scheduler.mutations is None else list(self.scheduler.mutations)
        return out


def metric_names(experiment: Experiment, validation: bool) -> list[str]:
    """The metrics a trial of this experiment reports (as `MetaLearner.step` and `validate`
    write them)."""
    scores, rl = experiment.score_names, experiment.is_rl
    names = [f"{phase}_adaptation.{s}" for phase in ("post", "pre") for s in scores]
    names += ["post_adaptation.loss"] if rl else []  # the outer surrogate
    names += ["meta_loss", "grad_norm", "tasks_per_s"] + (["env_steps_per_s"] if rl else [])
    names += ["inner_kl", "inner_kl_coeff"] if experiment.kl_penalty else []
    names += ["workers", "shards_reissued"]  # means over the window: the run's health, for the dashboard
    if validation:
        # Validation scores Meta-World's success too (RLShardRunner.evaluate).
        held_out = (*scores, "success") if getattr(experiment.family, "reports_success", False) else scores
        names += [f"val.{phase}_adaptation.{s}" for phase in ("post", "pre") for s in held_out]
    return names


def default_metric(experiment: Experiment, validation: bool) -> str:
    score = "return" if experiment.is_rl else "loss"
    return ("val." if validation else "") + f"post_adaptation.{score}"
