"""`MetaLearner`: the central meta-learner (the driver of a training run).

Per meta-iteration the meta-parameters travel as one flat numpy vector (cheap to
serialise), shared once with every worker (`Executor.share`). Each worker samples and
adapts to the tasks of its shard on its own device and returns
`(grad_sum, n_tasks, metric_sums)`. The shards are added in the one order of `reduce.py`
(on the cluster for large models; a shard re-run after a fault gives the same bits, see
`pool.py`); the learner takes the task-weighted mean,
clips, steps its outer optimiser and reports a metrics line.

    learner = MetaLearner(load_config("sinusoid-maml"), out_dir="runs/sine")
    learner.train()
    same = MetaLearner.load("runs/sine")      # the newest checkpoint, ready to go on

Where the shards run: `executors.py`; the run's folder: `rundir.py`; Ray: `cluster.py`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch

from distmeta.algorithms.maml_rl import adapt_kl_coeffs
from distmeta.config import Config
from distmeta.errors import DivergedError, UserError
from distmeta.experiment import build_experiment
from distmeta.runners import FlatLayout
from distmeta.runtime import reduce
from distmeta.runtime.checkpoint import load_checkpoint, resolve_checkpoint, shape_mismatch, write_state
from distmeta.runtime.cluster import machine_memory
from distmeta.runtime.executors import evaluate_tasks, start_executor
from distmeta.runtime.rundir import RunDirectory
from distmeta.tasks.check import check_sampled_tasks

logger = logging.getLogger(__name__)


def split_shards(n_tasks: int, n_shards: int) -> list[list[int]]:
    """Task indices 0..n_tasks-1 in `n_shards` contiguous shards whose sizes differ by <= 1."""
    bounds = np.linspace(0, n_tasks, n_shards + 1).round().astype(int)
    return [list(range(bounds[i], bounds[i + 1])) for i in range(n_shards)]


class MetaLearner:
    """Runs meta-training for one config, in-process (`num_workers: 0`) or on Ray workers.

    `out_dir` (optional) receives `config.yaml`, `metrics.jsonl`, `events.jsonl` and
    `checkpoints/`; `resume=True` continues from its newest readable checkpoint. `address`
    names a running Ray cluster; without it a local Ray is started (or the one already
    initialised is used). Every input is checked before the workers start."""

    def __init__(self, config: Config, out_dir: str | Path | None = None,
                 address: str | None = None, resume: bool = False):
        if resume and out_dir is None:
            raise UserError("--resume: needs the run directory to resume (--out DIR)")
        self.config = config
        self.experiment = build_experiment(config)
        self.run_dir = RunDirectory(out_dir) if out_dir is not None else None
        state = self.run_dir.check(config, resume) if self.run_dir is not None else None
        self.experiment.family.prepare()
        if not self.experiment.is_rl:  # a family's wrong output: one line now, not a worker's traceback
            check_sampled_tasks(self.experiment.family, config.seed,
                                tasks_per_call=-(-config.meta_batch_size // config.shard_count),
                                memory_bytes=None if address else machine_memory())

        self.meta = {k: v.requires_grad_() for k, v in self.experiment.initial_meta_params().items()}
        self.layout = FlatLayout(self.meta)
        algo = config.algorithm
        optimizer_cls = torch.optim.Adam if algo.outer_optimizer == "adam" else torch.optim.SGD
        # Fused: one kernel over all parameters; Adam's step at 20M parameters is 6x faster
        # on one core than the default loop (BENCHMARKS.md, the learner at scale).
        self.optimizer = optimizer_cls(list(self.meta.values()), lr=algo.outer_lr, fused=True)
        self.iteration = 0
        # ProMP's inner KL coefficients (meta-RL with the penalty): learner state, like the
        # optimiser's moments.
        self.kl_coeffs = (np.full(algo.inner_steps, config.rl.inner_kl_coeff)
                          if self.experiment.kl_penalty else None)
        if state is not None:
            self.load_state(state)
        self.executor = start_executor(self.experiment, address, on_event=self._on_worker_event)
        if self.run_dir is not None:  # only now that every check has passed
            try:
                self.run_dir.open(config, self.iteration)
            except BaseException:
                self.executor.close()
                raise

    @classmethod
    def load(cls, path: str | Path, **overrides) -> MetaLearner:
        """A learner at a checkpoint (`save`'s file, or a run directory's newest): its
        config, parameters, optimiser moments, iteration and RNG. `overrides` are passed to
        the constructor (`address=...`); no run directory is written unless `out_dir` is."""
        state = load_checkpoint(resolve_checkpoint(path))
        learner = cls(Config.from_dict(state["config"]), **overrides)
        learner.load_state(state)
        return learner

    def save(self, path: str | Path) -> Path:
        """Write `state()` to `path` atomically (what `MetaLearner.load` reads)."""
        path = Path(path)
        write_state(path, self.state())
        return path

    # -- the meta-iteration -----------------------------------------------------------

    def step(self) -> dict:
        """One meta-iteration; returns its metrics line. Meta-RL takes `rl.outer_steps`
        optimiser steps on the meta-batch its workers sampled once."""
        start = time.perf_counter()
        env_steps, reissued, sampled, sampling_meta = 0.0, 0, None, None
        for _ in range(self.experiment.outer_steps):
            meta = self.executor.share(self.layout.flatten(self.meta).cpu().numpy())
            n_tasks, sums, norm, lost = self._outer_step(meta, sampling_meta)
            env_steps += sums.pop("env_steps", 0.0)
            reissued += lost
            if sampled is None:  # the first step's: at the policy that sampled the meta-batch
                sampled, grad_norm, sampling_meta = sums, norm, meta
        promp = self._adapt_kl_coeffs(sampling_meta) if self.kl_coeffs is not None else {}
        self.iteration += 1
        sampled = cast(dict, sampled)  # set by the first outer step

        elapsed = time.perf_counter() - start
        line = {
            "iteration": self.iteration,
            "meta_loss": sampled["post_loss"] / n_tasks,
            "pre_adaptation": _scores(sampled, "pre", n_tasks),
            "post_adaptation": _scores(sampled, "post", n_tasks),
            "grad_norm": grad_norm,
            "tasks_per_s": n_tasks / elapsed,
            "time_s": elapsed,
            "workers": self.executor.alive,
            "shards_reissued": reissued,
        }
        if self.experiment.is_rl:
            line["env_steps_per_s"] = env_steps / elapsed
        line.update(promp)
        if self.run_dir is not None:
            self.run_dir.write_metrics(line)
        return line

    def _outer_step(self, meta, sampling_meta) -> tuple[int, dict, float, int]:
        """Gather the shards' meta-gradients, reduce, clip, step the outer optimiser; also
        how many shards were re-run. `sampling_meta` (meta-RL's further outer steps): the
        parameters that sampled the iteration's episodes, which a shard re-run on a fresh
        worker samples again."""
        config = self.config
        shards = split_shards(config.meta_batch_size, config.shard_count)
        extra: tuple = () if sampling_meta is None else (sampling_meta,)
        if self.kl_coeffs is not None:
            extra = (sampling_meta, self.kl_coeffs.tolist())
        calls = [(meta, self.iteration, s, *extra) for s in shards]
        # Meta-RL's later outer steps reuse the episodes the first sampled: far shorter calls.
        kind = "meta_grad" if sampling_meta is None else "meta_grad on kept episodes"
        (grad_sum, n_tasks, sums), reissued = self.executor.map_sum("meta_grad", calls,
                                                                    f"iteration {self.iteration + 1}", kind)
        grad = torch.from_numpy(grad_sum / n_tasks)
        grad_norm = float(torch.linalg.vector_norm(grad))
        if not math.isfinite(grad_norm):
            raise DivergedError(
                f"meta-gradient: not finite at iteration {self.iteration + 1} (norm {grad_norm}); "
                "lower algorithm.inner_lr or algorithm.outer_lr, or set algorithm.grad_clip"
            )
        clip = config.algorithm.grad_clip
        if clip is not None and grad_norm > clip:
            grad = grad * (clip / grad_norm)
        for k, g in self.layout.unflatten(grad).items():
            self.meta[k].grad = g.to(self.meta[k].dtype)
        for group in self.optimizer.param_groups:
            group["lr"] = config.algorithm.outer_lr_at(self.iteration)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return n_tasks, sums, grad_norm, reissued

    def train(self, on_iteration: Callable[[dict], None] | None = None,
              time_budget_s: float | None = None, stop: Callable[[], bool] | None = None) -> dict | None:
        """Iterate up to `config.iterations`, until `time_budget_s` seconds have passed, or
        until `stop()` (asked before each iteration) says so, checkpointing on schedule and
        where it stops (also where `stop` ends it before its first iteration, so that a run
        stopped early can be resumed)."""
        line, saved, stopped = None, None, False
        deadline = math.inf if time_budget_s is None else time.perf_counter() + time_budget_s
        every = self.config.checkpoint_every
        while self.iteration < self.config.iterations and time.perf_counter() < deadline:
            if stop is not None and stop():
                stopped = True
                break
            line = self.step()
            if on_iteration is not None:
                on_iteration(line)
            if self.iteration % every == 0:
                self.save_checkpoint()
                saved = self.iteration
        if (line is not None or stopped) and saved != self.iteration:
            self.save_checkpoint()
        return line

    def _adapt_kl_coeffs(self, sampling_meta) -> dict:
        """After the outer steps: the inner KLs at the new meta-parameters on the
        iteration's episodes (kept by the workers), and ProMP's coefficient update; the
        metrics line's `inner_kl` and the `inner_kl_coeff` this iteration used, each the mean
        over inner steps (as ProMP logs them)."""
        meta = self.executor.share(self.layout.flatten(self.meta).cpu().numpy())
        shards = split_shards(self.config.meta_batch_size, self.config.shard_count)
        results, _ = self.executor.map("inner_kl", [(meta, self.iteration, s, sampling_meta) for s in shards],
                                       f"iteration {self.iteration + 1}")
        kls = reduce.add_in_order([r[0] for r in results]) / sum(r[1] for r in results)
        used = cast(np.ndarray, self.kl_coeffs)
        self.kl_coeffs = adapt_kl_coeffs(used, kls, cast(float, self.config.rl.inner_kl_target))
        return {"inner_kl": float(kls.mean()), "inner_kl_coeff": float(used.mean())}

    # -- state ------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "version": 1,
            "iteration": self.iteration,
            "meta_params": {k: v.detach().clone() for k, v in self.meta.items()},
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "config": self.config.to_dict(),
            **({} if self.kl_coeffs is None else {"kl_coeffs": self.kl_coeffs.tolist()}),
        }

    def save_checkpoint(self) -> Path | None:
        """A checkpoint in the run directory (none without one); old ones are rotated out."""
        if self.run_dir is None:
            return None
        return self.run_dir.save_checkpoint(self.iteration, self.state(), self.config.runtime.keep_checkpoints)

    def load_state(self, state: dict) -> None:
        """Continue from another learner's `state()`: meta-parameters, optimiser moments,
        iteration and RNG. Its config may differ in anything that keeps the network's shape;
        the outer learning rate stays this learner's `algorithm.outer_lr` and decay (PBT restores one
        trial's state into another trial's hyperparameters)."""
        mismatch = shape_mismatch({k: tuple(v.shape) for k, v in self.meta.items()}, state["meta_params"])
        if mismatch is not None:
            key, found, expected = mismatch
            if found is None:
                detail = f"it lacks parameter {key} of this config's network"
            elif expected is None:
                detail = f"its parameter {key} is not in this config's network"
            else:
                detail = f"its parameter {key} has shape {found}; this config's network needs {expected}"
            raise UserError(f"checkpoint: {detail}; restore it into a config with the same model")
        with torch.no_grad():
            for k, v in self.meta.items():
                v.copy_(state["meta_params"][k])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.algorithm.outer_lr
        torch.set_rng_state(state["torch_rng"])
        self.iteration = int(state["iteration"])
        if self.kl_coeffs is not None and "kl_coeffs" in state:
            self.kl_coeffs = np.reshape(np.array(state["kl_coeffs"], dtype=np.float64), self.kl_coeffs.shape)

    def validate(self, tasks: int, split: str = "val", seed: int = 0) -> dict:
        """Mean pre- and post-adaptation scores of the current meta-parameters on `tasks`
        held-out tasks of `split`, adapted with `algorithm.eval_inner_steps` on the workers.
        The tasks come from `seed`, so every call (and every trial of a search) scores the
        same tasks."""
        self.experiment.family.check_split(split, "validation.split")
        self.experiment.family.check_eval_tasks(tasks, "validation tasks")
        per_task = evaluate_tasks(
            self.executor, self.layout.flatten(self.meta).cpu().numpy(), split, tasks,
            self.config.shard_size, self.config.algorithm.steps_for_eval, seed,
            f"validation at iteration {self.iteration}")
        means = {k: float(v.mean()) for k, v in per_task.items()}
        return {"pre_adaptation": _scores(means, "pre", 1), "post_adaptation": _scores(means, "post", 1)}

    def _on_worker_event(self, event: dict) -> None:
        """Every worker event goes to events.jsonl; a loss or a replacement also to the log."""
        event = {"iterations_done": self.iteration, **event}
        if event["worker"] is None:  # about a shard, not a worker
            logger.info("%s", event["detail"])
        elif event["event"] != "worker_started":
            where = f"node {event['node'][:8]}, pid {event['pid']}" if event["pid"] else "starting"
            logger.info("worker %s (%s): %s", event["worker"], where, event["detail"])
        if self.run_dir is not None:
            self.run_dir.write_event(event)

    def close(self) -> None:
        """Stop the workers (Ray itself stays up for whoever started it)."""
        if self.run_dir is not None:
            self.run_dir.close()
        self.executor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _scores(sums: dict, prefix: str, n: int) -> dict:
    return {k.removeprefix(prefix + "_"): v / n for k, v in sums.items() if k.startswith(prefix + "_")}
