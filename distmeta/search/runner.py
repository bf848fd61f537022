"""`run_search`: a `SearchSpec` run as a Ray Tune experiment in a directory.

    spec = load_search("tune_configs/sinusoid_maml_asha.yaml", ["num_samples=4"])
    summary = run_search(spec, "runs/tune-sine")

The directory is Tune's experiment directory (one sub-directory per trial with its
`progress.csv`, `result.json`, TensorBoard events and checkpoints) plus ours:
`search.yaml` (the resolved search), `results.json` (every trial's final row),
`best_config.yaml` (a train config `distmeta train` accepts) and `best_checkpoint.pt` (the
best trial's last learner state, which `distmeta eval` reads).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
import warnings
from pathlib import Path

import yaml
from ray import tune

from distmeta.config import Config
from distmeta.errors import UserError
from distmeta.fileio import atomic_write, check_can_create, take_lock
from distmeta.loading import set_dotted
from distmeta.runtime import cluster
from distmeta.schema import first_difference
from distmeta.search import trust
from distmeta.search.schedulers import make_scheduler
from distmeta.search.spec import SearchSpec
from distmeta.search.trial import REPORTS_FILE, STATE_FILE, run_trial

SEARCH_FILE = "search.yaml"

logger = logging.getLogger(__name__)


def tune_key(metric: str) -> str:
    """Results are reported flat with '/' between levels (TensorBoard groups by it)."""
    return metric.replace(".", "/")


def run_search(spec: SearchSpec, out_dir: str | Path, address: str | None = None,
               resume: bool = False) -> dict:
    """Run (or with `resume`, continue) the search; returns the summary also written to
    `results.json`: `{"trials": [...], "best": {...} or None, "interrupted": bool}`."""
    out = Path(out_dir).resolve()
    _check_out_dir(spec, out, resume)
    # One search writes a folder at a time (as one run): locked now where it exists, else
    # once made, just before the first write; a bad input leaves no folder behind.
    locks = [take_lock(out)] if out.is_dir() else []
    try:
        return _run(spec, out, address, resume, locks)
    finally:
        for lock in locks:
            lock.close()


def _run(spec: SearchSpec, out: Path, address: str | None, resume: bool, locks: list) -> dict:
    base_config = spec.train_config()
    worker_cpu = base_config.runtime.resources_per_worker.cpu
    trial_cpus = spec.resources.learner_cpu + max(spec.worker_counts()) * worker_cpu

    import ray

    started_ray = cluster.ensure_ray(address, trial_cpus,
                                     lambda have: _too_big(spec, worker_cpu, trial_cpus, have))
    try:
        base = spec.trial_raw({})
        cluster_gpus = cluster.cluster_gpus()
        gpu = base_config.runtime.resources_per_worker.gpu
        if gpu is None:  # a whole GPU per worker where there are any: bundles need a number
            gpu = 1.0 if cluster_gpus > 0 else 0.0
            set_dotted(base, "runtime.resources_per_worker.gpu", gpu)
        if max(spec.worker_counts()) > 0 and not (worker_cpu > 0 or gpu > 0):
            raise UserError(
                "resources.worker_cpu: 0 CPUs and 0 GPUs per worker leave each worker's bundle of the "
                "trial's placement group empty; expected worker_cpu > 0 (or GPUs on the cluster)"
            )
        if gpu * max(spec.worker_counts()) > cluster_gpus:
            raise UserError(
                f"resources.worker_gpu: a trial's {max(spec.worker_counts())} workers x {gpu:g} GPU need "
                f"{gpu * max(spec.worker_counts()):g} GPUs; the Ray cluster has {cluster_gpus:g}; "
                "lower it (fractions pack workers on a GPU) or num_workers"
            )
        if not locks:
            out.mkdir(parents=True, exist_ok=True)
            locks.append(take_lock(out))
            _check_out_dir(spec, out, resume)  # again: another search may have written it meanwhile
        if not resume:
            atomic_write(out / SEARCH_FILE, lambda f: f.write(yaml.safe_dump(_record(spec), sort_keys=False).encode()))
        grid = _fit(spec, base, out, resume, worker_cpu, gpu)
        return _summarise(spec, out, grid)
    finally:
        if started_ray:
            ray.shutdown()


def _fit(spec: SearchSpec, base: dict, out: Path, resume: bool, worker_cpu: float, gpu: float):
    metric, mode = spec.objective()
    default_workers = Config.from_dict(base).num_workers
    learner_cpu = spec.resources.learner_cpu

    # Pickled with the trainable into every trial's process: it closes over numbers only,
    # since an object holding the user's family would be unpickled before `run_trial` puts
    # the user's folder on the trial's path.
    def bundles(values: dict) -> tune.PlacementGroupFactory:
        worker = {k: v for k, v in (("CPU", worker_cpu), ("GPU", gpu)) if v > 0}
        n = values.get("num_workers", default_workers)
        return tune.PlacementGroupFactory([{"CPU": learner_cpu}] + [worker] * n)

    validation = {"tasks": spec.validation.tasks, "split": spec.validation.split, "seed": spec.validation.seed}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=base, report_every=spec.report_every, validation=validation,
                             workdir=str(Path.cwd())),
        resources=bundles,
    )
    # Tune's own console output (an experiment box, a TensorBoard hint into /tmp/ray) would
    # mix with the leaderboard; the legacy reporter at verbose 0 prints nothing.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    if resume:
        # Errored trials stay errored: a diverged trial would diverge again.
        tuner = tune.Tuner.restore(str(out), trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        random.seed(spec.seed)  # PBT draws its perturbations from `random`
        # PBT suggests `reset_config` to reuse trial actors; a function trainable has none.
        warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
        tuner = tune.Tuner(
            trainable,
            param_space={k: d.to_tune() for k, d in spec.space.items()},
            tune_config=tune.TuneConfig(
                metric=tune_key(metric), mode=mode, num_samples=spec.num_samples,
                search_alg=_searcher(spec), scheduler=make_scheduler(spec),
                max_concurrent_trials=spec.max_concurrent_trials,
            ),
            run_config=tune.RunConfig(
                name=out.name, storage_path=str(out.parent), verbose=0,
                callbacks=[Leaderboard(metric, mode, list(spec.space)), trust.RecordState()],
                # PBT restores a donor's checkpoint when the exploiting trial next runs, which
                # can be many of the donor's reports later: any deleted checkpoint could be the
                # one it needs (measured: with 4 kept, most exploits failed on a missing
                # checkpoint). The other schedulers only ever restore a trial's newest.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None if spec.scheduler.name == "pbt" else 2),
            ),
        )
    try:
        return tuner.fit()
    finally:  # Tune's last writes (an interrupted search's state among them)
        trust.record(out)


def _searcher(spec: SearchSpec):
    if spec.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=spec.seed)
    if spec.searcher == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(random_state_seed=spec.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=spec.seed)


class Leaderboard(tune.Callback):
    """The best trials so far, logged at most every `every_s` seconds and whenever a trial
    ends (the CLI shows them on stderr)."""

    def __init__(self, metric: str, mode: str, keys: list[str], top: int = 5, every_s: float = 10.0):
        self.metric, self.mode, self.keys, self.top, self.every_s = metric, mode, keys, top, every_s
        self.rows: dict[str, dict] = {}
        self.printed = 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.rows[trial.trial_id] = {"values": {k: trial.config.get(k) for k in self.keys},
                                     "iteration": result.get("iteration"),
                                     "value": result.get(tune_key(self.metric))}
        if time.monotonic() - self.printed >= self.every_s:
            self.show(len(trials))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.show(len(trials))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.show(len(trials))

    def show(self, n_trials: int) -> None:
        self.printed = time.monotonic()
        rows = sorted(self.rows.items(), key=lambda kv: _rank_key(kv[1]["value"], self.mode))
        lines = [f"leaderboard ({n_trials} trials, {self.metric}, {self.mode}):"]
        for trial_id, row in rows[: self.top]:
            values = "  ".join(f"{k}={_fmt(v)}" for k, v in row["values"].items())
            lines.append(f"  {trial_id:<12} iter {row['iteration']:>6}  {_fmt(row['value']):>10}  {values}")
        logger.info("\n".join(lines))


def _summarise(spec: SearchSpec, out: Path, grid) -> dict:
    metric, mode = spec.objective()
    iterations = spec.iterations()
    # Tune's own record of each trial's state: a result alone cannot tell a trial ASHA
    # stopped from one an interruption left behind.
    states = {t.trial_id: t.status for t in tune.ExperimentAnalysis(str(out)).trials}
    trials = []
    for result in grid:
        metrics = result.metrics or {}
        # The trial's own last report: after a PBT exploit, Tune's result carries the donor's
        # trial id and config, while the trial went on with perturbed values (and once, in
        # a test, an iteration count one report behind the trial's last).
        report = _last_report(result.path) or {}
        done = report.get("iteration", metrics.get("iteration", 0))
        trial_id = report.get("trial_id") or _trial_id(result.path)
        state = states.get(trial_id)
        config = report.get("config") or result.config or {}
        if report.get("diverged"):
            status = "diverged"
        elif result.error or state == "ERROR":
            status = "error"
        elif state == "TERMINATED":
            status = "done" if done >= iterations else "stopped"
        else:
            status = "unfinished"
        trials.append({
            "trial_id": trial_id,
            "values": {k: config.get(k) for k in spec.space},
            "status": status, "iteration": done,
            "metric": metrics.get(tune_key(metric)),
            "error": report.get("diverged") or (str(result.error).strip().splitlines()[-1] if result.error else None),
            "path": result.path,
        })
    trials.sort(key=lambda t: _rank_key(t["metric"], mode))
    expected = spec.num_samples * math.prod(len(d.values) for d in spec.space.values() if d.kind == "grid")
    interrupted = len(trials) < expected or any(t["status"] == "unfinished" for t in trials)
    best = None
    # Among the trials that ran longest: ASHA stops trials whose metric at a rung was worse,
    # and a short trial's last value is not comparable with a finished one's.
    scored = [t for t in trials if t["status"] in ("done", "stopped") and _finite(t["metric"])]
    finished = [t for t in scored if t["iteration"] == max(s["iteration"] for s in scored)]
    if finished:
        best_result = next(r for r in grid if r.path == finished[0]["path"])
        best = dict(finished[0])
        config = Config.from_dict(_with_values(spec.trial_raw({}), best["values"], spec))
        header = (f"# Best trial {best['trial_id']} of the search in {out}: {metric} = {best['metric']:.6g} "
                  f"({mode}) after {best['iteration']} iterations.\n# Train it: distmeta train {out / 'best_config.yaml'}\n")
        atomic_write(out / "best_config.yaml",
                     lambda f: f.write((header + yaml.safe_dump(config.to_dict(), sort_keys=False)).encode()))
        best["config"] = str(out / "best_config.yaml")
        if best_result.checkpoint is not None:
            with best_result.checkpoint.as_directory() as folder:
                source = Path(folder) / STATE_FILE
                atomic_write(out / "best_checkpoint.pt", lambda f: f.write(source.read_bytes()))
            best["checkpoint"] = str(out / "best_checkpoint.pt")
    summary = {"metric": metric, "mode": mode, "max_iterations": iterations,
               "trials": trials, "best": best, "interrupted": bool(interrupted)}
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(summary, indent=1, default=str).encode()))
    return summary


def _trial_id(path: str) -> str:
    """`run_trial_46efe_00002_2_...` -> `46efe_00002`."""
    parts = Path(path).name.split("_")
    return "_".join(parts[2:4])


def _last_report(trial_dir: str) -> dict | None:
    """The last line of a trial's reports.jsonl (its id, searched values and metrics)."""
    reports = Path(trial_dir) / REPORTS_FILE
    lines = reports.read_text().splitlines() if reports.is_file() else []
    return json.loads(lines[-1]) if lines else None


def _with_values(base: dict, values: dict, spec: SearchSpec) -> dict:
    raw = json.loads(json.dumps(base))
    for key in spec.space:
        set_dotted(raw, key, values[key])
    return raw


def _record(spec: SearchSpec) -> dict:
    """What search.yaml holds: the search, with its base's contents (not just its name), so
    that a resume notices an edited base file."""
    return json.loads(json.dumps({**spec.to_dict(), "base": spec.base_raw()}))


def _check_out_dir(spec: SearchSpec, out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} is a file; expected a search directory")
    check_can_create(out, "--out")
    saved = out / SEARCH_FILE
    if not resume:
        if saved.exists() or (out / "tuner.pkl").exists():
            raise UserError(f"--out: {out} already holds a search; pass --resume to continue it or choose another --out")
        return
    if not (out / "tuner.pkl").exists() or not saved.exists():
        raise UserError(f"--resume: no search to continue in {out}; start it without --resume")
    before = yaml.safe_load(saved.read_text())
    now = _record(spec)
    diff = first_difference(before, now)
    if diff is not None:
        key, old, new = diff
        raise UserError(
            f"--resume: tune config key '{key}' is {new!r} but the search in {out} used {old!r}; "
            "resume with the search's config"
        )
    trust.check(out)


def _too_big(spec: SearchSpec, worker_cpu: float, needed: float, have: str) -> str:
    return (f"resources: a trial needs {needed:g} CPUs (learner_cpu {spec.resources.learner_cpu:g} + "
            f"{max(spec.worker_counts())} workers x {worker_cpu:g}); {have}; lower resources.worker_cpu, "
            "resources.learner_cpu or num_workers")


def _rank_key(value, mode: str):
    if not _finite(value):
        return (1, 0.0)
    return (0, value if mode == "min" else -value)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

