"""Schedulers of a search: when trials stop early (ASHA) or copy better trials (PBT), as
the search config writes it (`SchedulerConfig`) and as Tune runs it (`make_scheduler`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from distmeta.errors import ConfigError
from distmeta.schema import positive

if TYPE_CHECKING:
    from distmeta.search.spec import SearchSpec


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
                positive(f"scheduler.{name}", getattr(self, name))
        if self.quantile_fraction is not None and not 0 < self.quantile_fraction <= 0.5:
            raise ConfigError(f"scheduler.quantile_fraction: got {self.quantile_fraction}; expected (0, 0.5]")
        if self.resample_probability is not None and not 0 <= self.resample_probability <= 1:
            raise ConfigError(
                f"scheduler.resample_probability: got {self.resample_probability}; expected [0, 1]"
            )


def make_scheduler(spec: SearchSpec):
    """The Tune scheduler of the search (ASHA and PBT count meta-iterations)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    iterations = spec.iterations()
    if spec.scheduler.name == "asha":
        return ASHAScheduler(time_attr="iteration", max_t=iterations,
                             grace_period=spec.grace_period(iterations),
                             reduction_factor=spec.scheduler.reduction_factor or 3)
    if spec.scheduler.name == "pbt":
        space = spec.space
        mutated = {k: space[k] for k in spec.mutations()}
        return PopulationBasedTraining(
            time_attr="iteration", perturbation_interval=spec.perturbation_interval(iterations),
            hyperparam_mutations={k: d.to_mutation() for k, d in mutated.items()},
            custom_explore_fn=ClipToSpace(mutated),
            quantile_fraction=spec.scheduler.quantile_fraction or 0.25,
            resample_probability=0.25 if spec.scheduler.resample_probability is None
            else spec.scheduler.resample_probability,
            synch=spec.scheduler.synch,
        )
    return FIFOScheduler()


class ClipToSpace:
    """PBT's explore step scales values by 0.8 or 1.2 without bounds; keep them inside the
    searched (and validated) range. A class, not a closure: Tune pickles the scheduler."""

    def __init__(self, space: dict):
        self.space = space

    def __call__(self, config: dict) -> dict:
        return {**config, **{k: d.clip(config[k]) for k, d in self.space.items() if k in config}}
